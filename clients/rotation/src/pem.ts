import { pathToRoot } from '../../../common/src/trust-store';
import { createHash, createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from 'node:crypto';

/**
 * The certificate helpers the node needs: splitting PEM bundles, the root pin of a join token, key
 * and certificate matching, and the chain check done before a new certificate replaces the old
 * one. The node keeps its own copy rather than importing the CA's code: clients/ ship on their own.
 */

const CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every CERTIFICATE block of a PEM text, parsed; anything between blocks is ignored. */
export function parseCertificates(pem: string): X509Certificate[] {
  return (pem.match(CERT_RE) ?? []).map((block) => new X509Certificate(block));
}

const BASE32_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

/** RFC 4648 §6 base32, lowercase, without padding: the alphabet of join-token pins. */
export function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32_ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32_ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

const spkiDer = (key: KeyObject): Buffer => key.export({ type: 'spki', format: 'der' });

/** CONTRACT "Join tokens": base32(SHA-256(SubjectPublicKeyInfo DER)) of a root certificate. */
export function certificatePin(cert: X509Certificate): string {
  return base32(createHash('sha256').update(spkiDer(cert.publicKey)).digest());
}

/** True when the first certificate of `chainPem` certifies the public half of `keyPem`. */
export function isKeyForCertificate(chainPem: string, keyPem: string): boolean {
  try {
    const leaf = parseCertificates(chainPem)[0];
    if (!leaf) return false;
    return spkiDer(leaf.publicKey).equals(spkiDer(createPublicKey(createPrivateKey(keyPem))));
  } catch {
    return false;
  }
}

/**
 * Why `chainPem` (leaf first, then intermediates) does not lead to a root of `bundlePem`, or
 * undefined when it does. Checks names and signatures only (RFC 5280 §6.1.3 (a)(1) and (a)(4)),
 * not validity periods: the rotator judges time with its own clock.
 */
export function chainProblem(chainPem: string, bundlePem: string): string | undefined {
  let chain: X509Certificate[];
  let roots: X509Certificate[];
  try {
    chain = parseCertificates(chainPem);
    roots = parseCertificates(bundlePem);
  } catch {
    return 'a certificate does not parse';
  }
  if (chain.length === 0) return 'the chain holds no certificate';
  if (roots.length === 0) return 'the bundle holds no certificate';
  // Any path will do: during a root rotation the chain holds two certificates of the signing CA.
  if (pathToRoot(chain, roots)) return undefined;
  // None: say where the chain breaks, read in order.
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!signs(chain[i + 1]!, chain[i]!)) return `certificate ${i} is not signed by certificate ${i + 1}`;
  }
  const top = chain[chain.length - 1]!;
  const anchored = roots.some((root) => root.fingerprint256 === top.fingerprint256 || signs(root, top));
  return anchored ? undefined : 'the chain does not lead to a root of the bundle';
}

function signs(issuer: X509Certificate, subject: X509Certificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}
