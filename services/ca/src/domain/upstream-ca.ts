import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import { toPem } from '../../../../common/src/der';
import { BatonError } from '../ground/errors';
import type { Signer } from '../ground/signer';
import { type Kek, unwrapKey, wrapKey } from '../pki/kek';
import { spkiOf } from '../pki/keys';
import { keyObjectSigner } from '../pki/signer';
import { buildCaCsr } from '../pki/upstream-csr';
import type { UpstreamPath } from '../pki/upstream-chain';
import { caIdFor } from './ca-hierarchy';
import type { SigningCa } from './signing-ca';
import { readCertificate } from '../pki/certificate-reader';
import { caKeyIdentifier } from '../pki/ca-constraints';
import type { CaRecord, Installation, PendingUpstream, Storage, WrappedKey } from './ports';

/**
 * Upstream CA (issue 18; CONTRACT "CA custody and rotation"): Baton's signing CA certified by an
 * outside root, e.g. a corporate PKI. `ca init --upstream-csr` makes the signing CA's key and CSR
 * (prepareUpstreamCa); `ca import` checks what the outside CA signed (pki/upstream-chain.ts) and
 * installs it (upstreamCaRecords): the signing CA with its key, and the outside intermediates and
 * root as CAs without a key (NO_KEY). The outside root is then the trust bundle and the join-token
 * pin; the outside intermediates follow Baton's signing CA in every chain Baton serves.
 */

/** The key of a CA Baton does not hold: an outside root or intermediate. pki/kek.ts never unwraps it. */
export const NO_KEY: WrappedKey = Object.freeze({ alg: 'none', kekId: '', blob: Buffer.alloc(0) });

export const isOutsideCa = (record: Pick<CaRecord, 'wrappedKey'>): boolean =>
  record.wrappedKey.alg === 'none';

/** A Signer for an outside CA: Baton never signs with it, and says so if anything tries. */
export function outsideSigner(caId: string): Signer {
  const refuse = (): never => {
    throw new BatonError('ERR_CA_UNAVAILABLE', `${caId} is an outside CA: Baton holds no key for it`);
  };
  return {
    get algorithmIdentifier(): Buffer {
      return refuse();
    },
    sign: refuse,
  };
}

/**
 * The keyring's entry of an outside CA: its certificate (a root is in the bundle), and a signer
 * that refuses; no issuer extensions, since it signs nothing for Baton.
 */
export function loadOutsideCa(record: CaRecord): SigningCa {
  const fields = readCertificate(record.certificateDer);
  const signer = outsideSigner(record.id);
  const certPem = toPem('CERTIFICATE', record.certificateDer);
  return {
    record,
    signer,
    certPem,
    chainPem: certPem,
    subjectName: fields.subjectRaw,
    keyId: caKeyIdentifier(fields),
    spki: fields.spkiRaw,
    template: { issuerName: fields.subjectRaw, signer, issuerExtensions: [] },
    outside: true,
  };
}

/** A new CA key: made here, and only here, for an upstream signing CA (KEK-wrapped, as every CA key). */
export function createCaKey(kek: Kek): { id: string; spki: Buffer; signer: Signer; wrappedKey: WrappedKey } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const id = caIdFor(publicKey);
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  return {
    id,
    spki: spkiOf(publicKey),
    signer: keyObjectSigner(privateKey),
    wrappedKey: wrapKey(kek, pkcs8, id),
  };
}

/** `ca init --upstream-csr`: the pending signing CA (key and CSR) for `installation`. */
export function prepareUpstreamCa(p: {
  installation: Omit<Installation, 'createdAt'>;
  kek: Kek;
  now: Date;
}): PendingUpstream {
  const key = createCaKey(p.kek);
  const td = p.installation.trustDomain;
  const csrDer = buildCaCsr({
    subject: { O: td, OU: 'baton', CN: `Baton Signing CA ${key.id.slice(3)}` },
    spki: key.spki,
    signer: key.signer,
    trustDomainId: `spiffe://${td}`,
  });
  return {
    installation: p.installation,
    caId: key.id,
    wrappedKey: key.wrappedKey,
    spki: key.spki,
    csrDer,
    createdAt: p.now,
  };
}

