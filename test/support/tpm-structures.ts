import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  EK_AUTH_POLICY,
  EK_TEMPLATE_ATTRIBUTES,
  TPM_ALG,
  TPMA_OBJECT,
  tpm2b,
  u16,
  u32,
} from '../../services/ca/src/pki/tpm';

/**
 * Builders of TPM structures for tests (TPM 2.0 Library Part 2), written field by field from the
 * specification so that a test can change any one of them: a key's template, a quote, a signature.
 * The real thing comes from swtpm (test/support/tpm-node.ts); these make the variations.
 */

export interface PublicSpec {
  type: 'rsa' | 'ecc';
  nameAlg?: number;
  attributes: number;
  authPolicy?: Buffer;
  symmetric?: { alg: number; keyBits: number; mode: number } | null;
  /** `count` only for ECDAA. */
  scheme?: { alg: number; hashAlg?: number; count?: number } | null;
  keyBits?: number;
  exponent?: number;
  modulus?: Buffer;
  curve?: number;
  kdf?: { alg: number; hashAlg: number } | null;
  x?: Buffer;
  y?: Buffer;
}

const u8 = (n: number): Buffer => Buffer.from([n]);

/**
 * A fresh key pair, encoded by the generation itself and imported again: Node 20 can deadlock when
 * a KeyObject that generateKeyPairSync returned is exported while a garbage collection destroys
 * its generation job (services/ca/src/pki/tpm/make-credential.ts), and the tests export keys.
 */
export function freshKeyPair(type: 'rsa' | 'ecc'): { privateKey: KeyObject; publicKey: KeyObject } {
  const pair: { publicKey: Buffer; privateKey: Buffer } =
    type === 'rsa'
      ? generateKeyPairSync('rsa', {
          modulusLength: 2048,
          publicKeyEncoding: { type: 'spki', format: 'der' },
          privateKeyEncoding: { type: 'pkcs8', format: 'der' },
        })
      : generateKeyPairSync('ec', {
          namedCurve: 'prime256v1',
          publicKeyEncoding: { type: 'spki', format: 'der' },
          privateKeyEncoding: { type: 'pkcs8', format: 'der' },
        });
  return {
    privateKey: createPrivateKey({ key: pair.privateKey, format: 'der', type: 'pkcs8' }),
    publicKey: createPublicKey({ key: pair.publicKey, format: 'der', type: 'spki' }),
  };
}

/** TPMT_PUBLIC, the marshalled bytes (no size). */
export function tpmtPublic(s: PublicSpec): Buffer {
  const parts: Buffer[] = [
    u16(s.type === 'rsa' ? TPM_ALG.RSA : TPM_ALG.ECC),
    u16(s.nameAlg ?? TPM_ALG.SHA256),
    u32(s.attributes >>> 0),
    tpm2b(s.authPolicy ?? Buffer.alloc(0)),
  ];
  const sym = s.symmetric ?? null;
  parts.push(sym ? Buffer.concat([u16(sym.alg), u16(sym.keyBits), u16(sym.mode)]) : u16(TPM_ALG.NULL));
  const scheme = s.scheme ?? null;
  if (!scheme) parts.push(u16(TPM_ALG.NULL));
  else {
    parts.push(u16(scheme.alg));
    if (scheme.hashAlg !== undefined) parts.push(u16(scheme.hashAlg));
    if (scheme.count !== undefined) parts.push(u16(scheme.count));
  }
  if (s.type === 'rsa') {
    parts.push(u16(s.keyBits ?? 2048), u32(s.exponent ?? 0), tpm2b(s.modulus ?? Buffer.alloc(256)));
  } else {
    const kdf = s.kdf ?? null;
    parts.push(
      u16(s.curve ?? 0x0003),
      kdf ? Buffer.concat([u16(kdf.alg), u16(kdf.hashAlg)]) : u16(TPM_ALG.NULL),
      tpm2b(s.x ?? Buffer.alloc(32)),
      tpm2b(s.y ?? Buffer.alloc(32)),
    );
  }
  return Buffer.concat(parts);
}

