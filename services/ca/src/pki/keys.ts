import { createHash, createPublicKey, generateKeyPairSync, type KeyObject, verify } from 'node:crypto';
import { BatonError } from '../ground/errors';
import { children, readWhole, type Tlv } from './der-reader';
import { checkKeyPolicy, type KeyKind } from './key-policy';
import { NATIVE_CURVE, NATIVE_HASH, type NativeEc, nativeEc } from './native-ec';
import { OID } from './oids';

export type { KeyKind } from './key-policy';

export interface PublicKeyInfo {
  kind: KeyKind;
  /** RSA modulus size or EC field size. */
  bits: number;
  /** SubjectPublicKeyInfo DER, exactly as it will appear in the certificate. */
  spki: Buffer;
  /**
   * The key for node:crypto. Absent for a canonical EC key whose point the native verifier checked
   * (native-ec.ts): `verifySignature` then verifies natively and no KeyObject is ever made.
   */
  key?: KeyObject;
}

type CanonicalEcKind = keyof typeof EC_SPKI_PREFIX;

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
const OPENSSL_CURVE = { 'ec-p256': 'prime256v1', 'ec-p384': 'secp384r1' } as const;

/** The kind of an uncompressed named-curve EC key in its one canonical SPKI encoding, if it is one. */
function canonicalEcKind(spki: Buffer): CanonicalEcKind | undefined {
  for (const kind of ['ec-p256', 'ec-p384'] as const) {
    const prefix = EC_SPKI_PREFIX[kind];
    if (
      spki.length === prefix.length + 2 * EC_COORDINATE_BYTES[kind] &&
      spki.compare(prefix, 0, prefix.length, 0, prefix.length) === 0
    ) {
      return kind;
    }
  }
  return undefined;
}

/** SEC 1 §2.3.3: the encoded point, 0x04 || X || Y, is the last octets of the canonical SPKI. */
function ecPoint(kind: CanonicalEcKind, spki: Buffer): Buffer {
  return spki.subarray(EC_SPKI_PREFIX[kind].length - 1);
}

const undecodable = (): BatonError => new BatonError('ERR_CSR_INVALID', 'the public key cannot be decoded');

/**
 * A canonical EC key, checked to be a point on its curve. With the native verifier that check is all
 * it costs (a few µs); without it, the key is imported from its coordinates as a JWK (RFC 7518
 * §6.2.1), which OpenSSL 3 does about twice as fast as its generic SPKI decoder, and which refuses a
 * point off the curve.
 */
function canonicalEcKey(kind: CanonicalEcKind, spki: Buffer, native: NativeEc | null): PublicKeyInfo {
  let key: KeyObject | undefined;
  let onCurve: boolean;
  if (native) {
    onCurve = native.checkPoint(NATIVE_CURVE[kind], ecPoint(kind, spki)) === 1;
  } else {
    try {
      key = importEcJwk(kind, spki);
      onCurve = true;
    } catch {
      onCurve = false;
    }
  }
  const { bits } = checkKeyPolicy({ type: 'ec', curve: OPENSSL_CURVE[kind], onCurve });
  return key ? { kind, bits, spki, key } : { kind, bits, spki };
}

function importEcJwk(kind: CanonicalEcKind, spki: Buffer): KeyObject {
  const at = EC_SPKI_PREFIX[kind].length;
  const size = EC_COORDINATE_BYTES[kind];
  const x = spki.toString('base64url', at, at + size);
  const y = spki.toString('base64url', at + size);
  try {
    return createPublicKey({ key: { kty: 'EC', crv: JWK_CURVE[kind], x, y }, format: 'jwk' });
  } catch {
    // Not a point on the curve.
    throw undecodable();
  }
}

/**
 * Decodes a SubjectPublicKeyInfo and applies the key policy (key-policy.ts) to it. Anything but a
 * canonical EC key (RSA, other curves, compressed points, explicit parameters) goes through
 * OpenSSL's DER decoder, which also gives the precise refusal. `native` is for tests.
 */
export function describePublicKey(spki: Buffer, native: NativeEc | null = nativeEc): PublicKeyInfo {
  const ecKind = canonicalEcKind(spki);
  if (ecKind) return canonicalEcKey(ecKind, spki, native);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch {
    throw undecodable();
  }
  const type = key.asymmetricKeyType;
  const { kind, bits } = checkKeyPolicy(
    type === 'rsa'
      ? { type, ...rsaPublicKey(spki) }
      : type === 'ec'
        ? // OpenSSL's decoder refuses a point that is not on the curve.
          { type, curve: key.asymmetricKeyDetails?.namedCurve, onCurve: true }
        : { type: 'other' },
  );
  return { kind, bits, spki, key };
}

/**
 * RFC 8017 §A.1.1: RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }, read
 * from the bytes that will be certified (a form only OpenSSL's lenient decoder takes is no key here).
 */
function rsaPublicKey(spki: Buffer): { modulus: bigint; exponent: bigint } {
  let ints: Tlv[];
  try {
    const sequence = readWhole(subjectPublicKeyBits(spki), 'public key');
    ints = sequence.tag === 0x30 ? children(sequence, 'public key') : [];
  } catch {
    throw undecodable();
  }
  const [modulus, exponent, ...rest] = ints;
  if (!modulus || !exponent || rest.length > 0) throw undecodable();
  return { modulus: positiveInteger(modulus), exponent: positiveInteger(exponent) };
}

/** X.690 §8.3: a two's-complement INTEGER; zero or negative is no RSA number (and no key). */
function positiveInteger(el: Tlv): bigint {
  if (el.tag !== 0x02 || el.value.length === 0 || el.value[0]! & 0x80) throw undecodable();
  return BigInt(`0x${el.value.toString('hex')}`);
}

/**
 * Verifies `signature` over `data` with the key: DER Ecdsa-Sig-Value (RFC 5480 §2.2) for EC,
 * PKCS#1 v1.5 (RFC 8017 §8.2) for RSA. False for anything that does not verify, never a throw.
 */
export function verifySignature(
  info: PublicKeyInfo,
  hash: keyof typeof NATIVE_HASH,
  data: Buffer,
  signature: Buffer,
  native: NativeEc | null = nativeEc,
): boolean {
  if (!info.key && info.kind !== 'rsa' && native) {
    return (
      native.verify(
        NATIVE_CURVE[info.kind],
        NATIVE_HASH[hash],
        ecPoint(info.kind, info.spki),
        data,
        signature,
      ) === 1
    );
  }
  try {
    const key = info.key ?? importEcJwk(info.kind as CanonicalEcKind, info.spki);
    return verify(hash, data, key, signature);
  } catch {
    return false;
  }
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
