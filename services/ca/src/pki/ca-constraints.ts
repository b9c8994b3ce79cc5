import { BatonError } from '../ground/errors';
import { children, decodeOid, readWhole, type Tlv } from './der-reader';
import type { CertificateFields } from './certificate-reader';
import { keyIdentifier } from './keys';
import { OID } from './oids';

/**
 * Readers of the CA-related extensions of a certificate that Baton did not make (an outside CA's,
 * `baton ca import`): basicConstraints, keyUsage, extKeyUsage, subjectKeyIdentifier and
 * nameConstraints (RFC 5280 §4.2.1). Each takes the extnValue's content (certificate-reader.ts) and
 * throws ERR_UPSTREAM_INVALID on a malformed one.
 */

const malformed = (what: string): BatonError =>
  new BatonError('ERR_UPSTREAM_INVALID', `malformed ${what} extension`);

function read(value: Buffer, what: string): Tlv {
  try {
    return readWhole(value, what);
  } catch {
    throw malformed(what);
  }
}

function kids(el: Tlv, what: string): Tlv[] {
  try {
    return children(el, what);
  } catch {
    throw malformed(what);
  }
}

/** RFC 5280 §4.2.1.9: BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER (0..MAX) OPTIONAL }. */
export function readBasicConstraints(value: Buffer): { ca: boolean; pathLen: number | undefined } {
  const what = 'basicConstraints';
  const outer = read(value, what);
  if (outer.tag !== 0x30) throw malformed(what);
  let ca = false;
  let pathLen: number | undefined;
  for (const el of kids(outer, what)) {
    if (el.tag === 0x01 && el.value.length === 1) ca = el.value[0] !== 0;
    else if (el.tag === 0x02 && el.value.length >= 1 && el.value.length <= 4 && !(el.value[0]! & 0x80))
      pathLen = el.value.readUIntBE(0, el.value.length);
    else throw malformed(what);
  }
  return { ca, pathLen };
}

/** RFC 5280 §4.2.1.3: KeyUsage ::= BIT STRING; bit 0 is the most significant bit of the first octet. */
export function readKeyUsage(value: Buffer): (bit: number) => boolean {
  const el = read(value, 'keyUsage');
  if (el.tag !== 0x03 || el.value.length < 1) throw malformed('keyUsage');
  const bits = el.value.subarray(1);
  return (bit) => ((bits[bit >> 3] ?? 0) & (0x80 >> (bit & 7))) !== 0;
}

/** RFC 5280 §4.2.1.12: ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId. */
export function readExtKeyUsage(value: Buffer): string[] {
  const outer = read(value, 'extKeyUsage');
  if (outer.tag !== 0x30) throw malformed('extKeyUsage');
  return kids(outer, 'extKeyUsage').map((el) => {
    if (el.tag !== 0x06) throw malformed('extKeyUsage');
    return decodeOid(el.value);
  });
}

/**
 * The key identifier of a CA certificate, which its leaves' and CRLs' AKI must repeat (RFC 5280
 * §4.2.1.1): the certificate's SKI, which an outside CA may have computed its own way (§4.2.1.2),
 * else Baton's keyIdentifier (what Baton's own CA certificates carry as their SKI).
 */
export function caKeyIdentifier(fields: Pick<CertificateFields, 'extensions' | 'spkiRaw'>): Buffer {
  const ski = fields.extensions.find((e) => e.oid === OID.subjectKeyIdentifier);
  return ski ? readSubjectKeyIdentifier(ski.value) : keyIdentifier(fields.spkiRaw);
}

/** RFC 5280 §4.2.1.2: SubjectKeyIdentifier ::= KeyIdentifier (OCTET STRING). */
export function readSubjectKeyIdentifier(value: Buffer): Buffer {
  const el = read(value, 'subjectKeyIdentifier');
  if (el.tag !== 0x04 || el.value.length === 0) throw malformed('subjectKeyIdentifier');
  return Buffer.from(el.value);
}

/**
 * RFC 5280 §4.2.1.1: AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING
 * OPTIONAL, authorityCertIssuer [1] OPTIONAL, authorityCertSerialNumber [2] OPTIONAL }: the key
 * identifier, when present.
 */
export function readAuthorityKeyIdentifier(value: Buffer): Buffer | undefined {
  const outer = read(value, 'authorityKeyIdentifier');
  if (outer.tag !== 0x30) throw malformed('authorityKeyIdentifier');
  const keyId = kids(outer, 'authorityKeyIdentifier').find((el) => el.tag === 0x80);
  return keyId ? Buffer.from(keyId.value) : undefined;
}

/** A GeneralName of a name constraint: its CHOICE tag number and, for the IA5 forms, the text. */
export interface ConstraintBase {
  /** RFC 5280 §4.2.1.6 GeneralName tag: 1 rfc822Name, 2 dNSName, 4 directoryName, 6 URI, 7 iPAddress … */
  type: number;
  text?: string;
}

export interface NameConstraints {
  permitted: ConstraintBase[];
  excluded: ConstraintBase[];
}

/**
 * RFC 5280 §4.2.1.10: NameConstraints ::= SEQUENCE { permittedSubtrees [0] GeneralSubtrees OPTIONAL,
 * excludedSubtrees [1] GeneralSubtrees OPTIONAL }; GeneralSubtree ::= SEQUENCE { base GeneralName,
 * minimum [0] DEFAULT 0, maximum [1] OPTIONAL } (minimum and maximum are not used in this profile).
 */
export function readNameConstraints(value: Buffer): NameConstraints {
  const what = 'nameConstraints';
  const outer = read(value, what);
  if (outer.tag !== 0x30) throw malformed(what);
  const out: NameConstraints = { permitted: [], excluded: [] };
  for (const subtrees of kids(outer, what)) {
    const list = subtrees.tag === 0xa0 ? out.permitted : subtrees.tag === 0xa1 ? out.excluded : undefined;
    if (!list) throw malformed(what);
    for (const subtree of kids(subtrees, what)) {
      const [base] = subtree.tag === 0x30 ? kids(subtree, what) : [];
      if (!base || (base.tag & 0xc0) !== 0x80) throw malformed(what);
      const type = base.tag & 0x1f;
      // rfc822Name [1], dNSName [2] and URI [6] are IA5String, implicitly tagged (primitive).
      list.push(
        type === 1 || type === 2 || type === 6 ? { type, text: base.value.toString('latin1') } : { type },
      );
    }
  }
  return out;
}

/**
 * RFC 5280 §4.2.1.10, URIs: "The constraint applies to the host part of the name", a host
 * ("host.example.com": that host only) or, beginning with a period, a domain (".example.com": any
 * host under it, not example.com itself). Case-insensitive (DNS names, RFC 4343).
 */
export function uriHostMatches(constraint: string, host: string): boolean {
  const c = constraint.toLowerCase();
  const h = host.toLowerCase();
  return c.startsWith('.') ? h.endsWith(c) && h.length > c.length : h === c;
}

/** GeneralName tag of a URI constraint (RFC 5280 §4.2.1.6 uniformResourceIdentifier [6]). */
export const URI_NAME = 6;

export const CA_EXTENSIONS = {
  basicConstraints: OID.basicConstraints,
  keyUsage: OID.keyUsage,
  extKeyUsage: OID.extKeyUsage,
  subjectKeyIdentifier: OID.subjectKeyIdentifier,
  authorityKeyIdentifier: OID.authorityKeyIdentifier,
  nameConstraints: '2.5.29.30',
} as const;