/** TPM2B_PUBLIC: the size, then TPMT_PUBLIC. */
export const tpm2bPublic = (s: PublicSpec): Buffer => tpm2b(tpmtPublic(s));

/** The unique field of a key: RSA modulus, or the P-256 point. */
export function uniqueOf(publicKey: KeyObject): Pick<PublicSpec, 'modulus' | 'x' | 'y'> {
  const jwk = (publicKey.type === 'public' ? publicKey : createPublicKey(publicKey)).export({
    format: 'jwk',
  });
  if (jwk.kty === 'RSA') return { modulus: Buffer.from(jwk.n!, 'base64url') };
  return { x: Buffer.from(jwk.x!, 'base64url'), y: Buffer.from(jwk.y!, 'base64url') };
}

/** The TCG default EK template L-1 (RSA 2048) or L-2 (ECC P-256), for a given key. */
export function ekSpec(type: 'rsa' | 'ecc', publicKey?: KeyObject): PublicSpec {
  return {
    type,
    attributes: EK_TEMPLATE_ATTRIBUTES,
    authPolicy: EK_AUTH_POLICY,
    symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    scheme: null,
    ...(type === 'rsa' ? { keyBits: 2048, exponent: 0 } : { curve: 0x0003, kdf: null }),
    ...(publicKey ? uniqueOf(publicKey) : {}),
  };
}

/** What `tpm2_createak` makes: ECC P-256 ECDSA-SHA256, or RSA 2048 RSASSA-SHA256. */
export function akSpec(type: 'rsa' | 'ecc', publicKey?: KeyObject): PublicSpec {
  return {
    type,
    attributes:
      TPMA_OBJECT.fixedTPM |
      TPMA_OBJECT.fixedParent |
      TPMA_OBJECT.sensitiveDataOrigin |
      TPMA_OBJECT.userWithAuth |
      TPMA_OBJECT.restricted |
      TPMA_OBJECT.sign,
    symmetric: null,
    ...(type === 'rsa'
      ? { scheme: { alg: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 }, keyBits: 2048, exponent: 0 }
      : { scheme: { alg: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 }, curve: 0x0003, kdf: null }),
    ...(publicKey ? uniqueOf(publicKey) : {}),
  };
}

export interface QuoteSpec {
  magic?: number;
  type?: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  /** Banks of the PCR selection: hash and select bytes. */
  pcrs?: { hashAlg: number; select: Buffer }[];
  pcrDigest?: Buffer;
}

/** TPMS_ATTEST of a quote (Part 2 §10.12.12). */
export function tpmsAttest(q: QuoteSpec): Buffer {
  const pcrs = q.pcrs ?? [{ hashAlg: TPM_ALG.SHA256, select: Buffer.from([1, 0, 0]) }];
  return Buffer.concat([
    u32(q.magic ?? 0xff544347),
    u16(q.type ?? 0x8018),
    tpm2b(q.qualifiedSigner),
    tpm2b(q.extraData),
    Buffer.alloc(8, 1), // clock
    u32(2), // resetCount
    u32(0), // restartCount
    u8(1), // safe
    Buffer.alloc(8, 7), // firmwareVersion
    u32(pcrs.length),
    ...pcrs.map((p) => Buffer.concat([u16(p.hashAlg), u8(p.select.length), p.select])),
    tpm2b(q.pcrDigest ?? Buffer.alloc(32, 9)),
  ]);
}

/** TPMT_SIGNATURE, ECDSA (r, s) or RSASSA. */
export function tpmtSignature(
  s:
    | { sigAlg: 'ecdsa'; hashAlg?: number; r: Buffer; s: Buffer }
    | { sigAlg: 'rsassa'; hashAlg?: number; sig: Buffer },
): Buffer {
  if (s.sigAlg === 'ecdsa') {
    return Buffer.concat([u16(TPM_ALG.ECDSA), u16(s.hashAlg ?? TPM_ALG.SHA256), tpm2b(s.r), tpm2b(s.s)]);
  }
  return Buffer.concat([u16(TPM_ALG.RSASSA), u16(s.hashAlg ?? TPM_ALG.SHA256), tpm2b(s.sig)]);
}
