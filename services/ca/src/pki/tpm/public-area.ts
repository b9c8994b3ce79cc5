import { TPM_ALG } from './constants';
import { TpmReader } from './marshal';

/**
 * TPM2B_PUBLIC (Part 2 §12.2.5): the public area of a TPM object, as `tpm2_createek -u FILE -f tss`
 * and `tpm2_createak -u FILE -f tss` write it. Read strictly: the outer size must be the rest of the
 * buffer, every union member is read by its selector, and an algorithm this reader does not know is
 * refused rather than skipped (its parameters' size would be a guess).
 */

/** TPMT_SYM_DEF_OBJECT (Part 2 §11.1.7); null for TPM_ALG_NULL. */
export interface SymDef {
  alg: number;
  keyBits: number;
  mode: number;
}

/** TPMT_RSA_SCHEME / TPMT_ECC_SCHEME / TPMT_KDF_SCHEME (Part 2 §11.2): null for TPM_ALG_NULL. */
export interface Scheme {
  alg: number;
  /** TPM_ALG_NULL for RSAES, which has no hash. */
  hashAlg: number;
}

interface PublicAreaCommon {
  /**
   * The marshalled TPMT_PUBLIC: the TPM2B_PUBLIC without its size. The object's Name hashes exactly
   * these bytes (Part 1 §16), so they are kept as received.
   */
  readonly area: Buffer;
  readonly nameAlg: number;
  /** TPMA_OBJECT (constants.ts TPMA_OBJECT). */
  readonly attributes: number;
  readonly authPolicy: Buffer;
  readonly symmetric: SymDef | null;
  readonly scheme: Scheme | null;
}

export interface RsaPublicArea extends PublicAreaCommon {
  readonly type: 'rsa';
  readonly keyBits: number;
  /** 0 means 2^16 + 1 (Part 2 §12.2.3.5). */
  readonly exponent: number;
  readonly modulus: Buffer;
}

export interface EccPublicArea extends PublicAreaCommon {
  readonly type: 'ecc';
  readonly curve: number;
  readonly kdf: Scheme | null;
  readonly x: Buffer;
  readonly y: Buffer;
}

export type PublicArea = RsaPublicArea | EccPublicArea;

/** TPM2B_DIGEST: at most the largest digest (SHA-512). */
const MAX_DIGEST = 64;
/** TPM2B_PUBLIC_KEY_RSA: MAX_RSA_KEY_BYTES of a TPM that supports RSA 4096. */
const MAX_RSA_KEY_BYTES = 512;
/** TPM2B_ECC_PARAMETER: MAX_ECC_KEY_BYTES (P-521 is 66 bytes). */
const MAX_ECC_KEY_BYTES = 66;

/** Reads a TPM2B_PUBLIC: the whole buffer, nothing after it. Throws ERR_BAD_REQUEST. */
export function readPublicArea(buf: Buffer): PublicArea {
  const outer = new TpmReader(buf, 'TPM2B_PUBLIC');
  const size = outer.u16();
  if (size !== buf.length - 2) {
    throw outer.malformed(`its size field says ${size} bytes, ${buf.length - 2} follow`);
  }
  const area = buf.subarray(2);
  const r = new TpmReader(area, 'TPM2B_PUBLIC');
  const type = r.u16();
  if (type !== TPM_ALG.RSA && type !== TPM_ALG.ECC) {
    throw r.malformed('the object is not an RSA or ECC key (type must be TPM_ALG_RSA or TPM_ALG_ECC)');
  }
  const nameAlg = r.u16();
  const attributes = r.u32();
  const authPolicy = r.tpm2b(MAX_DIGEST, 'authPolicy');
  const symmetric = readSymDefObject(r);
  if (type === TPM_ALG.RSA) {
    const scheme = readRsaScheme(r);
    const keyBits = r.u16();
    const exponent = r.u32();
    const modulus = r.tpm2b(MAX_RSA_KEY_BYTES, 'the RSA modulus');
    r.end();
    return {
      type: 'rsa',
      area,
      nameAlg,
      attributes,
      authPolicy,
      symmetric,
      scheme,
      keyBits,
      exponent,
      modulus,
    };
  }
  const scheme = readEccScheme(r);
  const curve = r.u16();
  const kdf = readKdfScheme(r);
  const x = r.tpm2b(MAX_ECC_KEY_BYTES, 'the ECC point x');
  const y = r.tpm2b(MAX_ECC_KEY_BYTES, 'the ECC point y');
  r.end();
  return { type: 'ecc', area, nameAlg, attributes, authPolicy, symmetric, scheme, curve, kdf, x, y };
}

/** TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless it is TPM_ALG_NULL. */
function readSymDefObject(r: TpmReader): SymDef | null {
  const alg = r.u16();
  if (alg === TPM_ALG.NULL) return null;
  if (alg !== TPM_ALG.AES) throw r.malformed('unsupported symmetric algorithm');
  return { alg, keyBits: r.u16(), mode: r.u16() };
}

/** TPMT_RSA_SCHEME: RSAES has no details; the signing schemes and OAEP a hash. */
function readRsaScheme(r: TpmReader): Scheme | null {
  const alg = r.u16();
  if (alg === TPM_ALG.NULL) return null;
  if (alg === TPM_ALG.RSAES) return { alg, hashAlg: TPM_ALG.NULL };
  if (alg === TPM_ALG.RSASSA || alg === TPM_ALG.RSAPSS || alg === TPM_ALG.OAEP)
    return { alg, hashAlg: r.u16() };
  throw r.malformed('unsupported RSA scheme');
}

/** TPMT_ECC_SCHEME: a hash, and ECDAA a commit count after it (TPMS_SCHEME_ECDAA). */
function readEccScheme(r: TpmReader): Scheme | null {
  const alg = r.u16();
  if (alg === TPM_ALG.NULL) return null;
  if (alg === TPM_ALG.ECDAA) {
    const hashAlg = r.u16();
    r.u16();
    return { alg, hashAlg };
  }
  if (
    alg === TPM_ALG.ECDSA ||
    alg === TPM_ALG.ECDH ||
    alg === TPM_ALG.ECMQV ||
    alg === TPM_ALG.SM2 ||
    alg === TPM_ALG.ECSCHNORR
  ) {
    return { alg, hashAlg: r.u16() };
  }
  throw r.malformed('unsupported ECC scheme');
}

/** TPMT_KDF_SCHEME: a hash unless TPM_ALG_NULL. */
function readKdfScheme(r: TpmReader): Scheme | null {
  const alg = r.u16();
  if (alg === TPM_ALG.NULL) return null;
  if (
    alg === TPM_ALG.MGF1 ||
    alg === TPM_ALG.KDF1_SP800_56A ||
    alg === TPM_ALG.KDF2 ||
    alg === TPM_ALG.KDF1_SP800_108
  ) {
    return { alg, hashAlg: r.u16() };
  }
  throw r.malformed('unsupported KDF scheme');
}
