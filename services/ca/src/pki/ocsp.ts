import { createHash } from 'node:crypto';
import { BatonError } from '../ground/errors';
import type { Signer } from '../ground/signer';
import { bitString, ctx, enumerated, generalizedTime, octets, oid, seq } from '../../../../common/src/der';
import { isRevocationReason } from './crl';
import { children, decodeOid, readWhole, type Tlv } from './der-reader';
import { extension } from './extensions';

/** RFC 6960 §4.2.1, §4.4.1; RFC 8017/FIPS 180-4 hash identifiers for CertID (§4.1.1). */
export const OCSP_OID = {
  basicResponse: '1.3.6.1.5.5.7.48.1.1',
  nonce: '1.3.6.1.5.5.7.48.1.2',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
} as const;

/** Bounds on untrusted input: a CertID is about 80 octets, so 8 KiB leaves room for extensions. */
export const MAX_OCSP_REQUEST_OCTETS = 8 * 1024;
export const MAX_OCSP_REQUESTS = 10;
/** RFC 9654 §2.1 (obsoleting RFC 8954): a nonce is 1 to 128 octets; others are malformedRequest. */
const MAX_NONCE_OCTETS = 128;

export type CertIdHash = 'sha1' | 'sha256';

export interface OcspCertRequest {
  hashAlgorithm: CertIdHash;
  issuerNameHash: Buffer;
  issuerKeyHash: Buffer;
  /** Serial magnitude as lowercase hex, as readCertificate().serialHex writes it. */
  serialHex: string;
  /** The CertID exactly as received: §4.2.1 responses echo it, so it is never re-encoded. */
  certId: Buffer;
}

export interface OcspRequest {
  requests: OcspCertRequest[];
  /** The Nonce octets (the OCTET STRING inside extnValue, RFC 9654 §2.1). */
  nonce?: Buffer;
}

const HASH_BY_OID = new Map<string, { name: CertIdHash; size: number }>([
  [OCSP_OID.sha1, { name: 'sha1', size: 20 }],
  [OCSP_OID.sha256, { name: 'sha256', size: 32 }],
]);

const WHAT = 'OCSP request';

function bad(why: string): never {
  throw new BatonError('ERR_BAD_REQUEST', `malformed ${WHAT}: ${why}`);
}

function expectTag(el: Tlv | undefined, tag: number, name: string): Tlv {
  if (el?.tag !== tag) bad(`expected ${name}`);
  return el;
}

/** AlgorithmIdentifier { algorithm, parameters absent or NULL } (RFC 5754 §2 allows both). */
function readHashAlgorithm(el: Tlv): { name: CertIdHash; size: number } {
  const [alg, params, ...extra] = children(el, WHAT);
  const id = decodeOid(expectTag(alg, 0x06, 'a hash algorithm OID').value);
  if (extra.length > 0 || (params && (params.tag !== 0x05 || params.value.length !== 0)))
    bad('unexpected hash algorithm parameters');
  const hash = HASH_BY_OID.get(id);
  if (!hash) bad(`unsupported CertID hash algorithm ${id}: use SHA-1 or SHA-256`);
  return hash;
}

/**
 * CertificateSerialNumber as DER (X.690 §8.3.2: minimal) and positive (RFC 5280 §4.1.2.2), as
 * hex of its magnitude. RFC 5280 allows 20 octets; one more leaves room for the sign octet.
 */
function readSerial(el: Tlv | undefined): string {
  const v = expectTag(el, 0x02, 'a serial number INTEGER').value;
  if (v.length === 0 || v.length > 21) bad('serial number length');
  if (v.length > 1 && ((v[0] === 0 && v[1]! < 0x80) || (v[0] === 0xff && v[1]! >= 0x80)))
    bad('non-minimal serial number');
  if (v[0]! & 0x80) bad('negative serial number');
  return (v.length > 1 && v[0] === 0 ? v.subarray(1) : v).toString('hex');
}

