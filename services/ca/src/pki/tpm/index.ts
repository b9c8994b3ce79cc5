/**
 * TPM 2.0 node attestation, the server's cryptography (issue 19): reading the structures a node's
 * TPM makes, names, TPM2_MakeCredential, quotes and EK certificates. Pure: no storage, no clock
 * but the `now` it is given. Written here because no maintained npm library does this; node:crypto
 * does the primitives.
 */
export { EK_AUTH_POLICY, EK_TEMPLATE_ATTRIBUTES, TPM_ALG, TPMA_OBJECT } from './constants';
export {
  checkEkCertificate,
  type EkCertificate,
  type ManufacturerAnchor,
  readEkCertificate,
} from './ek-certificate';
export { kdfa, kdfe } from './kdf';
export { type Credential, type FixedCredentialInputs, makeCredential } from './make-credential';
export {
  MAX_MANUFACTURER_CAS_PER_FILE,
  type ManufacturerCaCertificate,
  readManufacturerCas,
} from './manufacturer-cas';
export { tpm2b, TpmReader, u16, u32 } from './marshal';
export { ekIdentifier, objectName, publicKeyOf, qualifiedNameUnderEk, tpmNodeId } from './names';
export { checkAttestationKey, checkEndorsementKey } from './profiles';
export { type EccPublicArea, type PublicArea, type RsaPublicArea, readPublicArea } from './public-area';
export {
  type Quote,
  type QuoteSignature,
  readQuote,
  readQuoteSignature,
  tpmQualifyingData,
  verifyQuoteSignature,
} from './quote';
