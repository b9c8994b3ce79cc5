import { generateKeyPairSync, sign } from 'node:crypto';
import { bitString, ctx, int, oid, seq, set, toPem, utf8 } from '../../common/src/der';

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
}

const COMMON_NAME = '2.5.4.3';
const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/**
 * A fresh EC P-256 key and its PKCS#10 request (RFC 2986), the same structure the agent's
 * createCsr (common/src/csr.ts) sends, made synchronously so that tens of thousands can
 * be prepared before timing starts without the generator's setup dominating the run.
 */
export function keyAndCsr(commonName: string): KeyAndCsr {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const subject = seq(set(seq(oid(COMMON_NAME), utf8(commonName))));
  const info = seq(int(0), subject, spki, ctx(0, true));
  const der = seq(info, seq(oid(ECDSA_WITH_SHA256)), bitString(sign('sha256', info, privateKey)));
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    csrPem: toPem('CERTIFICATE REQUEST', der),
  };
}

/** `n` CSRs (and their keys when the caller needs them for mTLS later). */
export function csrPool(n: number, prefix: string): KeyAndCsr[] {
  const out: KeyAndCsr[] = [];
  for (let i = 0; i < n; i++) out.push(keyAndCsr(`${prefix}-${i}`));
  return out;
}
