import { BatonError } from '../ground/errors';
import { type AuditContext, recordRefusal } from './audit';
import { identifyClaim, type NodeClaim } from './caller';
import type { Clock } from './clock';
import type { JwtSigningKey } from './jwt-keys';
import type { MintCounter } from './jwt-mint-tally';
import type { Keyring } from './keyring';
import type { Installation, Storage } from './ports';
import { MAX_SPIFFE_ID_CHARS } from './spiffe-id';

export interface JwtSvidDeps {
  clock: Clock;
  storage: Storage;
  keyring: Keyring;
  installation: Installation;
  /** Counts mints for the aggregated audit rows (MintTally). */
  mints: MintCounter;
}

/** POST /v1/jwt-svids, as the HTTP edge read it. */
export interface MintJwtSvidParams {
  /** What the TLS-verified client certificate claims: `spiffe://<td>/node/<nodeId>`. */
  claim: NodeClaim;
  /** The SPIFFE ID asked for; it must be an entry's parented to the node (the entry decides). */
  spiffeId: string;
  /** 1 to 10 non-empty strings (checked at the edge); the token's `aud`, as given. */
  audience: string[];
  /** Within 1m..MAX_JWT_TTL_MS (checked at the edge); the key's notAfter may shorten it. */
  ttlMs: number;
  audit: AuditContext;
}

export interface MintedJwtSvid {
  token: string;
  spiffeId: string;
  expiresAt: Date;
}

/** The refusal of a SPIFFE ID no entry of the node has: the workload route's, word for word. */
export const noEntry = () =>
  new BatonError('ERR_NOT_AUTHORIZED', 'no entry for this SPIFFE ID is parented to this node');

/**
 * POST /v1/jwt-svids: a node mints JWT-SVIDs (SPIFFE JWT-SVID, RFC 7519 with RFC 7515 compact
 * serialization) only for the SPIFFE IDs of entries parented to it, under the same caller rule as
 * X.509 workload SVIDs (domain/caller.ts), on every request.
 *
 * Fast path, one database read: IssuanceRepository.jwtMintAllowed evaluates the caller rule and
 * finds the entry in one statement, batched with the requests in flight beside it. Nothing is
 * written per token (a JWT-SVID cannot be revoked, so there is no record to keep; the audit log
 * gets one row per node, SPIFFE ID and minute: MintTally). The entry cache of workload issuance is
 * not used: it is trusted there only because the recording statement re-checks the entry, and here
 * no statement follows the signature. When the guard refuses, the caller module runs in full and
 * names the reason (so a caller that is not an authorized node learns only that), then a fresh
 * entry read.
 *
 * A refusal writes one `jwt_svid.refused` audit row. Unauthenticated requests never get here (the
 * edge refuses a missing or foreign client certificate first), and the per-node quota bounds the
 * rows an authenticated caller can make.
 */
export async function mintJwtSvid(deps: JwtSvidDeps, p: MintJwtSvidParams): Promise<MintedJwtSvid> {
  try {
    return await mintOnce(deps, p);
  } catch (e) {
    await recordJwtSvidRefused(deps, p.audit, p.spiffeId, e);
    throw e;
  }
}

async function mintOnce(deps: JwtSvidDeps, p: MintJwtSvidParams): Promise<MintedJwtSvid> {
  const { claim, spiffeId } = p;
  const now = deps.clock.now();
  const allowed = await deps.storage.issuances.jwtMintAllowed({
    nodeId: claim.nodeId,
    peerSerial: claim.peer.serial,
    peerDer: claim.peer.der,
    now,
    spiffeId,
  });
  if (!allowed) {
    await identifyClaim(
      { clock: deps.clock, repos: deps.storage, trustDomain: deps.installation.trustDomain },
      claim,
    );
    // The caller is fine now: the entry decides (a revocation that raced the guard is found above).
    if (!(await deps.storage.entries.findForNode(claim.nodeId, spiffeId))) throw noEntry();
  }
  const key = deps.keyring.jwt.active;
  if (!key) throw new BatonError('ERR_CA_UNAVAILABLE', 'no JWT signing key is active');
  const minted = signJwtSvid(key, {
    sub: spiffeId,
    aud: p.audience,
    // The keyring's public URL: the one the OIDC discovery document names as `issuer`, exactly.
    iss: deps.keyring.publicUrl,
    now,
    ttlMs: p.ttlMs,
  });
  deps.mints.record(p.audit, claim.nodeId, spiffeId, now);
  return minted;
}

