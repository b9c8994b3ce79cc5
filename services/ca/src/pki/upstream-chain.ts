import { X509Certificate } from 'node:crypto';
import { BatonError, type BatonErrorCode } from '../ground/errors';
import {
  CA_EXTENSIONS,
  readBasicConstraints,
  readExtKeyUsage,
  readKeyUsage,
  readNameConstraints,
  readAuthorityKeyIdentifier,
  readSubjectKeyIdentifier,
  URI_NAME,
  uriHostMatches,
} from './ca-constraints';
import { type CertificateFields, readCertificate } from './certificate-reader';
import { allPem } from './der-reader';
import { KeyUsageBit } from './extensions';
import { OID } from './oids';

/**
 * The checks of `baton ca import` (docs/operations.md "Upstream CA"): the certificate an outside CA
 * signed for Baton's pending signing CA, and the chain to its root, verified as RFC 5280 §6.1 would
 * verify a leaf Baton signs under it, so that a chain Baton accepts is one openssl, GnuTLS and Go
 * accept for every leaf, and a refusal names the certificate and the rule. Nothing the certificates
 * claim is taken on trust: every signature is verified, every CA's constraints are read.
 */

export interface UpstreamCertificate {
  der: Buffer;
  fields: CertificateFields;
  x509: X509Certificate;
}

export interface UpstreamPath {
  /** Baton's signing CA, as the outside CA certified it. */
  signing: UpstreamCertificate;
  /** The outside CAs above it, nearest first; the last is the self-signed root. */
  outside: UpstreamCertificate[];
}

export interface UpstreamCheckParams {
  /** --cert: Baton's signing CA certificate first; any certificates after it join the chain. */
  certPem: string;
  /** --chain: the outside intermediates, if any, and the root. */
  chainPem: string;
  /** The pending signing CA's SubjectPublicKeyInfo DER. */
  spki: Buffer;
  trustDomain: string;
  now: Date;
}

/** A path longer than this is not an outside hierarchy but a loop or a mistake. */
const MAX_OUTSIDE_CAS = 8;

/**
 * Extensions a verifier must understand when critical (RFC 5280 §4.2: "MUST reject the certificate
 * if it encounters a critical extension it does not recognize"): the ones openssl, GnuTLS and Go all
 * process. A CA marking another one critical would make every leaf under it fail somewhere.
 */
const UNDERSTOOD = new Set<string>([
  OID.subjectKeyIdentifier,
  OID.keyUsage,
  OID.subjectAltName,
  OID.basicConstraints,
  CA_EXTENSIONS.nameConstraints,
  OID.cRLDistributionPoints,
  '2.5.29.32', // certificatePolicies
  OID.authorityKeyIdentifier,
  OID.extKeyUsage,
]);

const ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';

const fail = (code: BatonErrorCode, message: string): never => {
  throw new BatonError(code, message);
};

/** The subject as one line, for messages. */
const nameOf = (c: UpstreamCertificate): string => `"${c.x509.subject.split('\n').join(', ') || '(empty)'}"`;

function parsePem(pem: string, what: string): UpstreamCertificate[] {
  const blocks = allPem(pem, 'CERTIFICATE');
  if (blocks.length === 0) fail('ERR_UPSTREAM_INVALID', `${what}: expected PEM certificates`);
  return blocks.map((der) => {
    try {
      return { der, fields: readCertificate(der), x509: new X509Certificate(der) };
    } catch {
      return fail('ERR_UPSTREAM_INVALID', `${what}: a certificate does not parse`);
    }
  });
}

const extensionOf = (c: UpstreamCertificate, oid: string) => c.fields.extensions.find((e) => e.oid === oid);

/** RFC 5280 §6.1.3 (a)(1): the signature verifies with the issuer's public key. */
function signs(issuer: UpstreamCertificate, subject: UpstreamCertificate): boolean {
  try {
    return subject.x509.verify(issuer.x509.publicKey);
  } catch {
    return false;
  }
}

/** Self-signed: its own issuer by name (§6.1.3 (a)(4)), and its signature verifies with its own key. */
const isSelfSigned = (c: UpstreamCertificate): boolean =>
  c.fields.issuerRaw.equals(c.fields.subjectRaw) && signs(c, c);

/**
 * RFC 5280 §4.2.1.1: the authority key identifier of a certificate names its issuer's subject key
 * identifier; openssl (X509_check_akid) refuses a path where they differ, so a leaf Baton signs
 * would fail there although every signature verifies.
 */
