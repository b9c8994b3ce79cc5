/**
 * The one error type of Baton. Codes are part of the public contract (HTTP bodies, CLI lines):
 * never rename one. The HTTP status for each code lives in http/errors.ts, not here.
 */
export type BatonErrorCode =
  | 'ERR_USAGE'
  | 'ERR_BAD_REQUEST'
  // An admin list's `after` that this installation did not make for that list and filters.
  | 'ERR_CURSOR_INVALID'
  | 'ERR_BODY_TOO_LARGE'
  | 'ERR_HEADERS_TOO_LARGE'
  | 'ERR_CONFIG_INVALID'
  | 'ERR_NOT_INITIALIZED'
  | 'ERR_ALREADY_INITIALIZED'
  | 'ERR_KEK_MISSING'
  | 'ERR_KEK_INVALID'
  | 'ERR_CA_UNAVAILABLE'
  | 'ERR_CSR_INVALID'
  | 'ERR_CSR_KEY_UNSUPPORTED'
  | 'ERR_KEY_REUSED'
  | 'ERR_TTL_INVALID'
  | 'ERR_TOKEN_INVALID'
  | 'ERR_ATTESTATION_METHOD_UNKNOWN'
  | 'ERR_ATTESTATION_FAILED'
  | 'ERR_NOT_AUTHENTICATED'
  | 'ERR_NOT_AUTHORIZED'
  | 'ERR_NOT_FOUND'
  | 'ERR_CONFLICT'
  | 'ERR_ROTATION_IN_PROGRESS'
  | 'ERR_NO_ROTATION'
  | 'ERR_ROTATION_PENDING'
  | 'ERR_NODE_REVOKED'
  | 'ERR_CERT_REVOKED'
  | 'ERR_CERT_SUPERSEDED'
  | 'ERR_CERT_EXPIRED'
  | 'ERR_PIN_MISMATCH'
  | 'ERR_SERVER_UNREACHABLE'
  | 'ERR_DATABASE_UNAVAILABLE'
  | 'ERR_RATE_LIMITED'
  // Upstream CA (`ca init --upstream-csr`, `ca import`): docs/operations.md "Upstream CA".
  | 'ERR_UPSTREAM_PENDING'
  | 'ERR_UPSTREAM_NOT_PENDING'
  | 'ERR_UPSTREAM_INVALID'
  | 'ERR_UPSTREAM_KEY_MISMATCH'
  | 'ERR_UPSTREAM_NOT_CA'
  | 'ERR_UPSTREAM_VALIDITY'
  | 'ERR_UPSTREAM_CHAIN'
  | 'ERR_UPSTREAM_PATH_LENGTH'
  | 'ERR_UPSTREAM_NAME_CONSTRAINTS'
  | 'ERR_UPSTREAM_ROTATION'
  | 'ERR_INTERNAL';

export class BatonError extends Error {
  override readonly name = 'BatonError';
  /**
   * What the audit row of this refusal records about the request besides its code, never a secret
   * (a refused TPM attestation: the EK identifier). Never sent to the client.
   */
  readonly auditDetails: Readonly<Record<string, unknown>> | undefined;
  constructor(
    readonly code: BatonErrorCode,
    message: string,
    options?: { cause?: unknown; auditDetails?: Readonly<Record<string, unknown>> },
  ) {
    super(message, options && 'cause' in options ? { cause: options.cause } : undefined);
    this.auditDetails = options?.auditDetails;
  }
}

export function isBatonError(e: unknown, code?: BatonErrorCode): e is BatonError {
  return e instanceof BatonError && (code === undefined || e.code === code);
}
