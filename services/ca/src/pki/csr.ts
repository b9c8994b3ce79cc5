import { BatonError } from '../ground/errors';
import { nullValue, oid, seq } from '../../../../common/src/der';
import { children, decodeOid, fromPem, readWhole, type Tlv } from './der-reader';
import {
  describePublicKey,
  EC_COORDINATE_BYTES,
  EC_SPKI_PREFIX,
  type PublicKeyInfo,
  verifySignature,
} from './keys';
import { OID } from './oids';

/**
 * PKCS#10 certification requests (RFC 2986), read with the strict DER reader instead of an ASN.1
 * object model: a CSR arrives on every attest, renew and workload call, and the object model adds
 * about a millisecond per request, where this walk costs microseconds and the time left is the
 * key import and one `crypto.verify`, which any parser has to pay.
 *
 * Only the public key and the raw subject leave this module. Names, extensions and attributes in a
 * CSR are chosen by the requester, so the CA never reads them (CONTRACT "Certificate profile": the
 * role and identity come from the token, the node record or the entry, never from the CSR).
 */
export interface ParsedCsr {
  /** The requester's key, already checked against the key policy. */
  key: PublicKeyInfo;
  /** The subject Name DER as the requester sent it; informational only. */
  subjectRaw: Buffer;
  /** The whole CertificationRequest DER (for audit and for re-verification). */
  der: Buffer;
}

/** A P-384 CSR is under 600 bytes and an RSA-4096 one under 2 KiB; 16 KiB bounds the work per request. */
export const MAX_CSR_BYTES = 16 * 1024;

const WHAT = 'csr';

interface SignatureAlgorithm {
  hash: 'sha256' | 'sha384' | 'sha512';
  family: 'ec' | 'rsa';
}

/**
 * The signature algorithms accepted on a CSR. Anything else is refused, RSASSA-PSS included
 * (RFC 4055 §3.1 parameters would need their own strict parser, and no Baton client sends them).
 */
const SIGNATURE_ALGORITHMS: ReadonlyMap<string, SignatureAlgorithm> = new Map([
  [OID.ecdsaWithSHA256, { hash: 'sha256', family: 'ec' }],
  [OID.ecdsaWithSHA384, { hash: 'sha384', family: 'ec' }],
  [OID.sha256WithRSAEncryption, { hash: 'sha256', family: 'rsa' }],
  [OID.sha384WithRSAEncryption, { hash: 'sha384', family: 'rsa' }],
  [OID.sha512WithRSAEncryption, { hash: 'sha512', family: 'rsa' }],
]);

/**
 * The exact DER of every acceptable AlgorithmIdentifier (EC without parameters; RSA with NULL or,
 * as RFC 4055 §5 allows, without): a CSR whose bytes match one is decided by one map lookup, and
 * anything else takes the element-by-element path below, which gives the precise refusal.
 */
const ENCODED_ALGORITHMS: ReadonlyMap<string, SignatureAlgorithm> = new Map(
  [...SIGNATURE_ALGORITHMS].flatMap(([id, alg]) => {
    const forms = alg.family === 'ec' ? [seq(oid(id))] : [seq(oid(id), nullValue()), seq(oid(id))];
    return forms.map((der) => [der.toString('hex'), alg] as const);
  }),
);

const invalid = (message: string): BatonError => new BatonError('ERR_CSR_INVALID', message);

/**
 * A CSR checked in everything but its signature: structure, size, signature algorithm and the key
 * policy (key-policy.ts), all in microseconds. `verify()` is the one expensive step, so that a
 * caller can put cheaper checks of the requester (a join token) before it.
 */
export interface UnverifiedCsr {
  /** The whole CertificationRequest DER, as received (x509pop evidence binds its hash). */
  readonly der: Buffer;
  /** RFC 2986 §4.2: verifies the signature; the ParsedCsr, or ERR_CSR_INVALID. */
  verify(): ParsedCsr;
}

/**
 * Parses and verifies a PKCS#10 CSR given as PEM (label `CERTIFICATE REQUEST`, or the legacy
 * `NEW CERTIFICATE REQUEST` of RFC 7468 §7) or DER. Throws only BatonError: ERR_CSR_INVALID for
 * anything malformed or unverifiable, ERR_CSR_KEY_UNSUPPORTED for a well-formed key outside policy.
 * Messages name the fault and never echo the input.
 */
export function parseCsr(input: string | Buffer): ParsedCsr {
  return readCsr(input).verify();
}

/** parseCsr but for the signature, which `verify()` checks; the same refusals otherwise. */
export function readCsr(input: string | Buffer): UnverifiedCsr {
  try {
    return read(input);
  } catch (e) {
    if (e instanceof BatonError) {
      // The reader speaks ERR_BAD_REQUEST for every structure it reads; here the structure is a CSR.
      throw e.code === 'ERR_BAD_REQUEST' ? invalid(e.message) : e;
    }
    throw invalid('csr cannot be parsed');
  }
}

