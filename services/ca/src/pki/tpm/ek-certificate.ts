import { X509Certificate } from 'node:crypto';
import { BatonError } from '../../ground/errors';
import { readBasicConstraints, readKeyUsage } from '../ca-constraints';
import { readCertificate } from '../certificate-reader';
import { children, decodeOid, readWhole } from '../der-reader';
import { OID } from '../oids';

/**
 * The EK certificate a TPM manufacturer issues (TCG EK Credential Profile 2.x §3): the path from it
 * to a manufacturer CA added with `baton tpm ca add`. Every certificate added there is a trust
 * anchor (RFC 5280 §6.1.1 (d)): the EK certificate must be issued directly by one of them, so an
 * admin adds the manufacturer's root and the intermediates that issue EK certificates.
 */

/** An EK certificate as read from the request: node:crypto's view and the fields it does not expose. */
export interface EkCertificate {
  readonly cert: X509Certificate;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly unknownCritical: boolean;
  readonly isCa: boolean;
  /** keyUsage bit `n` (RFC 5280 §4.2.1.3); undefined when the extension is absent. */
  readonly keyUsage: ((bit: number) => boolean) | undefined;
  readonly signatureOid: string;
}

const TCG = {
  /** RFC 3739 §3.2.2 / RFC 5280 §4.2.1.8: where the TCG profile puts the TPM's security assertions. */
  subjectDirectoryAttributes: '2.5.29.9',
  certificatePolicies: '2.5.29.32',
} as const;

/**
 * Extensions an EK certificate may carry that this verifier accepts even when critical. The TCG
 * profile (§3.2) makes subjectAltName critical (a directoryName with the TPM manufacturer, model and
 * version, OIDs 2.23.133.2.1/2/3) when the subject is empty; the others are the profile's too.
 * Any other critical extension is refused (RFC 5280 §4.2: a certificate with a critical extension
 * the verifier does not recognize must be rejected).
 */
const KNOWN_EXTENSIONS = new Set<string>([
  OID.subjectAltName,
  TCG.certificatePolicies,
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.authorityKeyIdentifier,
  OID.subjectKeyIdentifier,
  TCG.subjectDirectoryAttributes,
  OID.authorityInfoAccess,
  OID.cRLDistributionPoints,
]);

/** Signature algorithms accepted on an EK certificate: no MD5, no SHA-1. */
const SIGNATURE_ALGORITHMS = new Set<string>([
  OID.ecdsaWithSHA256,
  OID.ecdsaWithSHA384,
  '1.2.840.10045.4.3.4', // ecdsa-with-SHA512, RFC 5758 §3.2
  OID.sha256WithRSAEncryption,
  OID.sha384WithRSAEncryption,
  OID.sha512WithRSAEncryption,
  '1.2.840.113549.1.1.10', // RSASSA-PSS, RFC 4055 §3.1
]);

/** RFC 5280 §4.2.1.3 KeyUsage bits. */
const KU_KEY_ENCIPHERMENT = 2;
const KU_KEY_AGREEMENT = 4;

/** Reads a DER EK certificate; anything node:crypto or the strict reader cannot read is ERR_BAD_REQUEST. */
export function readEkCertificate(der: Buffer): EkCertificate {
  try {
    const cert = new X509Certificate(der);
    const f = readCertificate(der);
    const [, sigAlg] = children(readWhole(der, 'certificate'), 'certificate');
    const [sigOid] = sigAlg ? children(sigAlg, 'certificate') : [];
    let isCa = false;
    let keyUsage: EkCertificate['keyUsage'];
    for (const ext of f.extensions) {
      if (ext.oid === OID.basicConstraints) isCa = readBasicConstraints(ext.value).ca;
      else if (ext.oid === OID.keyUsage) keyUsage = readKeyUsage(ext.value);
    }
    return {
      cert,
      notBefore: f.notBefore,
      notAfter: f.notAfter,
      unknownCritical: f.extensions.some((e) => e.critical && !KNOWN_EXTENSIONS.has(e.oid)),
      isCa,
      keyUsage,
      signatureOid: sigOid?.tag === 0x06 ? decodeOid(sigOid.value) : '',
    };
  } catch {
    throw new BatonError('ERR_BAD_REQUEST', 'the EK certificate cannot be parsed (DER X.509 expected)');
  }
}

/** A manufacturer CA as the check needs it: the certificate and its validity. */
export interface ManufacturerAnchor {
  readonly cert: X509Certificate;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** The refusals of an EK certificate: the TPM is then unknown, with a short reason safe to show. */
const unknownTpm = (why: string): BatonError =>
  new BatonError('ERR_ATTESTATION_FAILED', `unknown TPM: ${why}`);

const validAt = (c: { notBefore: Date; notAfter: Date }, now: Date): boolean =>
  c.notBefore.getTime() <= now.getTime() && now.getTime() <= c.notAfter.getTime();

/**
 * Checks an EK certificate for the EK whose SubjectPublicKeyInfo is `ekSpki` and returns the
 * anchor that issued it. In order: it certifies this EK, it is valid at `now`, no critical extension
 * it does not know, not a CA, keyUsage (when present) allows what an EK does (keyEncipherment for
 * RSA, keyAgreement for ECC: TCG EK Credential Profile §3.2.10), an accepted signature algorithm,
 * and an anchor that issued it (names, key identifiers and keyCertSign: OpenSSL's
 * X509_check_issued, then the signature), itself valid at `now`.
 */
export function checkEkCertificate<A extends ManufacturerAnchor>(
  ekCert: EkCertificate,
  ek: { spki: Buffer; type: 'rsa' | 'ecc' },
  anchors: readonly A[],
  now: Date,
): A {
  if (!certifies(ekCert.cert, ek.spki)) throw unknownTpm('the EK certificate is for another key');
  if (!validAt(ekCert, now)) throw unknownTpm('the EK certificate is expired or not yet valid');
  if (ekCert.unknownCritical) throw unknownTpm('the EK certificate has an unsupported critical extension');
  if (ekCert.isCa) throw unknownTpm('the EK certificate is a CA certificate');
  const usage = ek.type === 'rsa' ? KU_KEY_ENCIPHERMENT : KU_KEY_AGREEMENT;
  if (ekCert.keyUsage && !ekCert.keyUsage(usage)) {
    throw unknownTpm(
      `the EK certificate does not allow ${ek.type === 'rsa' ? 'keyEncipherment' : 'keyAgreement'}`,
    );
  }
  if (!SIGNATURE_ALGORITHMS.has(ekCert.signatureOid)) {
    throw unknownTpm('the EK certificate uses an unsupported signature algorithm');
  }
  const anchor = anchors.find((a) => issued(a.cert, ekCert.cert));
  if (!anchor) throw unknownTpm('the EK certificate is not issued by a manufacturer CA');
  if (!validAt(anchor, now)) throw unknownTpm('the manufacturer CA certificate is expired or not yet valid');
  return anchor;
}

/** Whether the certificate's key is the one of `spki` (node:crypto re-encodes it; a key type it cannot read is not). */
function certifies(cert: X509Certificate, spki: Buffer): boolean {
  try {
    return cert.publicKey.export({ type: 'spki', format: 'der' }).equals(spki);
  } catch {
    return false;
  }
}

function issued(issuer: X509Certificate, subject: X509Certificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}
