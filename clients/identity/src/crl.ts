import { verify as verifySignature, type X509Certificate } from 'node:crypto';
import { TAG } from '../../../common/src/der';
import { children, decodeOid, readWhole, type Tlv } from '../../../common/src/der-reader';
import { IdentityError } from './errors';

/**
 * RFC 5280 §5 CRLs as a peer checks them: parse the DER, verify the signature with the issuing CA's
 * key (§6.3.3 (f)–(g)), read thisUpdate/nextUpdate and the revoked serials. Full CRLs only: Baton
 * publishes no delta or indirect CRLs, and a CRL with a critical extension this reader does not know
 * is refused, as §5.2 and §5.3 require ("MUST NOT use that CRL").
 */

export interface ParsedCrl {
  /** The issuer Name, as its DER content octets: compared byte for byte with a CA's subject. */
  issuerName: Buffer;
  /** The cRLNumber (§5.2.3); undefined on a v1 CRL. */
  crlNumber: bigint | undefined;
  thisUpdate: Date;
  /** undefined when absent (§5.1.2.5 says conforming issuers include it; the guard treats absent as stale). */
  nextUpdate: Date | undefined;
  /** Revoked serials (canonical hex, see canonicalSerial) → RFC 5280 §5.3.1 reason code (0 when absent). */
  revoked: Map<string, number>;
  /** TBSCertList, header included: the signed bytes. */
  tbs: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
}

const OID = {
  cRLNumber: '2.5.29.20',
  authorityKeyIdentifier: '2.5.29.35',
  reasonCode: '2.5.29.21',
  invalidityDate: '2.5.29.24',
} as const;

/** RFC 5758 §3.2, RFC 4055 §5, RFC 8410 §3: signature algorithm OID → node:crypto digest (null: none). */
const SIGNATURE_DIGESTS = new Map<string, string | null>([
  ['1.2.840.10045.4.3.2', 'sha256'],
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
  ['1.2.840.113549.1.1.11', 'sha256'],
  ['1.2.840.113549.1.1.12', 'sha384'],
  ['1.2.840.113549.1.1.13', 'sha512'],
  ['1.3.101.112', null],
]);

const INTEGER = 0x02;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;
/** [0]: crlExtensions in a TBSCertList (§5.1), version in a TBSCertificate (§4.1). */
const CONTEXT_0 = 0xa0;

/**
 * One spelling per serial: lowercase hex of the magnitude's octets, without leading zero octets.
 * Baton lists serials in lowercase hex, OpenSSL and node:crypto print them uppercase, and a DER
 * INTEGER carries a 0x00 sign octet when the high bit is set (X.690 §8.3.2).
 */
export function canonicalSerial(hex: string): string {
  let s = hex.toLowerCase();
  if (s.length % 2) s = `0${s}`;
  while (s.length > 2 && s.startsWith('00')) s = s.slice(2);
  return s;
}

/** §4.1.2.5.1 UTCTime (YYMMDDHHMMSSZ, 50–99 → 19xx) and §4.1.2.5.2 GeneralizedTime (YYYYMMDDHHMMSSZ). */
function decodeTime(t: Tlv): Date {
  const s = t.value.toString('latin1');
  const m =
    t.tag === UTC_TIME
      ? /^()(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s)
      : t.tag === GENERALIZED_TIME
        ? /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s)
        : null;
  if (!m) throw new RangeError('bad time');
  const [cc, yy, mo, d, h, mi, sec] = m.slice(1).map(Number) as number[];
  // UTCTime: YY 50–99 are 19YY, 00–49 are 20YY.
  const year = m[1] === '' ? (yy! >= 50 ? 1900 : 2000) + yy! : cc! * 100 + yy!;
  const date = new Date(Date.UTC(year, mo! - 1, d, h, mi, sec));
  if (!Number.isFinite(date.getTime())) throw new RangeError('bad time');
  return date;
}

const isTime = (t: Tlv | undefined): t is Tlv => t?.tag === UTC_TIME || t?.tag === GENERALIZED_TIME;

interface Extension {
  id: string;
  critical: boolean;
  value: Buffer;
}

/** §4.1: Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
function readExtensions(seq: Tlv): Extension[] {
  return children(seq).map((ext) => {
    const parts = children(ext);
    const id = parts[0];
    const value = parts[parts.length - 1];
    if (id?.tag !== TAG.OID || value?.tag !== TAG.OCTET_STRING || parts.length > 3)
      throw new RangeError('malformed extension');
    const critical = parts.length === 3 && parts[1]!.tag === TAG.BOOLEAN && parts[1]!.value[0] !== 0;
    return { id: decodeOid(id.value), critical, value: value.value };
  });
}

function integerHex(t: Tlv): string {
  if (t.tag !== INTEGER || t.value.length === 0) throw new RangeError('bad INTEGER');
  return canonicalSerial(t.value.toString('hex'));
}

/** §5.1 revokedCertificates: each entry's serial and reasonCode. */
function readRevoked(list: Tlv, out: Map<string, number>): void {
  for (const entry of children(list)) {
    const [serial, date, exts] = children(entry);
    if (!serial || !isTime(date)) throw new RangeError('malformed CRL entry');
    let reason = 0;
    if (exts) {
      for (const e of readExtensions(exts)) {
        if (e.id === OID.reasonCode) reason = readWhole(e.value).value[0] ?? 0;
        // certificateIssuer (§5.3.3) is critical and makes the CRL indirect: refused here.
        else if (e.critical && e.id !== OID.invalidityDate)
          throw new RangeError(`unsupported critical CRL entry extension ${e.id}`);
      }
    }
    out.set(integerHex(serial), reason);
  }
}