/** §4.1.1 CertID ::= SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber }. */
function readCertId(el: Tlv): OcspCertRequest {
  const [alg, nameHash, keyHash, serial, ...extra] = children(expectTag(el, 0x30, 'a CertID'), WHAT);
  if (extra.length > 0) bad('trailing CertID fields');
  const hash = readHashAlgorithm(expectTag(alg, 0x30, 'a hash AlgorithmIdentifier'));
  const issuerNameHash = expectTag(nameHash, 0x04, 'issuerNameHash').value;
  const issuerKeyHash = expectTag(keyHash, 0x04, 'issuerKeyHash').value;
  if (issuerNameHash.length !== hash.size || issuerKeyHash.length !== hash.size)
    bad(`issuer hashes must be ${hash.size} octets for ${hash.name}`);
  return {
    hashAlgorithm: hash.name,
    issuerNameHash: Buffer.from(issuerNameHash),
    issuerKeyHash: Buffer.from(issuerKeyHash),
    serialHex: readSerial(serial),
    certId: Buffer.from(el.raw),
  };
}

/**
 * Extensions (RFC 5280 §4.1): each OID at most once; an unrecognised critical extension makes the
 * request one Baton cannot honour, so it is refused rather than silently ignored.
 */
function readExtensions(el: Tlv, known: readonly string[]): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const ext of children(expectTag(el, 0x30, 'Extensions'), WHAT)) {
    const parts = children(expectTag(ext, 0x30, 'an Extension'), WHAT);
    const id = decodeOid(expectTag(parts[0], 0x06, 'an extension OID').value);
    let critical = false;
    let i = 1;
    if (parts[i]?.tag === 0x01) {
      const b = parts[i++]!.value;
      if (b.length !== 1 || (b[0] !== 0 && b[0] !== 0xff)) bad('extension critical flag');
      critical = b[0] === 0xff;
    }
    const value = expectTag(parts[i++], 0x04, 'an extension value').value;
    if (i !== parts.length) bad('trailing extension fields');
    if (out.has(id)) bad(`duplicate extension ${id}`);
    if (critical && !known.includes(id)) bad(`unsupported critical extension ${id}`);
    out.set(id, value);
  }
  return out;
}

/** RFC 9654 §2.1: extnValue holds Nonce ::= OCTET STRING (SIZE(1..128)). */
function readNonce(extnValue: Buffer): Buffer {
  const el = readWhole(extnValue, WHAT);
  if (el.tag !== 0x04) bad('the nonce must be an OCTET STRING');
  if (el.value.length < 1 || el.value.length > MAX_NONCE_OCTETS)
    bad(`the nonce must be 1 to ${MAX_NONCE_OCTETS} octets`);
  return Buffer.from(el.value);
}

/**
 * Parses an RFC 6960 §4.1.1 OCSPRequest:
 *   OCSPRequest ::= SEQUENCE { tbsRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }
 *   TBSRequest  ::= SEQUENCE { version [0] DEFAULT v1, requestorName [1] OPTIONAL,
 *                              requestList SEQUENCE OF Request, requestExtensions [2] OPTIONAL }
 * Baton does not require signed requests (§4.1.2 makes signing optional), so requestorName and the
 * signature are skipped unread. Every failure is a BatonError ERR_BAD_REQUEST, which the route
 * answers with malformedRequest.
 */
