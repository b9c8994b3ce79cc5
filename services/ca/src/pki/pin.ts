import { createHash } from 'node:crypto';
import { base32 } from './base32';

/** The root pin of a join token: base32(SHA-256(root SubjectPublicKeyInfo)), CONTRACT "Join tokens". */
export function rootPin(rootSpki: Uint8Array): string {
  return base32(createHash('sha256').update(rootSpki).digest());
}