/** Parses a DER CRL (RFC 5280 §5.1). Throws IdentityError ERR_CRL_INVALID saying what is wrong. */
export function parseCrl(der: Buffer): ParsedCrl {
  try {
    const outer = readWhole(der);
    const [tbs, alg, sig] = children(outer);
    if (outer.tag !== TAG.SEQUENCE || tbs?.tag !== TAG.SEQUENCE || alg?.tag !== TAG.SEQUENCE)
      throw new RangeError('not a CertificateList');
    if (sig?.tag !== TAG.BIT_STRING || sig.value[0] !== 0) throw new RangeError('bad signature BIT STRING');
    // tbsCertList is the first element of the outer SEQUENCE: its encoding runs from there.
    const tbsEnd = tbs.value.byteOffset - outer.value.byteOffset + tbs.value.length;
    const fields = children(tbs);
    let i = fields[0]?.tag === INTEGER ? 1 : 0;
    const version = i === 1 ? fields[0]!.value[0] : 0;
    if (version !== 0 && version !== 1) throw new RangeError(`unknown CRL version ${version}`);
    const innerAlg = fields[i++];
    // §5.1.1.2: the signature field of TBSCertList MUST match signatureAlgorithm.
    if (!innerAlg || !innerAlg.value.equals(alg.value)) throw new RangeError('signature algorithms differ');
    const issuer = fields[i++];
    if (issuer?.tag !== TAG.SEQUENCE) throw new RangeError('no issuer');
    const thisUpdate = fields[i++];
    if (!isTime(thisUpdate)) throw new RangeError('no thisUpdate');
    const nextUpdate = isTime(fields[i]) ? fields[i++] : undefined;
    const revoked = new Map<string, number>();
    if (fields[i]?.tag === TAG.SEQUENCE) readRevoked(fields[i++]!, revoked);
    let crlNumber: bigint | undefined;
    if (fields[i]?.tag === CONTEXT_0) {
      const [exts] = children(fields[i++]!);
      for (const e of exts ? readExtensions(exts) : []) {
        if (e.id === OID.cRLNumber)
          crlNumber = BigInt(`0x${readWhole(e.value).value.toString('hex') || '0'}`);
        // deltaCRLIndicator and issuingDistributionPoint are critical: this reader handles neither.
        else if (e.critical && e.id !== OID.authorityKeyIdentifier)
          throw new RangeError(`unsupported critical CRL extension ${e.id}`);
      }
    }
    if (i !== fields.length) throw new RangeError('unexpected fields in TBSCertList');
    const algorithm = decodeOid(children(alg)[0]?.value ?? Buffer.alloc(0));
    return {
      issuerName: issuer.value,
      crlNumber,
      thisUpdate: decodeTime(thisUpdate),
      nextUpdate: nextUpdate ? decodeTime(nextUpdate) : undefined,
      revoked,
      tbs: outer.value.subarray(0, tbsEnd),
      signatureAlgorithm: algorithm,
      signature: sig.value.subarray(1),
    };
  } catch (e) {
    if (e instanceof IdentityError) throw e;
    throw new IdentityError('ERR_CRL_INVALID', `the CRL does not parse: ${(e as Error).message}`);
  }
}

/** RFC 5280 §5.3.1 reason codes by name, as Baton's CLI spells them (7 is unused). */
const REASONS = [
  'unspecified',
  'key-compromise',
  'ca-compromise',
  'affiliation-changed',
  'superseded',
  'cessation-of-operation',
  'certificate-hold',
  'unused',
  'remove-from-crl',
  'privilege-withdrawn',
  'aa-compromise',
];

export const reasonName = (code: number): string => REASONS[code] ?? `reason ${code}`;

/** Every X509 CRL block of a PEM text, as DER. */
export function crlsFromPem(pem: string): Buffer[] {
  const blocks = pem.match(/-----BEGIN X509 CRL-----([\s\S]+?)-----END X509 CRL-----/g) ?? [];
  return blocks.map((b) => Buffer.from(b.replace(/-----(BEGIN|END) X509 CRL-----|\s/g, ''), 'base64'));
}

const names = new WeakMap<X509Certificate, { issuer: Buffer; subject: Buffer }>();

/** The issuer and subject Names of a certificate as DER content octets (§4.1.2.4, §4.1.2.6). */
export function certificateNames(cert: X509Certificate): { issuer: Buffer; subject: Buffer } {
  const known = names.get(cert);
  if (known) return known;
  const [tbs] = children(readWhole(cert.raw));
  const fields = children(tbs!);
  const base = fields[0]?.tag === CONTEXT_0 ? 1 : 0;
  const out = { issuer: fields[base + 2]!.value, subject: fields[base + 4]!.value };
  names.set(cert, out);
  return out;
}

/**
 * Why `ca` did not sign `crl`, or undefined when it did: the CRL's issuer is the CA's subject
 * (§6.3.3 (b)) and the signature verifies with its key (§6.3.3 (g)). The CA certificate itself
 * must already be trusted: the guard only asks CAs of the bundle or chained to it.
 */
export function crlSignatureProblem(crl: ParsedCrl, ca: X509Certificate): string | undefined {
  if (!crl.issuerName.equals(certificateNames(ca).subject)) return 'issued by another CA';
  if (!SIGNATURE_DIGESTS.has(crl.signatureAlgorithm))
    return `unsupported signature algorithm ${crl.signatureAlgorithm}`;
  try {
    const ok = verifySignature(
      SIGNATURE_DIGESTS.get(crl.signatureAlgorithm)!,
      crl.tbs,
      ca.publicKey,
      crl.signature,
    );
    return ok ? undefined : 'bad signature';
  } catch (e) {
    return `bad signature (${(e as Error).message})`;
  }
}
