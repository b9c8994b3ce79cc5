import { createLocalJWKSet, errors, type JWTPayload, jwtVerify } from 'jose';

/**
 * ValidateJWTSVID (SPIFFE Workload API, JWT-SVID profile): the token is checked against the JWT
 * bundle the agent holds, with jose (a maintained JOSE library, not our own parser): a signature
 * by a published `jwt-svid` key (by `kid`), an algorithm of the JWT-SVID specification §3
 * (never `none`, never HMAC), `aud` containing the audience asked, `exp` in the future, and a
 * `sub` that is a SPIFFE ID of this trust domain (JWT-SVID §3: `sub` is the SPIFFE ID).
 */

/** JWT-SVID §3 "Algorithm": the JWS algorithms a JWT-SVID may use. */
const ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];

export class JwtValidationError extends Error {}

export interface ValidatedJwtSvid {
  spiffeId: string;
  claims: JWTPayload;
}

/**
 * Validates `token` for `audience` against `jwks` (the JWK Set JSON of the JWT-SVID keys) at `now`.
 * Throws JwtValidationError with a reason a caller may read.
 */
export async function validateJwtSvid(
  token: string,
  audience: string,
  jwks: Buffer,
  trustDomainId: string,
  now: Date,
): Promise<ValidatedJwtSvid> {
  if (audience === '') throw new JwtValidationError('audience must be specified');
  if (token === '') throw new JwtValidationError('svid must be specified');
  let keys: { keys: Record<string, unknown>[] };
  try {
    const set = JSON.parse(jwks.toString('utf8')) as { keys: Record<string, unknown>[] };
    // jose picks only keys whose `use` is absent or "sig" (RFC 7517 §4.2); the SPIFFE bundle's
    // "jwt-svid" says the same thing for a JWT-SVID key, so it is dropped here, not the key.
    keys = { keys: set.keys.map(({ use: _, ...key }) => key) };
  } catch {
    throw new JwtValidationError('the agent holds no usable JWT bundle');
  }
  try {
    const { payload, protectedHeader } = await jwtVerify(
      token,
      createLocalJWKSet(keys as unknown as Parameters<typeof createLocalJWKSet>[0]),
      { audience, algorithms: ALGORITHMS, currentDate: now, requiredClaims: ['sub', 'exp', 'aud'] },
    );
    // JWT-SVID §2.3: typ, when present, is JWT or JOSE.
    if (protectedHeader.typ !== undefined && protectedHeader.typ !== 'JWT' && protectedHeader.typ !== 'JOSE')
      throw new JwtValidationError(`the token's typ header is ${protectedHeader.typ}, not JWT or JOSE`);
    const sub = payload.sub ?? '';
    if (!sub.startsWith(`${trustDomainId}/`) || sub.length === trustDomainId.length + 1)
      throw new JwtValidationError(`the token's subject is not a SPIFFE ID of ${trustDomainId}`);
    return { spiffeId: sub, claims: payload };
  } catch (e) {
    if (e instanceof JwtValidationError) throw e;
    if (e instanceof errors.JOSEError) throw new JwtValidationError(reason(e));
    throw new JwtValidationError('the token is not a valid JWT-SVID');
  }
}

function reason(e: InstanceType<typeof errors.JOSEError>): string {
  if (e instanceof errors.JWTExpired) return 'the token has expired';
  if (e instanceof errors.JWTClaimValidationFailed) return `the token's ${e.claim} claim is not acceptable`;
  if (e instanceof errors.JWKSNoMatchingKey) return 'the token was not signed by a key of the bundle';
  if (e instanceof errors.JWSSignatureVerificationFailed) return 'the token signature is not valid';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'the token algorithm is not allowed for JWT-SVIDs';
  return 'the token is not a valid JWT-SVID';
}
