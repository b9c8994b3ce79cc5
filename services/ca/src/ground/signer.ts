/**
 * The signing port: pki/ builds the bytes to be signed, a Signer signs them. The key behind it may
 * be in memory (unwrapped under the KEK) or elsewhere; nothing above this interface knows which.
 */
export interface Signer {
  /** The DER AlgorithmIdentifier matching what sign() produces (RFC 5280 §4.1.1.2). */
  readonly algorithmIdentifier: Buffer;
  sign(data: Uint8Array): Buffer;
  /**
   * Whether the key can sign now, as far as a cheap check tells (a PKCS#11 token's session, opened
   * again when its backoff allows); absent: always (a key in memory). /readyz asks it.
   */
  available?(): boolean;
}