export function parseOcspRequest(der: Buffer): OcspRequest {
  if (der.length > MAX_OCSP_REQUEST_OCTETS) bad(`larger than ${MAX_OCSP_REQUEST_OCTETS} octets`);
  const [tbsEl, signature, ...extra] = children(expectTag(readWhole(der, WHAT), 0x30, 'OCSPRequest'), WHAT);
  if (extra.length > 0 || (signature && signature.tag !== 0xa0)) bad('trailing OCSPRequest fields');
  const tbs = children(expectTag(tbsEl, 0x30, 'TBSRequest'), WHAT);
  let i = 0;
  if (tbs[i]?.tag === 0xa0) {
    // DER omits a DEFAULT value, but clients that spell out v1 (0) are harmless; others are unknown.
    const [version, ...more] = children(tbs[i++]!, WHAT);
    const v = expectTag(version, 0x02, 'a version INTEGER').value;
    if (more.length > 0 || v.length !== 1 || v[0] !== 0) bad('unsupported version');
  }
  if (tbs[i]?.tag === 0xa1) i++;
  const list = children(expectTag(tbs[i++], 0x30, 'requestList'), WHAT);
  let nonce: Buffer | undefined;
  if (tbs[i]?.tag === 0xa2) {
    const [exts, ...more] = children(tbs[i++]!, WHAT);
    if (!exts || more.length > 0) bad('requestExtensions');
    const value = readExtensions(exts, [OCSP_OID.nonce]).get(OCSP_OID.nonce);
    if (value) nonce = readNonce(value);
  }
  if (i !== tbs.length) bad('trailing TBSRequest fields');
  if (list.length === 0) bad('no certificate is asked about');
  if (list.length > MAX_OCSP_REQUESTS) bad(`more than ${MAX_OCSP_REQUESTS} certificates asked about`);
  const requests = list.map((req) => {
    // Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
    const [certId, single, ...more] = children(expectTag(req, 0x30, 'a Request'), WHAT);
    if (more.length > 0 || (single && single.tag !== 0xa0)) bad('trailing Request fields');
    if (single) {
      const [exts, ...rest] = children(single, WHAT);
      if (!exts || rest.length > 0) bad('singleRequestExtensions');
      readExtensions(exts, []);
    }
    return readCertId(expectTag(certId, 0x30, 'a CertID'));
  });
  return nonce ? { requests, nonce } : { requests };
}

export type ResponderId = { name: Buffer } | { keyHash: Buffer };

export type OcspCertStatus = 'good' | 'unknown' | { revokedAt: Date; reason?: number };

export interface OcspSingleResponse {
  /** The CertID from the request, byte for byte. */
  certId: Buffer;
  status: OcspCertStatus;
  thisUpdate: Date;
  nextUpdate?: Date;
}

export interface BuildOcspResponseParams {
  responder: ResponderId & {
    signer: Signer;
    /** DER certificates for `certs` (§4.2.1), e.g. a delegated responder's certificate. */
    certificates?: Buffer[];
  };
  producedAt: Date;
  responses: OcspSingleResponse[];
  nonce?: Buffer;
}

/** The subjectPublicKey BIT STRING contents, without the unused-bits octet (RFC 6960 §4.1.1). */
function subjectPublicKeyBits(spki: Buffer): Buffer {
  const [, bits] = children(readWhole(spki, 'public key'), 'public key');
  if (bits?.tag !== 0x03 || bits.value.length < 2)
    throw new BatonError('ERR_BAD_REQUEST', 'malformed public key');
  return bits.value.subarray(1);
}

/** RFC 6960 §4.2.1 KeyHash: SHA-1 of the responder's subjectPublicKey bits, for ResponderID byKey. */
export function responderKeyHash(spki: Buffer): Buffer {
  return createHash('sha1').update(subjectPublicKeyBits(spki)).digest();
}

/**
 * §4.2.1 CertStatus ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo,
 * unknown [2] IMPLICIT UnknownInfo }. RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime,
 * revocationReason [0] EXPLICIT CRLReason OPTIONAL }; like the CRL entry, unspecified (0) is left
 * out (RFC 5280 §5.3.1).
 */
function certStatus(status: OcspCertStatus): Buffer {
  if (status === 'good') return ctx(0, false);
  if (status === 'unknown') return ctx(2, false);
  const reason = status.reason ?? 0;
  if (!isRevocationReason(reason)) throw new RangeError(`invalid revocation reason ${reason}`);
  const fields = [generalizedTime(status.revokedAt)];
  if (reason !== 0) fields.push(ctx(0, true, enumerated(reason)));
  return ctx(1, true, ...fields);
}

/** §4.2.1 SingleResponse; §4.2.2.1: all OCSP times are GeneralizedTime. */
function singleResponse(r: OcspSingleResponse): Buffer {
  const fields = [r.certId, certStatus(r.status), generalizedTime(r.thisUpdate)];
  if (r.nextUpdate) fields.push(ctx(0, true, generalizedTime(r.nextUpdate)));
  return seq(...fields);
}

