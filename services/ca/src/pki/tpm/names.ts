import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { BatonError } from '../../ground/errors';
import { SHA256_SIZE, TPM_ALG, TPM_ECC_NIST_P256, TPM_RH_ENDORSEMENT } from './constants';
import { u16, u32 } from './marshal';
import type { PublicArea } from './public-area';

/**
 * Names (TPM 2.0 Library Part 1 §16): how a TPM refers to an object, and the identifiers Baton
 * derives from a TPM's endorsement key.
 */

const sha256 = (...parts: Buffer[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

/**
 * Name(object) = nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1 §16). Only SHA-256 names: the EK and AK
 * profiles (profiles.ts) refuse any other name algorithm before a name is asked for.
 */
export function objectName(pub: PublicArea): Buffer {
  if (pub.nameAlg !== TPM_ALG.SHA256) {
    throw new BatonError('ERR_ATTESTATION_FAILED', 'only SHA-256 object names are supported');
  }
  return Buffer.concat([u16(TPM_ALG.SHA256), sha256(pub.area)]);
}

/**
 * Qualified Name (Part 1 §16): QN(object) = nameAlg || H(QN(parent) || Name(object)); a primary
 * object's parent is its hierarchy, whose QN is its handle. The EK is a primary key of the
 * endorsement hierarchy and the AK its child, so QN(AK) is what TPM2_Quote writes in
 * qualifiedSigner: a quote made by another key, or by this AK under another parent, does not match.
 */
export function qualifiedNameUnderEk(ek: PublicArea, ak: PublicArea): Buffer {
  const qnEk = Buffer.concat([u16(TPM_ALG.SHA256), sha256(u32(TPM_RH_ENDORSEMENT), objectName(ek))]);
  return Buffer.concat([u16(TPM_ALG.SHA256), sha256(qnEk, objectName(ak))]);
}

const RSA_DEFAULT_EXPONENT = 0x10001;

/**
 * The object's public key for node:crypto and as a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7): RSA
 * (RFC 8017 A.1.1, the exponent 2^16 + 1 when the TPM's is 0) or an uncompressed NIST P-256 point
 * (RFC 5480 §2.2). Imported through a JWK (RFC 7518 §6), so OpenSSL checks the point is on the
 * curve; the SPKI is then OpenSSL's DER encoding, the same bytes `tpm2_readpublic -f pem` gives.
 */
export function publicKeyOf(pub: PublicArea, what = 'the public key'): { key: KeyObject; spki: Buffer } {
  let key: KeyObject;
  try {
    if (pub.type === 'rsa') {
      // OpenSSL imports any JWK modulus; an RSA modulus is odd and has no leading zero byte.
      const n = pub.modulus;
      if (n.length === 0 || n[0] === 0 || (n[n.length - 1]! & 1) === 0) throw new Error('not an RSA modulus');
      const e = pub.exponent === 0 ? RSA_DEFAULT_EXPONENT : pub.exponent;
      const eBytes = Buffer.from(e.toString(16).padStart(6, '0'), 'hex');
      key = createPublicKey({
        key: { kty: 'RSA', n: pub.modulus.toString('base64url'), e: eBytes.toString('base64url') },
        format: 'jwk',
      });
    } else {
      if (pub.curve !== TPM_ECC_NIST_P256 || pub.x.length !== SHA256_SIZE || pub.y.length !== SHA256_SIZE) {
        throw new Error('not a P-256 point');
      }
      key = createPublicKey({
        key: { kty: 'EC', crv: 'P-256', x: pub.x.toString('base64url'), y: pub.y.toString('base64url') },
        format: 'jwk',
      });
    }
  } catch {
    throw new BatonError('ERR_BAD_REQUEST', `${what} cannot be decoded (not a valid RSA key or P-256 point)`);
  }
  return { key, spki: key.export({ type: 'spki', format: 'der' }) };
}

/**
 * The EK identifier: lowercase hex SHA-256 of the EK's SubjectPublicKeyInfo DER (docs/api.md
 * "TPM attestation"). What `baton agent tpm-id` prints and `baton node enroll --tpm-ek-id` takes:
 * `tpm2_readpublic -c ek.ctx -f der | sha256sum` gives it too.
 */
export function ekIdentifier(ekSpki: Buffer): string {
  return sha256(ekSpki).toString('hex');
}

/** The node id of a TPM: `tpm-` + the first 20 hex digits of its EK identifier (80 bits). */
export function tpmNodeId(ekId: string): string {
  return `tpm-${ekId.slice(0, 20)}`;
}
