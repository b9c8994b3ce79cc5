import { constants, createHash, type KeyObject, verify } from 'node:crypto';
import { SHA256_SIZE, TPM_ALG, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE } from './constants';
import { TpmReader } from './marshal';

/**
 * TPM2_Quote's output (TPM 2.0 Library Part 3 §18.4): a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE and
 * the AK's TPMT_SIGNATURE over its bytes, as `tpm2_quote -m quote.msg -s quote.sig` (`-f tss`, the
 * default) writes them.
 */

/** TPMS_ATTEST (Part 2 §10.12.12) with TPMS_QUOTE_INFO (§10.12.4) as its attested member. */
export interface Quote {
  /** The whole TPMS_ATTEST as received: what the signature covers. */
  readonly raw: Buffer;
  /** TPM2B_NAME: the qualified name of the key that signed. */
  readonly qualifiedSigner: Buffer;
  /** TPM2B_DATA: the caller's qualifying data. */
  readonly extraData: Buffer;
  /** TPML_PCR_SELECTION: the banks and PCRs quoted (recorded, not judged). */
  readonly pcrSelection: { hashAlg: number; select: Buffer }[];
  readonly pcrDigest: Buffer;
}

/** TPMT_SIGNATURE (Part 2 §11.3.4), of the schemes an AK may have (profiles.ts). */
export type QuoteSignature =
  | { readonly sigAlg: 'ecdsa'; readonly hashAlg: number; readonly r: Buffer; readonly s: Buffer }
  | { readonly sigAlg: 'rsassa'; readonly hashAlg: number; readonly sig: Buffer };

/** TPM2B_NAME: a 2-byte algorithm and a digest, at most SHA-512 (or a 4-byte handle). */
const MAX_NAME = 2 + 64;
/** TPM2B_DATA: at most the size of the largest digest (Part 2 §10.4.3). */
const MAX_DATA = 64;
/** HASH_COUNT: a TPM has at most a handful of PCR banks; 16 is generous. */
const MAX_BANKS = 16;
/** PCR_SELECT_MAX: 24 PCRs are 3 bytes; 8 bytes (64 PCRs) is generous. */
const MAX_SELECT = 8;

export function readQuote(raw: Buffer): Quote {
  const r = new TpmReader(raw, 'TPMS_ATTEST');
  // Part 2 §10.12.12: magic is TPM_GENERATED_VALUE in every structure the TPM made itself.
  if (r.u32() !== TPM_GENERATED_VALUE) throw r.malformed('its magic is not TPM_GENERATED_VALUE');
  if (r.u16() !== TPM_ST_ATTEST_QUOTE) throw r.malformed('it is not a quote (TPM_ST_ATTEST_QUOTE)');
  const qualifiedSigner = r.tpm2b(MAX_NAME, 'qualifiedSigner');
  const extraData = r.tpm2b(MAX_DATA, 'extraData');
  // TPMS_CLOCK_INFO (clock, resetCount, restartCount, safe) and firmwareVersion: not judged.
  r.u64();
  r.u32();
  r.u32();
  r.u8();
  r.u64();
  const banks = r.u32();
  if (banks > MAX_BANKS) throw r.malformed(`${banks} PCR banks, more than ${MAX_BANKS}`);
  const pcrSelection: Quote['pcrSelection'] = [];
  for (let i = 0; i < banks; i++) {
    const hashAlg = r.u16();
    const size = r.u8();
    if (size > MAX_SELECT) throw r.malformed(`a PCR selection of ${size} bytes, more than ${MAX_SELECT}`);
    pcrSelection.push({ hashAlg, select: r.bytes(size) });
  }
  const pcrDigest = r.tpm2b(MAX_DATA, 'pcrDigest');
  r.end();
  return { raw, qualifiedSigner, extraData, pcrSelection, pcrDigest };
}

/** TPM2B_ECC_PARAMETER: P-521 at most. TPM2B_PUBLIC_KEY_RSA: RSA 4096 at most. */
const MAX_ECC_PARAMETER = 66;
const MAX_RSA_SIGNATURE = 512;

export function readQuoteSignature(raw: Buffer): QuoteSignature {
  const r = new TpmReader(raw, 'TPMT_SIGNATURE');
  const sigAlg = r.u16();
  if (sigAlg === TPM_ALG.ECDSA) {
    const hashAlg = r.u16();
    const sr = r.tpm2b(MAX_ECC_PARAMETER, 'signatureR');
    const ss = r.tpm2b(MAX_ECC_PARAMETER, 'signatureS');
    r.end();
    return { sigAlg: 'ecdsa', hashAlg, r: sr, s: ss };
  }
  if (sigAlg === TPM_ALG.RSASSA) {
    const hashAlg = r.u16();
    const sig = r.tpm2b(MAX_RSA_SIGNATURE, 'the RSA signature');
    r.end();
    return { sigAlg: 'rsassa', hashAlg, sig };
  }
  throw r.malformed('unsupported signature algorithm (ECDSA or RSASSA)');
}

/** A P-256 scalar, left-padded to 32 bytes; null when it does not fit (then it cannot verify). */
function scalar32(v: Buffer): Buffer | null {
  let i = 0;
  while (i < v.length - SHA256_SIZE && v[i] === 0) i++;
  const t = v.subarray(i);
  if (t.length > SHA256_SIZE) return null;
  return Buffer.concat([Buffer.alloc(SHA256_SIZE - t.length), t]);
}

/**
 * Whether `sig` is the AK's signature over the TPMS_ATTEST bytes: ECDSA P-256 with SHA-256 for an
 * ECC AK, RSASSA-PKCS1-v1_5 with SHA-256 for an RSA one (the AK's own scheme, profiles.ts). A
 * signature of another scheme or hash than the key's is false, not an error.
 */
export function verifyQuoteSignature(
  ak: { key: KeyObject; type: 'rsa' | 'ecc' },
  quote: Quote,
  sig: QuoteSignature,
): boolean {
  if (sig.hashAlg !== TPM_ALG.SHA256) return false;
  try {
    if (sig.sigAlg === 'ecdsa') {
      if (ak.type !== 'ecc') return false;
      const r = scalar32(sig.r);
      const s = scalar32(sig.s);
      if (!r || !s) return false;
      return verify('sha256', quote.raw, { key: ak.key, dsaEncoding: 'ieee-p1363' }, Buffer.concat([r, s]));
    }
    if (ak.type !== 'rsa') return false;
    return verify('sha256', quote.raw, { key: ak.key, padding: constants.RSA_PKCS1_PADDING }, sig.sig);
  } catch {
    return false;
  }
}

/**
 * The qualifying data a node passes to TPM2_Quote (docs/api.md "TPM attestation"):
 *   SHA-256( "baton-tpm-v1\n" + nonce + "\n" + base64url(SHA-256(CSR DER)) )
 * It binds the quote to this challenge and to the key the node asks a certificate for: a captured
 * exchange cannot be replayed with another CSR. The version label keeps the bytes from meaning
 * anything in another protocol.
 */
export function tpmQualifyingData(nonce: string, csrDer: Uint8Array): Buffer {
  const csrHash = createHash('sha256').update(csrDer).digest('base64url');
  return createHash('sha256').update(`baton-tpm-v1\n${nonce}\n${csrHash}`, 'utf8').digest();
}