function checkKeyIdentifiers(subject: UpstreamCertificate, issuer: UpstreamCertificate): void {
  const aki = extensionOf(subject, CA_EXTENSIONS.authorityKeyIdentifier);
  const ski = extensionOf(issuer, CA_EXTENSIONS.subjectKeyIdentifier);
  const keyId = aki ? readAuthorityKeyIdentifier(aki.value) : undefined;
  if (keyId && ski && !keyId.equals(readSubjectKeyIdentifier(ski.value)))
    fail(
      'ERR_UPSTREAM_CHAIN',
      `the authority key identifier of ${nameOf(subject)} is not the subject key identifier of its issuer ${nameOf(issuer)}`,
    );
}

/** Self-issued (RFC 5280 §6.1): issuer and subject are the same name; such a CA is not counted by pathLenConstraint. */
const isSelfIssued = (c: UpstreamCertificate): boolean => c.fields.issuerRaw.equals(c.fields.subjectRaw);

/**
 * Builds the path from `signing` through `pool` to a self-signed root: each step is a certificate
 * whose subject is the previous one's issuer (§6.1.3 (a)(4)) and whose key verifies its signature.
 */
function buildPath(signing: UpstreamCertificate, pool: UpstreamCertificate[]): UpstreamCertificate[] {
  const path: UpstreamCertificate[] = [];
  let current = signing;
  const left = [...pool];
  while (!isSelfSigned(current)) {
    if (path.length === MAX_OUTSIDE_CAS)
      fail('ERR_UPSTREAM_CHAIN', `the chain is longer than ${MAX_OUTSIDE_CAS} certificates`);
    const named = left.filter((c) => c.fields.subjectRaw.equals(current.fields.issuerRaw));
    if (named.length === 0)
      fail(
        'ERR_UPSTREAM_CHAIN',
        `the chain does not lead to a self-signed root: no certificate in it is the issuer of ${nameOf(current)}`,
      );
    const issuer = named.find((c) => signs(c, current));
    if (!issuer)
      fail(
        'ERR_UPSTREAM_CHAIN',
        `the signature of ${nameOf(current)} does not verify with the key of its issuer ${nameOf(named[0]!)}`,
      );
    checkKeyIdentifiers(current, issuer!);
    path.push(issuer!);
    left.splice(left.indexOf(issuer!), 1);
    current = issuer!;
  }
  if (left.length > 0)
    fail(
      'ERR_UPSTREAM_CHAIN',
      `the chain holds ${nameOf(left[0]!)}, which is not on the path from the certificate to its root`,
    );
  return path;
}

/**
 * RFC 5280 §4.2.1.9 and §4.2.1.3: a CA certificate (cA TRUE) whose key may sign certificates
 * (keyCertSign). keyUsage must be present: §4.2.1.3 requires it of every CA certificate whose key
 * verifies certificate signatures.
 */
function checkIsCa(c: UpstreamCertificate, role: string): number | undefined {
  const bc = extensionOf(c, CA_EXTENSIONS.basicConstraints);
  const constraints = bc ? readBasicConstraints(bc.value) : undefined;
  if (!constraints?.ca)
    fail('ERR_UPSTREAM_NOT_CA', `${role} ${nameOf(c)} is not a CA (basicConstraints cA is not true)`);
  const ku = extensionOf(c, CA_EXTENSIONS.keyUsage);
  if (!ku || !readKeyUsage(ku.value)(KeyUsageBit.keyCertSign))
    fail('ERR_UPSTREAM_NOT_CA', `${role} ${nameOf(c)} may not sign certificates (no keyCertSign key usage)`);
  return constraints!.pathLen;
}

/** RFC 5280 §6.1.3 (a)(2): within its validity at `now`. */
function checkValidity(c: UpstreamCertificate, role: string, now: Date): void {
  if (now.getTime() > c.fields.notAfter.getTime())
    fail('ERR_UPSTREAM_VALIDITY', `${role} ${nameOf(c)} expired at ${c.fields.notAfter.toISOString()}`);
  if (now.getTime() < c.fields.notBefore.getTime())
    fail(
      'ERR_UPSTREAM_VALIDITY',
      `${role} ${nameOf(c)} is not valid before ${c.fields.notBefore.toISOString()}`,
    );
}

/**
 * What every leaf under Baton's signing CA needs of each CA above it: no critical extension a
 * verifier would not process (§4.2), an extKeyUsage, if any, that allows serverAuth and clientAuth
 * (verifiers such as Go's nest it along the path), and name constraints that permit the trust
 * domain's SPIFFE IDs (§4.2.1.10: a URI constraint applies to the host, here the trust domain).
 */