/**
 * A JWT-SVID (SPIFFE JWT-SVID §2-3): header exactly `alg`, `kid`, `typ`; claims exactly `sub`, `aud`,
 * `exp`, `iat`, `iss`, none of them from the request but the audience. `exp` is `now + ttl`, never
 * past the key's notAfter (the signing CA's: a key is retired with its CA), in whole seconds
 * (RFC 7519 NumericDate). ES256 (RFC 7518 §3.4): the signature is r || s, 32 bytes each, not DER.
 *
 * Signed by the key's custody (a KeyObject parsed once, or the PKCS#11 token, whose CKM_ECDSA
 * returns r || s as JWS wants it), not with `jose`: this is the hot path (about 30 µs here with the
 * KEK: a cached header, one JSON.stringify, one signature), jose's SignJWT is an async builder that
 * checks and re-encodes header and claims on every call, and it signs only with a key it holds (a
 * KeyObject or CryptoKey), which a token key never is. The JWS is simple enough to
 * get right by hand, and is proven by code we did not write: the tests validate our tokens with
 * jose and with PyJWT (test/integration/jwt-svid.test.ts).
 */
export function signJwtSvid(
  key: Pick<JwtSigningKey, 'kid' | 'signJws' | 'notAfter'>,
  c: { sub: string; aud: string[]; iss: string; now: Date; ttlMs: number },
): MintedJwtSvid {
  const iat = Math.floor(c.now.getTime() / 1000);
  const exp = Math.min(
    Math.floor((c.now.getTime() + c.ttlMs) / 1000),
    Math.floor(key.notAfter.getTime() / 1000),
  );
  if (exp <= iat) throw new BatonError('ERR_CA_UNAVAILABLE', 'the JWT signing key has expired');
  const payload = base64url(JSON.stringify({ sub: c.sub, aud: c.aud, exp, iat, iss: c.iss }));
  const input = `${headerOf(key.kid)}.${payload}`;
  const signature = key.signJws(Buffer.from(input));
  return {
    token: `${input}.${signature.toString('base64url')}`,
    spiffeId: c.sub,
    expiresAt: new Date(exp * 1000),
  };
}

const base64url = (s: string) => Buffer.from(s).toString('base64url');

/** The encoded header per kid: a handful of keys over a server's life, encoded once each. */
const headers = new Map<string, string>();
function headerOf(kid: string): string {
  let h = headers.get(kid);
  if (h === undefined) {
    h = base64url(JSON.stringify({ alg: 'ES256', kid, typ: 'JWT' }));
    if (headers.size > 64) headers.clear();
    headers.set(kid, h);
  }
  return h;
}

/**
 * A refused mint is a security event: one `jwt_svid.refused` row with the code, and the SPIFFE ID
 * asked for when it was a string within the field's bound. The HTTP edge calls it for the refusals
 * of reading the request (after the caller rule, which it runs first).
 */
export async function recordJwtSvidRefused(
  deps: Pick<JwtSvidDeps, 'clock' | 'storage'>,
  audit: AuditContext,
  spiffeId: unknown,
  error: unknown,
): Promise<void> {
  // A NUL cannot be stored in a text column: the row would be lost with the SPIFFE ID. No subject:
  // the ID is the caller's text (the details keep it).
  const asked =
    typeof spiffeId === 'string' && spiffeId.length <= MAX_SPIFFE_ID_CHARS && !spiffeId.includes('\u0000')
      ? spiffeId
      : undefined;
  await recordRefusal(
    deps,
    audit,
    'jwt_svid.refused',
    asked === undefined ? {} : { spiffe_id: asked },
    error,
  );
}
