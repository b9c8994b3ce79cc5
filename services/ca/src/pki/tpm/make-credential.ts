import { constants, createCipheriv, createECDH, createHmac, publicEncrypt, randomBytes } from 'node:crypto';
import { BatonError } from '../../ground/errors';
import { SHA256_SIZE } from './constants';
import { kdfa, kdfe } from './kdf';
import { tpm2b } from './marshal';
import { publicKeyOf } from './names';
import type { PublicArea } from './public-area';

/**
 * TPM2_MakeCredential computed in software (TPM 2.0 Library Part 1 §24 "Credential Protection",
 * Part 3 §12.6): it needs only the EK's public key, so the server needs no TPM. Only the TPM that
 * holds the EK's private key can recover the seed, and it releases the credential only to an
 * object whose Name is `objectName` loaded beside the EK (TPM2_ActivateCredential, Part 3 §12.5).
 *
 * The EK must have passed checkEndorsementKey (profiles.ts): SHA-256 name algorithm, AES-128-CFB.
 */
export interface Credential {
  /** TPM2B_ID_OBJECT, with its size: integrityHMAC and encIdentity (Part 2 §12.4.3). */
  idObject: Buffer;
  /** TPM2B_ENCRYPTED_SECRET, with its size: the seed, protected for the EK (Part 2 §11.4.33). */
  encryptedSecret: Buffer;
}

/**
 * For known-answer tests only: a fixed seed (RSA EKs; OAEP still randomizes the ciphertext) or a
 * fixed ephemeral private key, the 32-byte P-256 scalar (ECC EKs, from which the seed follows). In
 * production both are fresh.
 */
export interface FixedCredentialInputs {
  seed?: Buffer;
  ephemeralPrivateKey?: Buffer;
}

/** Part 1 §24.4: the seed's OAEP label and its KDFe use for the EK: "IDENTITY" (zero-terminated). */
const IDENTITY = 'IDENTITY';
const AES_128_BITS = 128;
const ZERO_IV = Buffer.alloc(16);

export function makeCredential(
  ek: PublicArea,
  objectName: Buffer,
  credential: Buffer,
  fixed: FixedCredentialInputs = {},
): Credential {
  if (credential.length > SHA256_SIZE) {
    throw new BatonError('ERR_INTERNAL', 'a credential is at most the size of the name digest');
  }
  const { seed, encryptedSecret } = protectSeed(ek, fixed);
  // Part 1 §24.4: encIdentity = CFB(symKey, IV = 0, TPM2B_DIGEST(credential)), the key from KDFa
  // with the EK's symmetric key size and the object's Name as context.
  const symKey = kdfa(seed, 'STORAGE', objectName, Buffer.alloc(0), AES_128_BITS);
  const cipher = createCipheriv('aes-128-cfb', symKey, ZERO_IV);
  const encIdentity = Buffer.concat([cipher.update(tpm2b(credential)), cipher.final()]);
  // Part 1 §24.5: integrityHMAC = HMAC(KDFa(seed, "INTEGRITY", 256), encIdentity || Name(object)).
  const hmacKey = kdfa(seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), SHA256_SIZE * 8);
  const integrity = createHmac('sha256', hmacKey).update(encIdentity).update(objectName).digest();
  return {
    idObject: tpm2b(Buffer.concat([tpm2b(integrity), encIdentity])),
    encryptedSecret: tpm2b(encryptedSecret),
  };
}

/**
 * The seed and how it travels (Part 1 Annex B.10 for RSA, Annex C.6 for ECC):
 * - RSA EK: a random seed the size of the name digest, RSA-OAEP (SHA-256, label "IDENTITY\0")
 *   under the EK; only its private key recovers it;
 * - ECC EK: one-pass ECDH with an ephemeral P-256 key: Z = x(e·EK), seed = KDFe(Z, "IDENTITY",
 *   x(e), x(EK)); the TPMS_ECC_POINT of e travels, and only the EK's private key makes the same Z.
 */
function protectSeed(
  ek: PublicArea,
  fixed: FixedCredentialInputs,
): { seed: Buffer; encryptedSecret: Buffer } {
  if (ek.type === 'rsa') {
    const { key } = publicKeyOf(ek);
    const seed = fixed.seed ?? randomBytes(SHA256_SIZE);
    const encrypted = publicEncrypt(
      {
        key,
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
        oaepLabel: Buffer.from(`${IDENTITY}\0`, 'latin1'),
      },
      seed,
    );
    return { seed, encryptedSecret: encrypted };
  }
  // node:crypto's ECDH class, not a generated KeyObject: Node 20 can deadlock exporting a KeyObject
  // that generateKeyPairSync just made when a garbage collection runs during the export (the
  // generation job's destructor takes the key's lock the export holds), and this runs per request.
  const e = createECDH('prime256v1');
  if (fixed.ephemeralPrivateKey) e.setPrivateKey(fixed.ephemeralPrivateKey);
  else e.generateKeys();
  const point = e.getPublicKey(); // 0x04 || x || y (SEC 1 §2.3.3)
  const ex = point.subarray(1, 1 + SHA256_SIZE);
  const ey = point.subarray(1 + SHA256_SIZE);
  // The ECDH secret is the x-coordinate of e·EK, 32 bytes for P-256; computeSecret refuses a point
  // that is not on the curve (the challenge checked it already, publicKeyOf).
  const z = e.computeSecret(Buffer.concat([Buffer.from([4]), ek.x, ek.y]));
  const seed = kdfe(z, IDENTITY, ex, ek.x, SHA256_SIZE * 8);
  return { seed, encryptedSecret: Buffer.concat([tpm2b(ex), tpm2b(ey)]) };
}
