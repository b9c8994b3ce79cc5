import { createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { createIntermediateCa, createRootCa } from '../../services/ca/src/domain/ca-hierarchy';
import { issueLeaf } from '../../services/ca/src/domain/issue';
import { loadKeyring } from '../../services/ca/src/domain/keyring';
import type { CertificateRepository } from '../../services/ca/src/domain/ports';
import { parseCsr } from '../../services/ca/src/pki/csr';
import { kekFromBase64 } from '../../services/ca/src/pki/kek';
import { describePublicKey, verifySignature } from '../../services/ca/src/pki/keys';
import { csrPool } from './csr';
import { monoMs } from './proc';

/**
 * The crypto ceiling: one issuance needs one ECDSA P-256 verify (the CSR's signature) and one sign
 * (the certificate), with keys already held as KeyObjects: the rate of that pair on one core is
 * what no CA written on node:crypto can beat on one core.
 */
export function cryptoCeilingPerSecond(durationMs: number): number {
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const requester = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const info = randomBytes(180);
  const csrSignature = sign('sha256', info, requester.privateKey);
  const requesterKey = createPublicKey(requester.privateKey);
  const tbs = randomBytes(520);
  let n = 0;
  const started = monoMs();
  const deadline = started + durationMs;
  while (monoMs() < deadline) {
    for (let i = 0; i < 50; i++) {
      if (!verify('sha256', info, requesterKey, csrSignature)) throw new Error('verify failed');
      sign('sha256', tbs, ca.privateKey);
    }
    n += 50;
  }
  return (n * 1000) / (monoMs() - started);
}

/**
 * The same pair with the requester's key as a CSR brings it: a new public key every time, checked
 * and used once the way the server does it (pki/keys.ts): through the native verifier when it is
 * built (services/ca/native: the point is decoded and checked, then verified, by OpenSSL's EC_KEY
 * API), else imported from its coordinates as a JWK, where OpenSSL 3's full public-key check costs
 * more than the verification itself. This, not `cryptoCeilingPerSecond`, bounds a CA that sees each
 * key once.
 */
export function freshKeyCeilingPerSecond(durationMs: number): number {
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const requesters = Array.from({ length: 500 }, () => {
    const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const info = randomBytes(180);
    const spki = kp.publicKey.export({ type: 'spki', format: 'der' });
    return { info, signature: sign('sha256', info, kp.privateKey), spki };
  });
  const tbs = randomBytes(520);
  let n = 0;
  const started = monoMs();
  const deadline = started + durationMs;
  while (monoMs() < deadline) {
    for (const r of requesters) {
      if (!verifySignature(describePublicKey(r.spki), 'sha256', r.info, r.signature)) {
        throw new Error('verify failed');
      }
      sign('sha256', tbs, ca.privateKey);
    }
    n += requesters.length;
  }
  return (n * 1000) / (monoMs() - started);
}

/** A signing CA as `baton ca init` makes it, loaded the way the server loads it. */
export function benchKeyring() {
  const kek = kekFromBase64(randomBytes(32).toString('base64'), 'bench');
  const now = new Date();
  const root = createRootCa({ trustDomain: 'bench.test', now, kek });
  const inter = createIntermediateCa({
    trustDomain: 'bench.test',
    now,
    kek,
    root,
    publicUrl: 'https://127.0.0.1:8443',
  });
  return loadKeyring([root.record, inter.record], kek, 'https://127.0.0.1:8443', []);
}

/** CSRs for `pipelinePerSecond`, made before timing. */
export const pipelineCsrs = (n: number): string[] => csrPool(n, 'pipeline').map((c) => c.csrPem);

/**
 * The in-process issuance pipeline the server runs per workload SVID: parse the PEM CSR and verify
 * its signature, check the key policy, build the certificate from the CA template, sign it, and
 * produce the PEM chain; only the database write is replaced by an in-memory one.
 */
export async function pipelinePerSecond(csrs: readonly string[]): Promise<number> {
  const keyring = benchKeyring();
  const stored: unknown[] = [];
  const certificates = {
    insert: async (r: unknown) => void stored.push(r),
  } as unknown as CertificateRepository;
  const clock = { now: () => new Date() };
  const started = monoMs();
  for (const pem of csrs) {
    const csr = parseCsr(pem);
    await issueLeaf(
      { clock, issuer: keyring.signing, certificates },
      {
        kind: 'workload',
        spiffeId: 'spiffe://bench.test/bench/web',
        subject: { O: 'bench.test', OU: 'workload', CN: 'web' },
        key: csr.key,
        ttlMs: 3_600_000,
        dnsNames: ['web.bench.test'],
      },
    );
  }
  return (csrs.length * 1000) / (monoMs() - started);
}
