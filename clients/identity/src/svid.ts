import type { X509Certificate } from 'node:crypto';
import { TAG } from '../../../common/src/der';
import { children, decodeOid, readWhole, type Tlv } from '../../../common/src/der-reader';
import { IdentityError } from './errors';

/**
 * What the library reads out of an X.509-SVID: its one SPIFFE ID and the subject attributes Baton
 * sets (CONTRACT "Certificate profile": O=<trust domain>, OU=<role>, CN=<name>).
 */

export interface SubjectParts {
  /** undefined when absent, and also when repeated: a repeated attribute is ambiguous, so it never matches. */
  O?: string;
  OU?: string;
  CN?: string;
}

export interface Svid {
  spiffeId: string;
  subject: SubjectParts;
}

const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
} as const;

/** RFC 5280 §4.2.1.6: GeneralName uniformResourceIdentifier is [6] IMPLICIT IA5String. */
const URI_NAME_TAG = 0x86;
const EXTENSIONS_TAG = 0xa3;
const VERSION_TAG = 0xa0;

/** SPIFFE-ID §2.3: a SPIFFE ID is at most 2048 bytes. */
const MAX_SPIFFE_ID_BYTES = 2048;
const TRUST_DOMAIN_RE = /^[a-z0-9._-]+$/;
const SEGMENT_RE = /^[a-zA-Z0-9._-]+$/;

/**
 * The trust domain and path of a SPIFFE ID, or undefined when `id` is not one. SPIFFE-ID §2:
 * scheme `spiffe`, a trust domain of lowercase letters, digits, ".", "-", "_" (§2.1), and a path
 * of non-empty segments of letters, digits, ".", "-", "_", none of them "." or ".." and no trailing
 * slash (§2.2); no port, user info, query or fragment.
 */
export function parseSpiffeId(id: string): { trustDomain: string; path: string } | undefined {
  if (Buffer.byteLength(id) > MAX_SPIFFE_ID_BYTES || !id.startsWith('spiffe://')) return undefined;
  const rest = id.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (!TRUST_DOMAIN_RE.test(trustDomain)) return undefined;
  if (path !== '') {
    for (const segment of path.slice(1).split('/')) {
      if (!SEGMENT_RE.test(segment) || segment === '.' || segment === '..') return undefined;
    }
  }
  return { trustDomain, path };
}

/** SPIFFE-ID §2.1 trust domain name syntax. */
export const isTrustDomain = (td: string): boolean => TRUST_DOMAIN_RE.test(td);

interface CertificateFacts {
  uris: string[];
  subject: SubjectParts;
  /** keyCertSign or cRLSign is set in keyUsage (RFC 5280 §4.2.1.3). */
  signsCertificates: boolean;
  /** The SAN or keyUsage extension appears more than once (RFC 5280 §4.2 forbids it). */
  duplicateExtension: boolean;
}

/** Reads the URI SANs, subject and key usage from the DER of a certificate (RFC 5280 §4.1). */
function certificateFacts(raw: Buffer): CertificateFacts {
  const [tbs] = children(readWhole(raw));
  if (!tbs || tbs.tag !== TAG.SEQUENCE) throw new RangeError('no tbsCertificate');
  const fields = children(tbs);
  // version [0] is optional (absent means v1); subject follows serial, signature, issuer, validity.
  const base = fields[0]?.tag === VERSION_TAG ? 1 : 0;
  const subjectName = fields[base + 4];
  if (!subjectName || subjectName.tag !== TAG.SEQUENCE) throw new RangeError('no subject');
  const facts: CertificateFacts = {
    uris: [],
    subject: subjectOf(subjectName),
    signsCertificates: false,
    duplicateExtension: false,
  };
  const extensions = fields.find((f) => f.tag === EXTENSIONS_TAG);
  if (!extensions) return facts;
  const seen = new Set<string>();
  for (const ext of children(readWhole(extensions.value))) {
    // RFC 5280 §4.1: Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
    const parts = children(ext);
    const [extnId] = parts;
    const octets = parts[parts.length - 1];
    if (extnId?.tag !== TAG.OID || octets?.tag !== TAG.OCTET_STRING)
      throw new RangeError('malformed extension');
    const id = decodeOid(extnId.value);
    if (id !== OID.subjectAltName && id !== OID.keyUsage) continue;
    if (seen.has(id)) facts.duplicateExtension = true;
    seen.add(id);
    const inner = readWhole(octets.value);
    if (id === OID.subjectAltName) {
      for (const name of children(inner)) {
        if (name.tag === URI_NAME_TAG) facts.uris.push(name.value.toString('latin1'));
      }
    } else {
      // BIT STRING: one octet of unused-bit count, then bits 0..8 from the top of the next octet.
      const bits = inner.value[1] ?? 0;
      const keyCertSign = 0x04;
      const cRLSign = 0x02;
      facts.signsCertificates ||= (bits & (keyCertSign | cRLSign)) !== 0;
    }
  }
  return facts;
}

