import { BatonError } from '../../ground/errors';
import {
  EK_AUTH_POLICY,
  EK_TEMPLATE_ATTRIBUTES,
  SHA256_SIZE,
  TPM_ALG,
  TPM_ECC_NIST_P256,
  TPMA_OBJECT,
} from './constants';
import type { PublicArea } from './public-area';

/**
 * What Baton accepts as an endorsement key and as an attestation key. The checks are on the public
 * area the node sent; the TPM vouches for them later: TPM2_ActivateCredential releases the secret
 * only when the EK's private key decrypts it and an object with exactly this AK public area (its
 * Name, attributes included) is loaded beside it (Part 1 §24).
 */

const RSA_2048_BYTES = 256;

/** Each refusal names what is wrong; nothing in it is secret (the node sent the public area). */
const notAnEk = (why: string): BatonError =>
  new BatonError('ERR_ATTESTATION_FAILED', `the endorsement key is not a TCG default EK: ${why}`);
const notAnAk = (why: string): BatonError =>
  new BatonError('ERR_ATTESTATION_FAILED', `the attestation key is not a restricted signing key: ${why}`);

/**
 * The default EK templates of the TCG EK Credential Profile 2.x §B.3.3: L-1 (RSA 2048, `tpm2_createek
 * -G rsa`) and L-2 (ECC NIST P-256, `-G ecc`). Exactly: name algorithm SHA-256, the template's
 * attributes (a restricted decryption key that never leaves the TPM: no sign, no userWithAuth),
 * PolicySecret(TPM_RH_ENDORSEMENT), AES-128-CFB for its children, no scheme, and the key size.
 * The EK certificate a manufacturer issues certifies a key made from one of these templates, and
 * MakeCredential depends on the EK being a storage key with this symmetric algorithm.
 */
export function checkEndorsementKey(ek: PublicArea): void {
  if (ek.nameAlg !== TPM_ALG.SHA256) throw notAnEk('its name algorithm is not SHA-256');
  if (ek.attributes !== EK_TEMPLATE_ATTRIBUTES) {
    throw notAnEk(
      (ek.attributes & TPMA_OBJECT.sign) !== 0
        ? 'it is a signing key'
        : 'its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt',
    );
  }
  if (!ek.authPolicy.equals(EK_AUTH_POLICY))
    throw notAnEk('its policy is not PolicySecret(TPM_RH_ENDORSEMENT)');
  const sym = ek.symmetric;
  if (!sym || sym.alg !== TPM_ALG.AES || sym.keyBits !== 128 || sym.mode !== TPM_ALG.CFB) {
    throw notAnEk('its symmetric algorithm is not AES-128-CFB');
  }
  if (ek.scheme !== null) throw notAnEk('it has a scheme');
  if (ek.type === 'rsa') {
    if (ek.keyBits !== 2048 || ek.modulus.length !== RSA_2048_BYTES || (ek.modulus[0]! & 0x80) === 0) {
      throw notAnEk('it is not an RSA 2048 key');
    }
    if (ek.exponent !== 0) throw notAnEk('its exponent is not the default');
  } else {
    if (ek.curve !== TPM_ECC_NIST_P256 || ek.x.length !== SHA256_SIZE || ek.y.length !== SHA256_SIZE) {
      throw notAnEk('it is not an ECC NIST P-256 key');
    }
    if (ek.kdf !== null) throw notAnEk('it has a KDF scheme');
  }
}

/** The attributes an AK must have: made inside this TPM, never to leave it, and restricted to sign. */
const AK_REQUIRED =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign;

/**
 * An attestation key as `tpm2_createak -G ecc -g sha256 -s ecdsa` makes it (ECC P-256, ECDSA with
 * SHA-256), or `-G rsa -g sha256 -s rsassa` (RSA 2048, RSASSA-PKCS1-v1_5 with SHA-256).
 * - restricted + sign: the TPM signs with it only digests it computed itself, and refuses to sign
 *   anything that starts with TPM_GENERATED_VALUE (Part 1 §34.2), so a quote it signed is the TPM's;
 * - not decrypt: a key that can also decrypt could activate credentials meant for another object;
 * - fixedTPM, fixedParent, sensitiveDataOrigin: the private key was made in this TPM and cannot be
 *   duplicated; TPM2_LoadExternal refuses such a key with its private part (Part 3 §12.3), so
 *   whoever activates the credential with it holds this TPM.
 */
export function checkAttestationKey(ak: PublicArea): void {
  if (ak.nameAlg !== TPM_ALG.SHA256) throw notAnAk('its name algorithm is not SHA-256');
  if ((ak.attributes & TPMA_OBJECT.decrypt) !== 0) throw notAnAk('it can decrypt');
  if ((ak.attributes & AK_REQUIRED) !== AK_REQUIRED) {
    throw notAnAk('its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|restricted|sign');
  }
  if (ak.symmetric !== null) throw notAnAk('it has a symmetric algorithm');
  if (ak.type === 'ecc') {
    if (ak.curve !== TPM_ECC_NIST_P256 || ak.x.length !== SHA256_SIZE || ak.y.length !== SHA256_SIZE) {
      throw notAnAk('it is not an ECC NIST P-256 key');
    }
    if (ak.scheme?.alg !== TPM_ALG.ECDSA || ak.scheme.hashAlg !== TPM_ALG.SHA256) {
      throw notAnAk('its scheme is not ECDSA with SHA-256');
    }
    if (ak.kdf !== null) throw notAnAk('it has a KDF scheme');
  } else {
    if (ak.keyBits !== 2048 || ak.modulus.length !== RSA_2048_BYTES || (ak.modulus[0]! & 0x80) === 0) {
      throw notAnAk('it is not an RSA 2048 key');
    }
    if (ak.exponent !== 0 && ak.exponent !== 0x10001) throw notAnAk('its exponent is not 65537');
    if (ak.scheme?.alg !== TPM_ALG.RSASSA || ak.scheme.hashAlg !== TPM_ALG.SHA256) {
      throw notAnAk('its scheme is not RSASSA with SHA-256');
    }
  }
}