function read(input: string | Buffer): UnverifiedCsr {
  if (typeof input !== 'string' && !Buffer.isBuffer(input)) throw invalid('csr must be a string or a buffer');
  // A string's UTF-8 size is at least its length, so an oversized string is refused before it is scanned.
  const size =
    typeof input === 'string' && input.length <= MAX_CSR_BYTES
      ? Buffer.byteLength(input, 'utf8')
      : input.length;
  if (size > MAX_CSR_BYTES) throw invalid(`csr is larger than ${MAX_CSR_BYTES} bytes`);
  if (size === 0) throw invalid('csr is empty');

  const der = toDer(input);
  const outer = expect(readWhole(der, WHAT), 0x30, 'certification request');
  const [info, sigAlg, signature, ...extra] = children(outer, WHAT);
  if (!info || !sigAlg || !signature || extra.length > 0) {
    throw invalid('malformed csr: expected request info, signature algorithm and signature');
  }
  expect(info, 0x30, 'certification request info');

  // RFC 2986 §4.1: CertificationRequestInfo ::= SEQUENCE { version INTEGER { v1(0) }, subject Name,
  // subjectPKInfo, attributes [0] IMPLICIT SET OF Attribute }. The attributes field is not OPTIONAL.
  const [version, subject, spki, attributes, ...more] = children(info, WHAT);
  if (!version || !subject || !spki || !attributes || more.length > 0) {
    throw invalid('malformed csr: expected version, subject, public key and attributes');
  }
  expect(version, 0x02, 'version');
  if (version.value.length !== 1 || version.value[0] !== 0) {
    throw invalid('unsupported csr version: expected v1 (0)');
  }
  checkName(expect(subject, 0x30, 'subject'));
  expect(spki, 0x30, 'subject public key info');
  checkAttributes(expect(attributes, 0xa0, 'attributes'));

  // The key policy is checked before the signature algorithm so that an unsupported key (Ed25519,
  // RSA-PSS, secp256k1, RSA-1024) is reported as such rather than as an unknown algorithm.
  const key = describePublicKey(Buffer.from(spki.raw));
  checkCanonicalKey(key, spki);
  const alg = signatureAlgorithm(expect(sigAlg, 0x30, 'signature algorithm'));
  const sig = signatureBits(expect(signature, 0x03, 'signature'));
  const family = key.kind === 'rsa' ? 'rsa' : 'ec';
  if (family !== alg.family) throw invalid('csr signature algorithm does not match the public key');

  // Copies: the caller's buffer may change before verify() runs.
  const parsed: ParsedCsr = { key, subjectRaw: Buffer.from(subject.raw), der: Buffer.from(der) };
  const signed = Buffer.from(info.raw);
  const signatureValue = Buffer.from(sig);
  return {
    der: parsed.der,
    verify() {
      // RFC 2986 §4.2: the signature is computed over the DER encoding of certificationRequestInfo,
      // so it is verified over the exact bytes received, never over a re-encoding. ECDSA signatures
      // are the DER Ecdsa-Sig-Value of RFC 5480 §2.2 / RFC 3279 §2.2.3; RSA is PKCS#1 v1.5 (RFC 8017
      // §8.2). verifySignature answers false, never throws.
      if (!verifySignature(key, alg.hash, signed, signatureValue))
        throw invalid('csr signature does not verify');
      return parsed;
    },
  };
}

function toDer(input: string | Buffer): Buffer {
  // DER always starts with the SEQUENCE tag; a buffer that does not is treated as PEM text. (PEM
  // text that happens to start with the character '0' is therefore read as DER and refused.)
  if (Buffer.isBuffer(input) && input[0] === 0x30) return input;
  const text = typeof input === 'string' ? input : input.toString('latin1');
  for (const label of ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']) {
    if (text.includes(`-----BEGIN ${label}-----`)) {
      let der: Buffer;
      try {
        der = fromPem(text, label);
      } catch {
        throw invalid('malformed csr pem: expected base64 between begin and end lines');
      }
      if (der.length === 0) throw invalid('csr pem is empty');
      return der;
    }
  }
  throw invalid('expected a pem certificate request');
}

function expect(el: Tlv, tag: number, what: string): Tlv {
  if (el.tag !== tag) throw invalid(`malformed csr: unexpected tag for ${what}`);
  return el;
}

/** RFC 5280 §4.1.2.4: Name ::= SEQUENCE OF SET OF AttributeTypeAndValue (an empty Name is allowed). */
function checkName(name: Tlv): void {
  for (const rdn of children(name, WHAT)) {
    const atvs = children(expect(rdn, 0x31, 'subject'), WHAT);
    if (atvs.length === 0) throw invalid('malformed csr: empty relative distinguished name');
    for (const atv of atvs) checkTypeAndValue(expect(atv, 0x30, 'subject'), 'subject');
  }
}

