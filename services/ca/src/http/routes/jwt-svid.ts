import type { IncomingMessage } from 'node:http';
import { Router } from 'express';
import type { AuditContext } from '../../domain/audit';
import { identifyClaim, type NodeClaim } from '../../domain/caller';
import { type MintJwtSvidParams, mintJwtSvid, recordJwtSvidRefused } from '../../domain/jwt-svid';
import { BatonError } from '../../ground/errors';
import { MAX_JWT_TTL_MS, MIN_TTL_MS } from '../../ground/ttl';
import { auditContext } from '../audit-context';
import { authDepsOf, nodeClaimOf } from '../authorization';
import { peerCertificate } from '../peer-cert';
import type { AppDeps } from '../ports';
import { jsonObject, optionalDurationMs, requestedSpiffeId } from '../validate';

/** CONTRACT "JWT-SVIDs": the 201 body of POST /v1/jwt-svids. */
export interface JwtSvidAnswer {
  token: string;
  spiffe_id: string;
  expires_at: string;
}

/** POST /v1/jwt-svids for a request whose JSON body has been read: the 201 body, or a throw. */
export type JwtSvidMinter = (req: IncomingMessage, parsedBody: unknown) => Promise<JwtSvidAnswer>;

/** CONTRACT "JWT-SVIDs": `ttl` default. */
export const DEFAULT_JWT_TTL_MS = 5 * 60_000;
/** CONTRACT "JWT-SVIDs": `audience` holds 1 to 10 entries of at most 256 bytes (UTF-8) each. */
export const MAX_AUDIENCES = 10;
export const MAX_AUDIENCE_BYTES = 256;

/**
 * The one implementation of POST /v1/jwt-svids, shared by the Express route and the fast path
 * (http/fast-path.ts). A request without a client certificate of ours is refused by the TLS layer's
 * verdict (http/peer-cert.ts) before anything is read or written, so an anonymous flood costs its
 * sender a TLS handshake per connection and us no audit row. Every later refusal is audited
 * (`jwt_svid.refused`); on a body error the caller rule runs first, so a caller that is not an
 * authorized node learns only that.
 */
export function jwtSvidMinter(deps: AppDeps): JwtSvidMinter {
  const td = deps.installation.trustDomain;
  const authDeps = authDepsOf(deps);
  return async (req, parsedBody) => {
    const peer = peerCertificate(req);
    const audit = auditContext(req, peer.spiffeId);
    // A certificate of another kind (a workload's, an auditor's) is refused before anything is
    // written, as on the workload route: every workload of the fleet must not be a writer of the
    // audit chain. Refusals of node callers are audited, within the per-node quota.
    const claim = nodeClaimOf(req, td);
    let params: MintJwtSvidParams;
    try {
      try {
        params = readJwtSvidParams(claim, parsedBody, audit);
      } catch (e) {
        await identifyClaim(authDeps, claim);
        throw e;
      }
    } catch (e) {
      const asked =
        parsedBody !== null && typeof parsedBody === 'object'
          ? (parsedBody as Record<string, unknown>).spiffe_id
          : undefined;
      await recordJwtSvidRefused({ clock: deps.clock, storage: deps.storage }, audit, asked, e);
      throw e;
    }
    const minted = await mintJwtSvid(
      {
        clock: deps.clock,
        storage: deps.storage,
        keyring: deps.keyring(),
        installation: deps.installation,
        mints: deps.jwtMints,
      },
      params,
    );
    return { token: minted.token, spiffe_id: minted.spiffeId, expires_at: minted.expiresAt.toISOString() };
  };
}

const bad = (message: string) => new BatonError('ERR_BAD_REQUEST', message);

/** The body of POST /v1/jwt-svids: `{"spiffe_id", "audience", "ttl"?}`. */
export function readJwtSvidParams(
  claim: NodeClaim,
  parsedBody: unknown,
  audit: AuditContext,
): MintJwtSvidParams {
  const b = jsonObject(parsedBody);
  const spiffeId = requestedSpiffeId(b);
  // No entry can have one (SPIFFE IDs are validated), and PostgreSQL refuses it in the batched read.
  if (spiffeId.includes('\u0000')) throw bad('spiffe_id: must not contain a NUL character');
  return {
    claim,
    spiffeId,
    audience: readAudience(b.audience),
    ttlMs: optionalDurationMs(b, 'ttl', MIN_TTL_MS, MAX_JWT_TTL_MS) ?? DEFAULT_JWT_TTL_MS,
    audit,
  };
}

/** `audience`: the token's `aud`, as given (an array even for one: RFC 7519 §4.1.3 allows both). */
function readAudience(v: unknown): string[] {
  if (!Array.isArray(v) || v.length < 1 || v.length > MAX_AUDIENCES)
    throw bad(`audience: a list of 1 to ${MAX_AUDIENCES} strings is required`);
  for (const a of v) {
    if (typeof a !== 'string' || a === '' || Buffer.byteLength(a, 'utf8') > MAX_AUDIENCE_BYTES)
      throw bad(`audience: each audience must be a non-empty string of at most ${MAX_AUDIENCE_BYTES} bytes`);
  }
  return v as string[];
}

/** Node mTLS: JWT-SVIDs for the node's entries. Authorization runs per request, in the minter. */
export function jwtSvidRoutes(mint: JwtSvidMinter): Router {
  const r = Router();
  r.post('/v1/jwt-svids', async (req, res) => {
    res.status(201).json(await mint(req, req.body));
  });
  return r;
}
