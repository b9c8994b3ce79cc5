import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { BatonError } from '../domain/errors';
import { children, readWhole } from './der-reader';
import { OID } from './oids';

export type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa';

export interface PublicKeyInfo {
  kind: KeyKind;
  /** RSA modulus size or EC field size. */
  bits: number;
  /** SubjectPublicKeyInfo DER, exactly as it will appear in the certificate. */
  spki: Buffer;
  key: KeyObject;
}

/**
 * RFC 5480 §2: the whole SPKI of an EC key on a named curve, up to and including the 0x04 octet of
 * an uncompressed point (SEC 1 §2.3.3); only the coordinates follow.
 */
export const EC_SPKI_PREFIX = {
  'ec-p256': Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex'),
  'ec-p384': Buffer.from('3076301006072a8648ce3d020106052b8104002203620004', 'hex'),
} as const;
export const EC_COORDINATE_BYTES = { 'ec-p256': 32, 'ec-p384': 48 } as const;
const JWK_CURVE = { 'ec-p256': 'P-256', 'ec-p384': 'P-384' } as const;

/**
 * An uncompressed named-curve EC key in its one canonical SPKI encoding, imported from its
 * coordinates as a JWK (RFC 7518 §6.2.1). OpenSSL 3 checks the point is on the curve either way,
 * but its generic SPKI decoder costs about twice as much as the JWK path, and a CSR arrives with
 * every issuance. Anything else (RSA, other curves, compressed points, explicit parameters) returns
 * undefined and goes through the DER decoder, which also produces the precise refusal.
 */
function importCanonicalEcKey(spki: Buffer): { kind: 'ec-p256' | 'ec-p384'; key: KeyObject } | undefined {
  for (const kind of ['ec-p256', 'ec-p384'] as const) {
    const prefix = EC_SPKI_PREFIX[kind];
    const size = EC_COORDINATE_BYTES[kind];
    if (spki.length !== prefix.length + 2 * size || spki.compare(prefix, 0, prefix.length, 0, prefix.length))
      continue;
    const x = spki.toString('base64url', prefix.length, prefix.length + size);
    const y = spki.toString('base64url', prefix.length + size);
    try {
      return {
        kind,
        key: createPublicKey({ key: { kty: 'EC', crv: JWK_CURVE[kind], x, y }, format: 'jwk' }),
      };
    } catch {
      // Not a point on the curve.
      throw new BatonError('ERR_CSR_INVALID', 'the public key cannot be decoded');
    }
  }
  return undefined;
}

/** Keys accepted in CSRs (CONTRACT "Certificate profile"): EC P-256, EC P-384, RSA 2048–4096. */
export function describePublicKey(spki: Buffer): PublicKeyInfo {
  const ec = importCanonicalEcKey(spki);
  if (ec) return { kind: ec.kind, bits: ec.kind === 'ec-p256' ? 256 : 384, spki, key: ec.key };
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch {
    throw new BatonError('ERR_CSR_INVALID', 'the public key cannot be decoded');
  }
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1') return { kind: 'ec-p256', bits: 256, spki, key };
    if (details.namedCurve === 'secp384r1') return { kind: 'ec-p384', bits: 384, spki, key };
    throw new BatonError('ERR_CSR_KEY_UNSUPPORTED', 'unsupported EC curve: use P-256 or P-384');
  }
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength ?? 0;
    if (bits < 2048 || bits > 4096) {
      throw new BatonError(
        'ERR_CSR_KEY_UNSUPPORTED',
        `unsupported RSA key size ${bits}: use 2048 to 4096 bits`,
      );
    }
    return { kind: 'rsa', bits, spki, key };
  }
  throw new BatonError('ERR_CSR_KEY_UNSUPPORTED', 'unsupported key type: use EC P-256, EC P-384 or RSA');
}

export function generateP256(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

export function spkiOf(publicKey: KeyObject): Buffer {
  return publicKey.export({ type: 'spki', format: 'der' });
}

/** The subjectPublicKey BIT STRING contents (without the unused-bits octet). */
function subjectPublicKeyBits(spki: Buffer): Buffer {
  const [, bits] = children(readWhole(spki, 'public key'), 'public key');
  if (bits?.tag !== 0x03) throw new BatonError('ERR_CSR_INVALID', 'malformed public key');
  return bits.value.subarray(1);
}

/** RFC 7093 §2 method 1: the leftmost 160 bits of the SHA-256 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Buffer): Buffer {
  return createHash('sha256').update(subjectPublicKeyBits(spki)).digest().subarray(0, 20);
}

/** Identifies a key across identities: SHA-256 of the SubjectPublicKeyInfo, hex. */
export function keyFingerprint(spki: Buffer): string {
  return createHash('sha256').update(spki).digest('hex');
}

export function isEcKey(info: Pick<PublicKeyInfo, 'kind'>): boolean {
  return info.kind !== 'rsa';
}

export { OID };
