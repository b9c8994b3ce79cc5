import { constants, createHash, type KeyObject, randomBytes, verify, X509Certificate } from 'node:crypto';
import { readCertificate } from '../../pki/certificate-reader';
import { allPem, children, decodeOid, readWhole } from '../../pki/der-reader';
import { OID } from '../../pki/oids';
import { BatonError } from '../../ground/errors';
import type { NodeRole } from '../ports';
import type { Attestor } from './attestor';

/**
 * x509pop (issue 3): proof of possession of a certificate chained to a configured provisioning CA,
 * as in SPIRE's x509pop node attestor, so that a node can re-attest after a long downtime without a
 * new join token.
 *
 * 1. `POST /v1/attest/challenge {"method":"x509pop"}` → a nonce (32 random bytes, base64url) that
 *    lives 5 minutes in `attestation_nonces`: no in-process state, because several replicas share
 *    one database and the challenge and the attestation may reach different replicas.
 * 2. `POST /v1/attest {"method":"x509pop","certificate_chain","nonce","signature","csr"}` (read by
 *    the HTTP edge into X509popEvidence), where `signature` is the base64 signature by the
 *    provisioning leaf's key over the UTF-8 bytes of
 *
 *        "baton-x509pop-v1\n" + nonce + "\n" + base64url(SHA-256(CSR DER))      (no trailing newline)
 *
 *    ECDSA P-256 / P-384 with SHA-256 / SHA-384 (DER Ecdsa-Sig-Value, RFC 3279 §2.2.3) or RSA
 *    PKCS#1 v1.5 with SHA-256 (RFC 8017 §8.2). Binding the CSR's hash stops a stolen nonce and
 *    signature from being replayed with another key; the version label keeps the bytes from meaning
 *    anything in another protocol.
 *
 * The chain (leaf first, then optional intermediates) must lead to a configured provisioning CA,
 * every certificate valid at the injected clock's now. The nonce is spent by the statement that
 * records the certificate (IssuancePolicy.spend), so a refused issuance spends nothing and a nonce
 * gives at most one certificate, whichever replica sees it.
 *
 * The node id is `x509pop-` + the first 16 hex digits of the SHA-256 of the leaf's
 * SubjectPublicKeyInfo: re-attesting with the same provisioning key finds the same node (SPIRE
 * derives its agent id from the certificate the same way), and a revoked node stays refused.
 * The role is the server's `--x509pop-role`, never anything the node sends.
 */
export const X509POP_METHOD = 'x509pop';
export const X509POP_NONCE_TTL_MS = 5 * 60_000;
export const X509POP_SIGNED_PREFIX = 'baton-x509pop-v1\n';

export interface X509popSettings {
  /** The provisioning CA certificates (trust anchors), parsed once at start. */
  readonly cas: readonly X509Certificate[];
  /** The role of every node that attests this way (`--x509pop-role`, default worker). */
  readonly role: NodeRole;
}

/**
 * A leaf and up to four intermediates: deeper provisioning hierarchies are not worth the work per
 * request (the edge refuses a longer chain before it parses the certificates).
 */
export const X509POP_MAX_CHAIN_CERTS = 5;

/**
 * The evidence of an x509pop attestation, as the edge read it (http/attestation-evidence.ts): the
 * presented chain (leaf first, at most X509POP_MAX_CHAIN_CERTS), the nonce of a challenge and the
 * signature by the leaf's key over x509popSignedBytes(nonce, CSR).
 */
export interface X509popEvidence {
  readonly chain: readonly [PresentedCertificate, ...PresentedCertificate[]];
  readonly nonce: string;
  readonly signature: Buffer;
}

/**
 * A certificate of the presented chain: node:crypto's reading, and the fields node:crypto does not
 * expose (x509popProfile), read when the path check first needs them, so that the refusals keep
 * their order; `profile()` throws the refusal of a certificate the strict reader cannot read.
 */
export interface PresentedCertificate {
  readonly cert: X509Certificate;
  profile(): CertificateProfile;
}

/**
 * Extensions this verifier understands. RFC 5280 §6.1.4 (o)/§4.2: a certificate with a critical
 * extension the verifier does not process (name constraints, policy constraints …) is refused.
 */
const KNOWN_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
]);

/** Certificate signature algorithms accepted in a presented chain: no MD5, no SHA-1. */
const CHAIN_SIGNATURE_ALGORITHMS = new Set<string>([
  OID.ecdsaWithSHA256,
  OID.ecdsaWithSHA384,
  '1.2.840.10045.4.3.4', // ecdsa-with-SHA512, RFC 5758 §3.2
  OID.sha256WithRSAEncryption,
  OID.sha384WithRSAEncryption,
  OID.sha512WithRSAEncryption,
  '1.2.840.113549.1.1.10', // RSASSA-PSS, RFC 4055 §3.1
  '1.3.101.112', // Ed25519, RFC 8410 §3
]);