/** The text of a DirectoryString (RFC 5280 §4.1.2.4), or undefined for a type it does not name. */
function decodeString(t: Tlv): string | undefined {
  switch (t.tag) {
    case TAG.UTF8_STRING:
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
      return t.value.toString('utf8');
    case TAG.TELETEX_STRING:
      return t.value.toString('latin1');
    case TAG.BMP_STRING:
      return Buffer.from(t.value).swap16().toString('utf16le');
    default:
      return undefined;
  }
}

function subjectOf(name: Tlv): SubjectParts {
  const found = new Map<string, string[]>();
  for (const rdn of children(name)) {
    for (const atv of children(rdn)) {
      const [type, value] = children(atv);
      if (!type || !value) continue;
      const text = decodeString(value);
      const id = decodeOid(type.value);
      found.set(id, [...(found.get(id) ?? []), text ?? '']);
    }
  }
  const one = (id: string): string | undefined => {
    const values = found.get(id);
    return values?.length === 1 ? values[0] : undefined;
  };
  return { O: one(OID.organization), OU: one(OID.organizationalUnit), CN: one(OID.commonName) };
}

/**
 * The SPIFFE ID and subject of a leaf SVID, or an IdentityError('ERR_NOT_SVID') saying why the
 * certificate is not one. SPIFFE X.509-SVID §2: exactly one URI SAN ("Validators encountering an
 * SVID containing more than one URI SAN MUST reject the SVID"); §5.2 Leaf Validation: CA false,
 * neither keyCertSign nor cRLSign, scheme spiffe, a non-root path.
 */
export function readSvid(cert: X509Certificate): Svid {
  let facts: CertificateFacts;
  try {
    facts = certificateFacts(cert.raw);
  } catch (e) {
    throw new IdentityError('ERR_NOT_SVID', `the certificate does not parse: ${(e as Error).message}`);
  }
  if (facts.duplicateExtension) throw new IdentityError('ERR_NOT_SVID', 'an extension appears twice');
  if (facts.uris.length !== 1) {
    throw new IdentityError('ERR_NOT_SVID', `the certificate has ${facts.uris.length} URI SANs, not one`);
  }
  const spiffeId = facts.uris[0]!;
  const parsed = parseSpiffeId(spiffeId);
  if (!parsed) throw new IdentityError('ERR_NOT_SVID', 'the URI SAN is not a SPIFFE ID');
  if (parsed.path === '') throw new IdentityError('ERR_NOT_SVID', 'a leaf SPIFFE ID needs a path');
  if (cert.ca || facts.signsCertificates) {
    throw new IdentityError('ERR_NOT_SVID', 'the certificate is a CA certificate, not a leaf');
  }
  return { spiffeId, subject: facts.subject };
}

/** Baton stores serials in lowercase hex of whole bytes; OpenSSL prints uppercase. */
export function normalizeSerial(hex: string): string {
  const s = hex.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
}
