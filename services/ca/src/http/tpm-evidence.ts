import type { TpmChallengeEvidence, TpmEvidence } from '../domain/attestation/tpm-attestor';
import { TPM_SECRET_BYTES } from '../domain/attestation/tpm-attestor';
import { readEkCertificate, readPublicArea, readQuote, readQuoteSignature } from '../pki/tpm';
import { atField, attestationNonce, base64Field } from './validate';

/**
 * The TPM method's fields (docs/api.md "TPM attestation"): standard base64 of the TPM's marshalled
 * bytes, each TPM2B with its size, exactly the `-f tss` files tpm2-tools writes. Each is bounded
 * before it is decoded and read strictly (pki/tpm); every refusal is 400 ERR_BAD_REQUEST naming
 * its field. Whether the keys are an EK and an AK Baton accepts is the attestor's to say (401).
 */

/** TPM2B_PUBLIC of an RSA 2048 key with a SHA-512 policy is under 400 bytes. */
const MAX_PUBLIC_BYTES = 1024;
/** EK certificates are 1–2 KB; 8 KB leaves room for a long chain of policies. */
const MAX_EK_CERTIFICATE_BYTES = 8 * 1024;
/** A TPMS_ATTEST of a quote is about 150 bytes; a TPMT_SIGNATURE at most 4 + 512. */
const MAX_QUOTE_BYTES = 1024;
const MAX_SIGNATURE_BYTES = 1024;
/** The smallest TPM2B_PUBLIC this reader could accept (an ECC key with empty points). */
const MIN_PUBLIC_BYTES = 2;

/** POST /v1/attest/challenge `{"method":"tpm","ek_public","ek_certificate"?,"ak_public"}`. */
export function readTpmChallengeEvidence(payload: Record<string, unknown>): TpmChallengeEvidence {
  const ekBytes = base64Field(payload, 'ek_public', {
    min: MIN_PUBLIC_BYTES,
    max: MAX_PUBLIC_BYTES,
    what: 'the EK TPM2B_PUBLIC',
  });
  const ek = atField('ek_public', () => readPublicArea(ekBytes));
  let ekCertificate: TpmChallengeEvidence['ekCertificate'] = null;
  if (payload.ek_certificate !== undefined && payload.ek_certificate !== null) {
    const der = base64Field(payload, 'ek_certificate', {
      min: 1,
      max: MAX_EK_CERTIFICATE_BYTES,
      what: 'the EK certificate DER',
    });
    ekCertificate = atField('ek_certificate', () => readEkCertificate(der));
  }
  const akBytes = base64Field(payload, 'ak_public', {
    min: MIN_PUBLIC_BYTES,
    max: MAX_PUBLIC_BYTES,
    what: 'the AK TPM2B_PUBLIC',
  });
  const ak = atField('ak_public', () => readPublicArea(akBytes));
  return { ek, ak, ekCertificate };
}

/** POST /v1/attest `{"method":"tpm","nonce","secret","quote","quote_signature","csr"}`. */
export function readTpmEvidence(payload: Record<string, unknown>): TpmEvidence {
  const nonce = attestationNonce(payload.nonce);
  const secret = base64Field(payload, 'secret', {
    min: TPM_SECRET_BYTES,
    max: TPM_SECRET_BYTES,
    what: 'the activated credential',
  });
  const quoteBytes = base64Field(payload, 'quote', { min: 1, max: MAX_QUOTE_BYTES, what: 'the TPMS_ATTEST' });
  const quote = atField('quote', () => readQuote(quoteBytes));
  const sigBytes = base64Field(payload, 'quote_signature', {
    min: 1,
    max: MAX_SIGNATURE_BYTES,
    what: 'the TPMT_SIGNATURE',
  });
  const signature = atField('quote_signature', () => readQuoteSignature(sigBytes));
  return { nonce, secret, quote, signature };
}