const failed = (message: string): BatonError => new BatonError('ERR_ATTESTATION_FAILED', message);

/** The exact bytes the provisioning key signs (see the module comment). */
export function x509popSignedBytes(nonce: string, csrDer: Uint8Array): Buffer {
  const csrHash = createHash('sha256').update(csrDer).digest('base64url');
  return Buffer.from(`${X509POP_SIGNED_PREFIX}${nonce}\n${csrHash}`, 'utf8');
}

/** `x509pop-` + 16 hex digits of SHA-256(leaf SPKI): stable across re-attestations with one key. */
export function x509popNodeId(leaf: X509Certificate): string {
  const spki = readCertificate(Buffer.from(leaf.raw)).spkiRaw;
  return `x509pop-${createHash('sha256').update(spki).digest('hex').slice(0, 16)}`;
}

/**
 * Parses the provisioning CA bundle (server configuration): one or more PEM certificates, each a CA
 * (basicConstraints cA TRUE). Throws ERR_CONFIG_INVALID naming `what` on anything else, so a bad
 * file stops the server at start instead of failing every attestation.
 */
export function parseProvisioningCas(pem: string, what: string): X509Certificate[] {
  const invalid = (why: string) => new BatonError('ERR_CONFIG_INVALID', `${what}: ${why}`);
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw invalid('the file contains a private key: give only the provisioning CA certificates');
  }
  const ders = allPem(pem, 'CERTIFICATE');
  if (ders.length === 0) throw invalid('no PEM certificate found');
  return ders.map((der, i) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(der);
      readCertificate(der);
    } catch {
      throw invalid(`certificate ${i + 1} cannot be parsed`);
    }
    if (!cert.ca) throw invalid(`certificate ${i + 1} is not a CA certificate (basicConstraints cA)`);
    return cert;
  });
}

export function x509popAttestor(
  settings: X509popSettings,
): Attestor<X509popEvidence> & { readonly method: typeof X509POP_METHOD } {
  if (settings.cas.length === 0) throw new BatonError('ERR_CONFIG_INVALID', 'x509pop: no provisioning CA');
  // The anchors' own fields are read once, not on every attestation.
  const anchors: Anchor[] = settings.cas.map((cert) => ({ cert, profile: x509popProfile(cert) }));
  return {
    method: X509POP_METHOD,
    async challenge(deps) {
      const nonce = randomBytes(32).toString('base64url');
      const expiresAt = new Date(deps.clock.now().getTime() + X509POP_NONCE_TTL_MS);
      await deps.repos.nonces.insert(nonce, X509POP_METHOD, expiresAt);
      return { nonce, expiresAt };
    },
    async verify(deps, { chain, nonce, signature }) {
      const [leaf, ...intermediates] = chain;
      const now = deps.clock.now();
      verifyChain(leaf, intermediates, anchors, now);
      if (!verifyPossession(leaf.cert.publicKey, x509popSignedBytes(nonce, deps.csrDer), signature)) {
        throw failed('the signature does not verify with the provisioning certificate key');
      }
      return {
        method: X509POP_METHOD,
        nodeId: x509popNodeId(leaf.cert),
        role: settings.role,
        certTtlMs: null,
        spend: { kind: 'nonce', nonce, method: X509POP_METHOD },
      };
    },
  };
}

/** What path validation reads of a certificate besides node:crypto's X509Certificate. */
export interface CertificateProfile {
  notBefore: Date;
  notAfter: Date;
  /** basicConstraints pathLenConstraint; undefined when absent. */
  pathLen: number | undefined;
  /** keyUsage bits as the first two content octets (bit 0 = 0x80 of the first); undefined when absent. */
  keyUsage: number | undefined;
  unknownCritical: boolean;
  signatureOid: string;
}

interface Anchor {
  cert: X509Certificate;
  profile: CertificateProfile;
}

const KU_DIGITAL_SIGNATURE = 0x8000;
const KU_KEY_CERT_SIGN = 0x0400;

/**
 * The fields node:crypto does not expose, read with the strict DER reader; a certificate it cannot
 * read is a malformed request (ERR_BAD_REQUEST).
 */