/**
 * Builds and signs a successful RFC 6960 §4.2.1 OCSPResponse carrying an id-pkix-ocsp-basic
 * BasicOCSPResponse. The ASN.1 module is EXPLICIT TAGS (§B.1), so ResponderID byName is [1] around
 * the Name and byKey is [2] around an OCTET STRING.
 */
export function buildOcspResponse(p: BuildOcspResponseParams): Buffer {
  if (p.responses.length === 0) throw new RangeError('an OCSP response needs at least one SingleResponse');
  let responderId: Buffer;
  if ('keyHash' in p.responder) {
    if (p.responder.keyHash.length !== 20) throw new RangeError('a responder KeyHash is a SHA-1 (20 octets)');
    responderId = ctx(2, true, octets(p.responder.keyHash));
  } else {
    responderId = ctx(1, true, p.responder.name);
  }
  // version v1 is the DEFAULT and therefore absent (X.690 §11.5).
  const data = [responderId, generalizedTime(p.producedAt), seq(...p.responses.map(singleResponse))];
  // §4.4.1 / RFC 9654 §2.1: the nonce is echoed as the request carried it, in responseExtensions [1].
  if (p.nonce) data.push(ctx(1, true, seq(extension(OCSP_OID.nonce, false, octets(p.nonce)))));
  const tbs = seq(...data);
  const basic = [tbs, p.responder.signer.algorithmIdentifier, bitString(p.responder.signer.sign(tbs))];
  if (p.responder.certificates?.length) basic.push(ctx(0, true, seq(...p.responder.certificates)));
  // OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT ResponseBytes OPTIONAL }
  return seq(enumerated(0), ctx(0, true, seq(oid(OCSP_OID.basicResponse), octets(seq(...basic)))));
}

/** §4.2.1 OCSPResponseStatus values that carry no responseBytes. */
const ERROR_STATUS = {
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
} as const;

export type OcspErrorStatus = keyof typeof ERROR_STATUS;

/** An unsigned error response (§2.3): no responseBytes, so nothing to sign. */
export function ocspErrorResponse(status: OcspErrorStatus): Buffer {
  return seq(enumerated(ERROR_STATUS[status]));
}

export interface IssuerHashes {
  sha1: { nameHash: Buffer; keyHash: Buffer };
  sha256: { nameHash: Buffer; keyHash: Buffer };
}

/**
 * The CertID issuer hashes of a CA (§4.1.1): the hash of its subject Name DER (the issuer name of
 * the certificates it signs) and of its subjectPublicKey bits, for both hashes Baton accepts.
 * Computed once per CA at load; matching a request is then a buffer comparison.
 */
export function issuerHashes(caCertDer: Buffer): IssuerHashes {
  const what = 'CA certificate';
  const [tbs] = children(readWhole(caCertDer, what), what);
  const f = children(expectTagFor(tbs, 0x30, what), what);
  const i = f[0]?.tag === 0xa0 ? 1 : 0;
  const subject = expectTagFor(f[i + 4], 0x30, what);
  const spki = expectTagFor(f[i + 5], 0x30, what);
  const keyBits = subjectPublicKeyBits(spki.raw);
  const h = (alg: CertIdHash, data: Buffer): Buffer => createHash(alg).update(data).digest();
  return {
    sha1: { nameHash: h('sha1', subject.raw), keyHash: h('sha1', keyBits) },
    sha256: { nameHash: h('sha256', subject.raw), keyHash: h('sha256', keyBits) },
  };
}

function expectTagFor(el: Tlv | undefined, tag: number, what: string): Tlv {
  if (el?.tag !== tag) throw new BatonError('ERR_BAD_REQUEST', `malformed ${what}`);
  return el;
}

/** True when a request names a certificate issued by the CA with these hashes. */
export function isIssuedBy(req: OcspCertRequest, hashes: IssuerHashes): boolean {
  const h = hashes[req.hashAlgorithm];
  return h.nameHash.equals(req.issuerNameHash) && h.keyHash.equals(req.issuerKeyHash);
}
