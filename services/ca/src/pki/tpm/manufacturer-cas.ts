import { createHash, X509Certificate } from 'node:crypto';
import { BatonError } from '../../ground/errors';
import { readBasicConstraints } from '../ca-constraints';
import { readCertificate } from '../certificate-reader';
import { allPem } from '../der-reader';
import { OID } from '../oids';

/** A manufacturer CA certificate read from a PEM file (`baton tpm ca add FILE`). */
export interface ManufacturerCaCertificate {
  der: Buffer;
  /** Lowercase hex SHA-256 of the DER: the CA's identity in Baton. */
  fingerprint: string;
  /** RFC 2253 form, as OpenSSL prints it (one line). */
  subject: string;
  notBefore: Date;
  notAfter: Date;
}

/** A manufacturer's root and the intermediates that issue EK certificates are a handful. */
export const MAX_MANUFACTURER_CAS_PER_FILE = 32;

const refused = (why: string): BatonError => new BatonError('ERR_BAD_REQUEST', why);

/**
 * Reads the CA certificates of a PEM file: one or more, each parsed strictly and a CA
 * (basicConstraints cA TRUE, RFC 5280 §4.2.1.9). A private key anywhere in the file is refused
 * first, so an admin who picked the wrong file learns it before the key goes further (the CLI
 * checks before it sends anything). Each refusal is ERR_BAD_REQUEST with a message that says which.
 */
export function readManufacturerCas(pem: string): ManufacturerCaCertificate[] {
  if (/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(pem)) {
    throw refused('the file contains a private key: give only the manufacturer CA certificates');
  }
  let ders: Buffer[];
  try {
    ders = allPem(pem, 'CERTIFICATE');
  } catch {
    throw refused('the PEM certificates cannot be decoded');
  }
  if (ders.length === 0) throw refused('no PEM certificate found');
  if (ders.length > MAX_MANUFACTURER_CAS_PER_FILE) {
    throw refused(`at most ${MAX_MANUFACTURER_CAS_PER_FILE} certificates at once`);
  }
  const seen = new Set<string>();
  return ders.map((der, i) => {
    let cert: X509Certificate;
    let fields: ReturnType<typeof readCertificate>;
    let isCa = false;
    try {
      cert = new X509Certificate(der);
      fields = readCertificate(der);
      const bc = fields.extensions.find((e) => e.oid === OID.basicConstraints);
      isCa = bc !== undefined && readBasicConstraints(bc.value).ca;
    } catch {
      throw refused(`certificate ${i + 1} cannot be parsed`);
    }
    if (!isCa) throw refused(`certificate ${i + 1} is not a CA certificate (basicConstraints cA)`);
    const fingerprint = createHash('sha256').update(der).digest('hex');
    if (seen.has(fingerprint)) throw refused(`certificate ${i + 1} appears twice in the file`);
    seen.add(fingerprint);
    return {
      der,
      fingerprint,
      // node:crypto gives undefined for an empty subject (the TCG profile allows one).
      subject: (cert.subject ?? '').split('\n').join(', '),
      notBefore: fields.notBefore,
      notAfter: fields.notAfter,
    };
  });
}