export function x509popProfile(cert: X509Certificate): CertificateProfile {
  try {
    const der = Buffer.from(cert.raw);
    const f = readCertificate(der);
    const [, sigAlg] = children(readWhole(der, 'certificate'), 'certificate');
    const [sigOid] = sigAlg ? children(sigAlg, 'certificate') : [];
    let pathLen: number | undefined;
    let keyUsage: number | undefined;
    for (const ext of f.extensions) {
      if (ext.oid === OID.basicConstraints) {
        // RFC 5280 §4.2.1.9: SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }
        const int = children(readWhole(ext.value, 'basicConstraints')).find((e) => e.tag === 0x02);
        if (int)
          pathLen =
            int.value.length > 4 ? Number.MAX_SAFE_INTEGER : int.value.readUIntBE(0, int.value.length);
      } else if (ext.oid === OID.keyUsage) {
        // RFC 5280 §4.2.1.3: KeyUsage ::= BIT STRING (first content octet: unused bits)
        const bits = readWhole(ext.value, 'keyUsage').value;
        keyUsage = ((bits[1] ?? 0) << 8) | (bits[2] ?? 0);
      }
    }
    return {
      notBefore: f.notBefore,
      notAfter: f.notAfter,
      pathLen,
      keyUsage,
      unknownCritical: f.extensions.some((e) => e.critical && !KNOWN_EXTENSIONS.has(e.oid)),
      signatureOid: sigOid?.tag === 0x06 ? decodeOid(sigOid.value) : '',
    };
  } catch {
    throw new BatonError('ERR_BAD_REQUEST', 'a certificate cannot be parsed');
  }
}

function isValidAt(p: CertificateProfile, now: Date): boolean {
  return p.notBefore.getTime() <= now.getTime() && now.getTime() <= p.notAfter.getTime();
}

const issues = (issuer: X509Certificate, subject: X509Certificate): boolean => {
  try {
    // subject.checkIssued(issuer): names, key identifiers and the issuer's keyCertSign (OpenSSL
    // X509_check_issued); then the signature itself.
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
};

/**
 * Builds the path leaf → intermediates → anchor (RFC 5280 §6.1, the parts a provisioning PKI uses):
 * signatures, validity at `now`, cA on every issuer, pathLenConstraint, keyUsage, and no unknown
 * critical extension. The search is greedy (first matching issuer), which is enough for the one
 * path a provisioning chain has; each intermediate is used at most once, so it ends.
 */
function verifyChain(
  leaf: PresentedCertificate,
  intermediates: readonly PresentedCertificate[],
  anchors: readonly Anchor[],
  now: Date,
): void {
  const leafProfile = checkPresented(leaf, now);
  if (leaf.cert.ca) throw failed('the provisioning certificate must not be a CA certificate');
  if (leafProfile.keyUsage !== undefined && !(leafProfile.keyUsage & KU_DIGITAL_SIGNATURE)) {
    throw failed('the provisioning certificate does not allow digitalSignature');
  }
  const used = new Set<number>();
  let current = leaf.cert;
  for (let below = 0; ; below++) {
    const anchor = anchors.find((a) => issues(a.cert, current));
    if (anchor) {
      const p = anchor.profile;
      if (!isValidAt(p, now)) throw failed('the provisioning CA certificate is expired or not yet valid');
      if (p.pathLen !== undefined && p.pathLen < below) throw failed('the certificate chain is too long');
      return;
    }
    const i = intermediates.findIndex((c, j) => !used.has(j) && issues(c.cert, current));
    if (i < 0) throw failed('the certificate chain does not lead to a provisioning CA');
    const issuer = intermediates[i]!;
    used.add(i);
    const p = checkPresented(issuer, now);
    if (!issuer.cert.ca) throw failed('an intermediate certificate is not a CA certificate');
    if (p.keyUsage !== undefined && !(p.keyUsage & KU_KEY_CERT_SIGN)) {
      throw failed('an intermediate certificate does not allow keyCertSign');
    }
    if (p.pathLen !== undefined && p.pathLen < below) throw failed('the certificate chain is too long');
    current = issuer.cert;
  }
}

/** Checks that apply to every certificate the node presents (leaf and intermediates). */
function checkPresented(presented: PresentedCertificate, now: Date): CertificateProfile {
  const p = presented.profile();
  if (!isValidAt(p, now)) throw failed('a certificate in the chain is expired or not yet valid');
  if (p.unknownCritical) throw failed('a certificate in the chain has an unsupported critical extension');
  if (!CHAIN_SIGNATURE_ALGORITHMS.has(p.signatureOid)) {
    throw failed('a certificate in the chain uses an unsupported signature algorithm');
  }
  return p;
}

/** ECDSA P-256/SHA-256, P-384/SHA-384 (DER signatures) or RSA PKCS#1 v1.5 with SHA-256. */
function verifyPossession(key: KeyObject, data: Buffer, signature: Buffer): boolean {
  let hash: 'sha256' | 'sha384';
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec' && details.namedCurve === 'prime256v1') hash = 'sha256';
  else if (key.asymmetricKeyType === 'ec' && details.namedCurve === 'secp384r1') hash = 'sha384';
  else if (key.asymmetricKeyType === 'rsa' && (details.modulusLength ?? 0) >= 2048) hash = 'sha256';
  else throw failed('unsupported provisioning key: use EC P-256, EC P-384 or RSA (2048 bits or more)');
  try {
    // Explicit so that a future default cannot change the scheme: DER ECDSA, RSA PKCS#1 v1.5.
    return verify(hash, data, { key, dsaEncoding: 'der', padding: constants.RSA_PKCS1_PADDING }, signature);
  } catch {
    return false;
  }
}
