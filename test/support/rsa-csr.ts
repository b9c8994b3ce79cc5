import { createHash, type KeyObject, sign } from 'node:crypto';
import { bitString, ctx, int, nullValue, oid, seq, toPem } from '../../common/src/der';
import { encodeName } from '../../services/ca/src/pki/names';
import { OID } from '../../services/ca/src/pki/oids';

/**
 * Hand-built RSA keys and CSRs for the key policy (issue 14, finding 3): any modulus and exponent,
 * including keys no library would make.
 */

/** RFC 3279 §2.3.1: SubjectPublicKeyInfo of rsaEncryption with RSAPublicKey { n, e } (RFC 8017 §A.1.1). */
export function rsaSpki(modulus: bigint, exponent: bigint): Buffer {
  return seq(seq(oid(OID.rsaEncryption), nullValue()), bitString(seq(int(modulus), int(exponent))));
}

/** RFC 2986 §4.1 CertificationRequestInfo around `spki`: v1, CN=`commonName`, no attributes. */
export function requestInfo(spki: Buffer, commonName = 'node-1'): Buffer {
  return seq(int(0), encodeName({ CN: commonName }), spki, ctx(0, true));
}

/** A CSR from its parts, signed sha256WithRSAEncryption (RFC 4055 §5, NULL parameters). */
export function rsaCsrFromParts(info: Buffer, signature: Buffer): string {
  return toPem(
    'CERTIFICATE REQUEST',
    seq(info, seq(oid(OID.sha256WithRSAEncryption), nullValue()), bitString(signature)),
  );
}

/** A CSR for `spki` properly signed by `privateKey` (any exponent node:crypto will generate). */
export function signedRsaCsr(privateKey: KeyObject, spki: Buffer): string {
  const info = requestInfo(spki);
  return rsaCsrFromParts(info, sign('sha256', info, privateKey));
}

/** RFC 8017 §9.2 EMSA-PKCS1-v1_5 with SHA-256: 00 01 FF…FF 00 || DigestInfo || H, `size` octets. */
export function emsaPkcs1Sha256(message: Buffer, size: number): Buffer {
  const digestInfo = Buffer.concat([
    Buffer.from('3031300d060960864801650304020105000420', 'hex'),
    createHash('sha256').update(message).digest(),
  ]);
  const padding = Buffer.alloc(size - digestInfo.length - 3, 0xff);
  return Buffer.concat([Buffer.from([0, 1]), padding, Buffer.from([0]), digestInfo]);
}

/**
 * The review's CSR: public exponent 1 and an arbitrary 2048-bit `modulus` (top bit set, so larger
 * than any encoded message). With e = 1, s^e mod n = s, so the "signature" is the padded digest
 * itself: it verifies, and anyone can make one for any message without a private key.
 */
export function exponentOneCsr(modulus: bigint): { pem: string; info: Buffer; signature: Buffer } {
  const info = requestInfo(rsaSpki(modulus, 1n));
  const signature = emsaPkcs1Sha256(info, Math.ceil(modulus.toString(16).length / 2));
  return { pem: rsaCsrFromParts(info, signature), info, signature };
}
