/**
 * TPM 2.0 constants Baton's TPM attestation reads and writes (TCG TPM 2.0 Library, Part 2
 * "Structures", §6 and §8; TCG EK Credential Profile 2.x, Annex B). Only the values the server
 * meets: anything else in a structure is refused, not interpreted.
 */

/** TPM_ALG_ID (Part 2 §6.3). */
export const TPM_ALG = {
  RSA: 0x0001,
  SHA256: 0x000b,
  AES: 0x0006,
  MGF1: 0x0007,
  KEYEDHASH: 0x0008,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  SM2: 0x001b,
  ECSCHNORR: 0x001c,
  ECMQV: 0x001d,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

/** TPM_ECC_CURVE (Part 2 §6.4). */
export const TPM_ECC_NIST_P256 = 0x0003;

/** TPMA_OBJECT bits (Part 2 §8.3). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

/**
 * The objectAttributes of the default EK templates L-1 (RSA 2048) and L-2 (ECC NIST P-256): TCG EK
 * Credential Profile 2.x §B.3.3, Table 2: fixedTPM, fixedParent, sensitiveDataOrigin,
 * adminWithPolicy, restricted, decrypt (0x000300b2), exactly what `tpm2_createek` asks for.
 */
export const EK_TEMPLATE_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.adminWithPolicy |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.decrypt;

/**
 * The authPolicy of the default EK templates: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256 (TCG EK
 * Credential Profile 2.x §B.3.3 "Policy A"). Only a caller holding the endorsement hierarchy's
 * authorization can use the EK, e.g. to activate a credential.
 */
export const EK_AUTH_POLICY = Buffer.from(
  '837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa',
  'hex',
);

/** TPM_GENERATED_VALUE (Part 2 §6.2): the first field of every structure the TPM signs itself. */
export const TPM_GENERATED_VALUE = 0xff544347;
/** TPM_ST_ATTEST_QUOTE (Part 2 §6.9): a TPMS_ATTEST made by TPM2_Quote. */
export const TPM_ST_ATTEST_QUOTE = 0x8018;
/** TPM_RH_ENDORSEMENT (Part 2 §7.4): the handle, and so the Name, of the endorsement hierarchy. */
export const TPM_RH_ENDORSEMENT = 0x4000000b;

/** SHA-256, the one name algorithm and hash the exchange uses: its digest size in bytes. */
export const SHA256_SIZE = 32;