export const pendingCsrPem = (p: PendingUpstream): string => toPem('CERTIFICATE REQUEST', p.csrDer);

/**
 * The pending key unwrapped with `kek`, checked against the public key the CSR named: a wrong KEK
 * is ERR_KEK_INVALID here, before anything is installed.
 */
export function unwrapPendingKey(p: PendingUpstream, kek: Kek): KeyObject {
  const key = createPrivateKey({ key: unwrapKey(kek, p.wrappedKey, p.caId), format: 'der', type: 'pkcs8' });
  if (!spkiOf(createPublicKey(key)).equals(p.spki))
    throw new BatonError(
      'ERR_CA_UNAVAILABLE',
      `the pending signing CA key ${p.caId} does not match its public key`,
    );
  return key;
}

/** An outside CA's id: from its certificate, which is all Baton has of it. */
const outsideCaId = (der: Buffer): string =>
  `ext-${createHash('sha256').update(der).digest('hex').slice(0, 16)}`;

/**
 * The CA rows of a checked upstream path, parents first (the foreign key): the outside root, the
 * outside intermediates (the root in the bundle, none with a key) and Baton's signing CA (active, its pending key).
 */
export function upstreamCaRecords(pending: PendingUpstream, path: UpstreamPath, now: Date): CaRecord[] {
  const top = [...path.outside].reverse();
  const records: CaRecord[] = [];
  let parentId: string | null = null;
  top.forEach((c, i) => {
    const id = outsideCaId(c.der);
    records.push({
      id,
      kind: i === 0 ? 'root' : 'intermediate',
      parentId,
      certificateDer: c.der,
      notBefore: c.fields.notBefore,
      notAfter: c.fields.notAfter,
      // The outside root is the bundle (a root's `active`); outside intermediates sign nothing here.
      active: i === 0,
      wrappedKey: NO_KEY,
      createdAt: now,
    });
    parentId = id;
  });
  records.push({
    id: pending.caId,
    kind: 'intermediate',
    parentId,
    certificateDer: path.signing.der,
    notBefore: path.signing.fields.notBefore,
    notAfter: path.signing.fields.notAfter,
    active: true,
    wrappedKey: pending.wrappedKey,
    createdAt: now,
  });
  return records;
}

/**
 * The outside intermediates above `record`, nearest first, as PEM: what follows Baton's signing CA
 * in a chain it serves (RFC 5246 §7.4.2 / RFC 8446 §4.4.2: the sender's certificate first, each
 * following one certifying the one before; the root may be left out, and is).
 */
export function outsideIntermediatesPem(record: CaRecord, cas: readonly CaRecord[]): string {
  let pem = '';
  let parent = cas.find((c) => c.id === record.parentId);
  for (
    let depth = 0;
    parent && isOutsideCa(parent) && parent.kind === 'intermediate' && depth < 16;
    depth++
  ) {
    pem += toPem('CERTIFICATE', parent.certificateDer);
    const up: string | null = parent.parentId;
    parent = cas.find((c) => c.id === up);
  }
  return pem;
}

/**
 * `ca rotate` and `ca rotate --root` make CAs under Baton's own root: with an upstream CA there is
 * none Baton holds, so a new signing CA must come from the outside CA (a new `ca init
 * --upstream-csr` on a fresh installation, docs/operations.md "Upstream CA").
 */
export function assertRotatable(keyring: { roots: readonly Pick<SigningCa, 'outside'>[] }): void {
  if (keyring.roots.some((r) => r.outside))
    throw new BatonError(
      'ERR_UPSTREAM_ROTATION',
      'an outside CA certified this installation: Baton cannot rotate it, the outside CA must sign a new signing CA (see docs/operations.md "Upstream CA")',
    );
}

/** The refusal of anything but `ca import` while an upstream CA is pending (null: none is). */
export async function pendingUpstreamRefusal(storage: Pick<Storage, 'upstream'>): Promise<BatonError | null> {
  const pending = await storage.upstream.getPending();
  return pending
    ? new BatonError(
        'ERR_UPSTREAM_PENDING',
        `the CA of ${pending.installation.trustDomain} awaits its upstream certificate: run \`baton ca import --cert FILE --chain FILE\``,
      )
    : null;
}
