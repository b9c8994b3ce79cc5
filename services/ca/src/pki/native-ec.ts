import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The optional native ECDSA verifier (services/ca/native/ec_verify.c): verifies a CSR's signature
 * from the encoded point without OpenSSL 3's full public-key check, which costs a scalar
 * multiplication that cannot fail on a prime-order curve (the C file explains why it is safe).
 * When the module was not built, or BATON_NATIVE=off, callers fall back to node:crypto: same
 * answers, about 95 µs more per CSR.
 */
export interface NativeEc {
  /** 1 if `point` is an uncompressed point (SEC 1 §2.3.3) on the curve, else 0. */
  checkPoint(curve: NativeCurve, point: Buffer): number;
  /** 1 verified, 0 not, -1 the point is not an uncompressed point on the curve. */
  verify(curve: NativeCurve, hash: NativeHash, point: Buffer, message: Buffer, signature: Buffer): number;
}

export const NATIVE_CURVE = { 'ec-p256': 0, 'ec-p384': 1 } as const;
export type NativeCurve = (typeof NATIVE_CURVE)[keyof typeof NATIVE_CURVE];
export const NATIVE_HASH = { sha256: 0, sha384: 1, sha512: 2 } as const;
export type NativeHash = (typeof NATIVE_HASH)[keyof typeof NATIVE_HASH];

const MODULE = join('services', 'ca', 'native', 'build', 'Release', 'baton_ec_verify.node');
/** From services/ca/src/pki (ts-run tests) or dist/services/ca/src/pki (the compiled service). */
const CANDIDATES = [
  join(__dirname, '..', '..', '..', '..'),
  join(__dirname, '..', '..', '..', '..', '..'),
].map((root) => join(root, MODULE));

function load(): NativeEc | null {
  if (process.env.BATON_NATIVE === 'off') return null;
  const file = CANDIDATES.find((f) => existsSync(f));
  if (!file) return null;
  try {
    return require(file) as NativeEc;
  } catch {
    // Built for another platform or an OpenSSL without these symbols: node:crypto still works.
    return null;
  }
}

/** The native verifier, or null when it is not available; loaded once per process (or worker). */
export const nativeEc: NativeEc | null = load();
