import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { BatonError } from '../ground/errors';

/** The key-encryption key that wraps CA private keys at rest. */
export interface Kek {
  /** Recorded beside every wrapped key so a KEK rotation knows what to re-wrap. */
  id: string;
  key: Buffer;
}

export interface WrappedKey {
  /**
   * `pkcs11`: not wrapped at all but a reference to a key kept in a token (kms/pkcs11-custody.ts).
   * `none`: a CA whose key Baton does not hold (an outside CA of an upstream CA); never unwrapped.
   */
  alg: 'A256GCM' | 'pkcs11' | 'none';
  /** The KEK id; for `pkcs11` the token's identity. */
  kekId: string;
  /** iv (12) || ciphertext || tag (16); for `pkcs11` the key's CKA_ID. */
  blob: Buffer;
}

export function kekFromBase64(text: string, source: string): Kek {
  const trimmed = text.trim();
  const key = Buffer.from(trimmed, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || key.length !== 32) {
    throw new BatonError('ERR_KEK_INVALID', `${source} must be the base64 of exactly 32 bytes`);
  }
  return { id: `kek-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`, key };
}

/**
 * AES-256-GCM with a fresh 96-bit IV (NIST SP 800-38D §8.2.2). The CA id is the additional
 * authenticated data, so a wrapped key cannot be moved to another CA row unnoticed.
 */
export function wrapKey(kek: Kek, pkcs8: Buffer, aad: string): WrappedKey {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek.key, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
  return { alg: 'A256GCM' as const, kekId: kek.id, blob: Buffer.concat([iv, ct, cipher.getAuthTag()]) };
}

export function unwrapKey(kek: Kek, wrapped: WrappedKey, aad: string): Buffer {
  if (wrapped.alg !== 'A256GCM') {
    throw new BatonError('ERR_KEK_INVALID', `unsupported key wrapping algorithm ${wrapped.alg}`);
  }
  if (wrapped.kekId !== kek.id) {
    throw new BatonError(
      'ERR_KEK_INVALID',
      `the key-encryption key (${kek.id}) is not the one the CA keys were encrypted with (${wrapped.kekId})`,
    );
  }
  const iv = wrapped.blob.subarray(0, 12);
  const tag = wrapped.blob.subarray(wrapped.blob.length - 16);
  const ct = wrapped.blob.subarray(12, wrapped.blob.length - 16);
  try {
    const d = createDecipheriv('aes-256-gcm', kek.key, iv);
    d.setAAD(Buffer.from(aad, 'utf8'));
    d.setAuthTag(tag);
    return Buffer.concat([d.update(ct), d.final()]);
  } catch {
    throw new BatonError(
      'ERR_KEK_INVALID',
      'a CA key failed to decrypt: wrong key-encryption key or tampered data',
    );
  }
}