/** RFC 2986 §4.1: Attribute ::= SEQUENCE { type OID, values SET SIZE(1..MAX) }. Checked, never read. */
function checkAttributes(attributes: Tlv): void {
  for (const attr of children(attributes, WHAT)) {
    const [type, values, ...rest] = children(expect(attr, 0x30, 'attribute'), WHAT);
    if (!type || !values || rest.length > 0) throw invalid('malformed csr: malformed attribute');
    decodeOid(expect(type, 0x06, 'attribute').value);
    if (children(expect(values, 0x31, 'attribute'), WHAT).length === 0) {
      throw invalid('malformed csr: attribute without values');
    }
  }
}

function checkTypeAndValue(atv: Tlv, what: string): void {
  const [type, value, ...rest] = children(atv, WHAT);
  if (!type || !value || rest.length > 0) throw invalid(`malformed csr: malformed ${what}`);
  decodeOid(expect(type, 0x06, what).value);
}

/**
 * RFC 5758 §3.2: for ecdsa-with-SHA256/384 the parameters MUST be absent. RFC 4055 §5: for the
 * shaNNNWithRSAEncryption OIDs the parameters are NULL, and implementations MUST accept them absent.
 */
function signatureAlgorithm(el: Tlv): SignatureAlgorithm {
  const known = ENCODED_ALGORITHMS.get(el.raw.toString('hex'));
  if (known) return known;
  const [id, params, ...rest] = children(el, WHAT);
  if (!id || rest.length > 0) throw invalid('malformed csr: malformed signature algorithm');
  const alg = SIGNATURE_ALGORITHMS.get(decodeOid(expect(id, 0x06, 'signature algorithm').value));
  if (!alg) {
    throw invalid(
      'unsupported csr signature algorithm: use ecdsa-with-sha256/384 or sha256/384/512 with rsa',
    );
  }
  const isNull = params?.tag === 0x05 && params.value.length === 0;
  if (params && (alg.family === 'ec' || !isNull)) {
    throw invalid('malformed csr: unexpected signature algorithm parameters');
  }
  return alg;
}

/** X.690 §8.6.2: the first content octet counts unused bits; a signature uses whole octets. */
function signatureBits(el: Tlv): Buffer {
  if (el.value.length < 2 || el.value[0] !== 0) {
    throw invalid('malformed csr: malformed signature bit string');
  }
  return el.value.subarray(1);
}

const EC_COORDINATES_BYTES = {
  'ec-p256': 2 * EC_COORDINATE_BYTES['ec-p256'],
  'ec-p384': 2 * EC_COORDINATE_BYTES['ec-p384'],
} as const;

/** RFC 3279 §2.3.1: rsaEncryption with NULL parameters. */
const RSA_ALGORITHM_ID = Buffer.from('300d06092a864886f70d0101010500', 'hex');

/**
 * The SPKI becomes the certificate's key and its fingerprint drives the key-reuse check, so one key
 * must have one encoding: a compressed EC point (RFC 5480 §2.2 makes only the uncompressed form
 * mandatory), explicit curve parameters or an RSA key OpenSSL tolerates in a BER-ish form would
 * give the same key a second fingerprint. Checked on the bytes rather than by re-exporting the key,
 * which would cost more than the signature check.
 */
function checkCanonicalKey(key: PublicKeyInfo, spki: Tlv): void {
  const notCanonical = () => invalid('malformed csr: public key is not in canonical der form');
  if (key.kind === 'rsa') {
    const [algorithm, bits, ...rest] = children(spki, WHAT);
    if (
      !algorithm?.raw.equals(RSA_ALGORITHM_ID) ||
      bits?.tag !== 0x03 ||
      bits.value[0] !== 0 ||
      rest.length
    ) {
      throw notCanonical();
    }
    // RFC 8017 §A.1.1: RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }.
    const rsaKey = readWhole(bits.value.subarray(1), WHAT);
    const ints = rsaKey.tag === 0x30 ? children(rsaKey, WHAT) : [];
    if (ints.length !== 2 || !ints.every(isMinimalPositiveInteger)) throw notCanonical();
    return;
  }
  const prefix = EC_SPKI_PREFIX[key.kind];
  if (
    spki.raw.length !== prefix.length + EC_COORDINATES_BYTES[key.kind] ||
    !spki.raw.subarray(0, prefix.length).equals(prefix)
  ) {
    const [, bits] = children(spki, WHAT);
    if (bits?.tag === 0x03 && (bits.value[1] === 0x02 || bits.value[1] === 0x03)) {
      throw new BatonError(
        'ERR_CSR_KEY_UNSUPPORTED',
        'compressed ec points are not supported: use the uncompressed form',
      );
    }
    throw notCanonical();
  }
}

/** X.690 §8.3.2: no redundant leading octet; the sign bit clear. */
function isMinimalPositiveInteger(el: Tlv): boolean {
  const v = el.value;
  if (el.tag !== 0x02 || v.length === 0 || v[0]! & 0x80) return false;
  return !(v.length > 1 && v[0] === 0 && (v[1]! & 0x80) === 0);
}