function checkLeavesAllowed(c: UpstreamCertificate, role: string, trustDomain: string): void {
  const unknown = c.fields.extensions.find((e) => e.critical && !UNDERSTOOD.has(e.oid));
  if (unknown)
    fail(
      'ERR_UPSTREAM_CHAIN',
      `${role} ${nameOf(c)} has a critical extension ${unknown.oid} that verifiers do not process`,
    );
  const eku = extensionOf(c, CA_EXTENSIONS.extKeyUsage);
  if (eku) {
    const purposes = readExtKeyUsage(eku.value);
    const allows = (p: string) => purposes.includes(p) || purposes.includes(ANY_EXTENDED_KEY_USAGE);
    if (!allows(OID.serverAuth) || !allows(OID.clientAuth))
      fail(
        'ERR_UPSTREAM_CHAIN',
        `${role} ${nameOf(c)} restricts extended key usage without serverAuth and clientAuth`,
      );
  }
  const nc = extensionOf(c, CA_EXTENSIONS.nameConstraints);
  if (!nc) return;
  const { permitted, excluded } = readNameConstraints(nc.value);
  const id = `spiffe://${trustDomain}`;
  if (excluded.some((b) => b.type === URI_NAME && uriHostMatches(b.text!, trustDomain)))
    fail('ERR_UPSTREAM_NAME_CONSTRAINTS', `${role} ${nameOf(c)} excludes ${id} in its name constraints`);
  const uris = permitted.filter((b) => b.type === URI_NAME);
  if (uris.length > 0 && !uris.some((b) => uriHostMatches(b.text!, trustDomain)))
    fail(
      'ERR_UPSTREAM_NAME_CONSTRAINTS',
      `${role} ${nameOf(c)} does not permit ${id} in its name constraints`,
    );
}

/** Every check of `ca import`, in the order a refusal is most useful; the path, or a BatonError. */
export function checkUpstreamChain(p: UpstreamCheckParams): UpstreamPath {
  const [signing, ...attached] = parsePem(p.certPem, '--cert');
  const given = parsePem(p.chainPem, '--chain');
  // The same certificate in both files (a CA that returns its chain with the certificate) counts once.
  const pool = [...attached, ...given].filter(
    (c, i, all) => !c.der.equals(signing!.der) && all.findIndex((o) => o.der.equals(c.der)) === i,
  );
  const role = "Baton's signing CA certificate";
  if (!signing!.fields.spkiRaw.equals(p.spki))
    fail(
      'ERR_UPSTREAM_KEY_MISMATCH',
      `the certificate ${nameOf(signing!)} is not for the pending signing CA's key`,
    );
  checkIsCa(signing!, role);
  checkValidity(signing!, role, p.now);
  // RFC 5280 §4.1.2.6: a CA's subject is not empty; it is every leaf's issuer name.
  if (signing!.x509.subject === '') fail('ERR_UPSTREAM_NOT_CA', `${role} has an empty subject`);
  checkLeavesAllowed(signing!, role, p.trustDomain);
  if (isSelfSigned(signing!))
    fail('ERR_UPSTREAM_CHAIN', `${role} is self-signed: an outside CA must sign it`);

  const outside = buildPath(signing!, pool);
  outside.forEach((c, i) => {
    const what = i === outside.length - 1 ? 'the root' : 'the outside intermediate';
    const pathLen = checkIsCa(c, what);
    checkValidity(c, what, p.now);
    checkLeavesAllowed(c, what, p.trustDomain);
    // RFC 5280 §4.2.1.9: pathLenConstraint counts the non-self-issued intermediates that may follow;
    // below outside[i] come outside[0..i-1] and Baton's signing CA (the leaf is not counted). The
    // root's is checked too: openssl and GnuTLS enforce a trust anchor's constraint.
    const below = [signing!, ...outside.slice(0, i)].filter((b) => !isSelfIssued(b)).length;
    if (pathLen !== undefined && pathLen < below)
      fail(
        'ERR_UPSTREAM_PATH_LENGTH',
        `${what} ${nameOf(c)} has pathLenConstraint ${pathLen}, but ${below} CA certificate(s) would follow it (Baton's signing CA${i > 0 ? ' and the outside intermediates' : ''})`,
      );
  });
  return { signing: signing!, outside };
}
