import { createPrivateKey } from 'node:crypto';
import type { WorkloadEntry } from '../agent-api';
import { parseCertificates } from '../pem';
import type { HeldMaterial } from '../workload-rotator';
import type { HeldSvid, ServedEntry } from './workload-api-state';

/**
 * The agent's PEM files and records in the Workload API's encodings (SPIFFE Workload API
 * "X509SVID": DER certificates concatenated leaf first, the key as unencrypted PKCS#8 DER, the
 * bundle as DER certificates concatenated). Conversions are kept per serial, so a pass that
 * changes nothing converts nothing.
 */

/** DER certificates of a PEM bundle or chain, concatenated in order. */
export function certificatesDer(pem: string): Buffer {
  return Buffer.concat(parseCertificates(pem).map((c) => c.raw));
}

const CRL_RE = /-----BEGIN X509 CRL-----([A-Za-z0-9+/=\r\n]+)-----END X509 CRL-----/g;

/** The DER CRLs of a crl.pem (RFC 7468 §6 blocks). */
export function crlsDer(pem: string): Buffer[] {
  return [...pem.matchAll(CRL_RE)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}

/** `spiffe://<td>` of a SPIFFE ID. */
export function trustDomainIdOf(spiffeId: string): string {
  const m = /^spiffe:\/\/([^/]+)/.exec(spiffeId);
  return m ? `spiffe://${m[1]}` : '';
}

export function servedEntries(entries: readonly WorkloadEntry[]): ServedEntry[] {
  return entries.map((e) => ({
    name: e.name,
    spiffeId: e.spiffeId,
    selectors: [...e.selectors],
    hint: e.hint ?? '',
  }));
}

export class HeldSvidCache {
  readonly #bySerial = new Map<string, HeldSvid>();

  /**
   * The held SVIDs of `material` as the Workload API sends them, without those in `revoked` (the
   * feed named them: they are gone from the next message, before the agent has a new one).
   */
  svids(material: ReadonlyMap<string, HeldMaterial>, revoked: ReadonlySet<string>): Map<string, HeldSvid> {
    const out = new Map<string, HeldSvid>();
    const live = new Set<string>();
    for (const [name, m] of material) {
      live.add(m.serial);
      if (revoked.has(m.serial)) continue;
      let held = this.#bySerial.get(m.serial);
      if (!held) {
        held = {
          entryName: name,
          spiffeId: m.spiffeId,
          serial: m.serial,
          chainDer: certificatesDer(m.certificateChainPem),
          keyDer: createPrivateKey(m.keyPem).export({ type: 'pkcs8', format: 'der' }),
          notAfter: m.notAfter,
        };
        this.#bySerial.set(m.serial, held);
      }
      out.set(name, held);
    }
    for (const serial of this.#bySerial.keys()) if (!live.has(serial)) this.#bySerial.delete(serial);
    return out;
  }
}
