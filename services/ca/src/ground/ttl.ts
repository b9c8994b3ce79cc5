const MINUTE = 60_000;
const DAY = 86_400_000;

/**
 * Upper bounds a TTL may take (server maxima); a leaf is further capped by its CA's notAfter.
 * Shared value types: the domain enforces them, config and the HTTP edge validate against them.
 */
export const MAX_TTL = { node: 30 * DAY, workload: 7 * DAY, admin: 7 * DAY } as const;
export const MIN_TTL_MS = MINUTE;
/**
 * A JWT-SVID lives at most an hour (CONTRACT "JWT-SVIDs"). It also bounds how long a retired JWT
 * signing key stays in the JWKS: this long after its retirement, plus a grace for replicas that had
 * not reloaded their keyring yet (domain/jwt-keys.ts JWT_KEY_GRACE_MS).
 */
export const MAX_JWT_TTL_MS = 60 * MINUTE;
