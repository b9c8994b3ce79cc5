import { AgentError } from './agent-error';
import type { Issuance, NodeCaApi } from './ca-client';

/**
 * The node-mTLS and public calls the agent makes besides attest and renew (CONTRACT "HTTP API"):
 * the entries parented to this node, workload SVIDs, the CRLs and the revocation feed. The types
 * and the parsing of the answers live here; CaClient implements the calls. A malformed answer is
 * an AgentError ERR_BAD_RESPONSE, as bootstrap.ts reports a bad certificate.
 */

/** The node's own credential, presented as the TLS client certificate. */
export interface NodeCredential {
  /** Leaf + intermediate, PEM. */
  certificateChainPem: string;
  keyPem: string;
  /** The roots the server is verified against. */
  trustBundlePem: string;
}

/** One registration entry as `GET /v1/entries` lists it. */
export interface WorkloadEntry {
  name: string;
  spiffeId: string;
  parent: string;
  /** `unix:uid:N`, `unix:gid:N`. */
  selectors: string[];
  dnsNames: string[];
  ttlSeconds: number;
  /** The Workload API `hint` (which identity to use when a caller gets several), when set. */
  hint?: string;
}

export interface WorkloadSvidParams extends NodeCredential {
  spiffeId: string;
  csrPem: string;
}

/** `POST /v1/workload-svids` answers an issuance without a node id. */
export type WorkloadIssuance = Omit<Issuance, 'nodeId'>;

/** What to mint with `POST /v1/jwt-svids` (CONTRACT "JWT-SVIDs"). */
export interface JwtSvidRequest {
  /** The SPIFFE ID of one of this node's entries. */
  spiffeId: string;
  /** At least one. */
  audience: string[];
  /** A duration like the server's other lifetimes ("5m"); the server's default (5m) when absent. */
  ttl?: string;
}

export interface JwtSvidParams extends NodeCredential, JwtSvidRequest {}

/** A JWT-SVID as the CA minted it, checked against what was asked. */
export interface JwtSvid {
  /** The compact JWS (header.payload.signature, base64url). */
  token: string;
  spiffeId: string;
  /** The token's `aud`, as a list. */
  audience: string[];
  /** The answer's `expires_at`, or the token's `exp` when that is earlier (by under a second). */
  expiresAt: Date;
  /** The token's `iat`, when it has a usable one. */
  issuedAt?: Date;
}

/** `GET /v1/crl.pem`: the CRLs, or "unchanged" when the ETag sent still holds (304). */
export type CrlFetch = { changed: false } | { changed: true; pem: string; etag?: string };

export interface FetchCrlParams {
  trustBundlePem: string;
  /** The ETag of the CRLs already held, sent as If-None-Match (RFC 9110 §13.1.2). */
  etag?: string;
}

/** One event of `GET /v1/revocations`. */
export interface RevocationEvent {
  id: number;
  /** `entry`: an entry parented to `nodeId` was created or deleted (asked for with `entries=1`). */
  kind: 'node' | 'certificate' | 'entry';
  /** The revoked node (kind 'node'), or the node of the revoked certificate when it has one. */
  nodeId: string | null;
  serials: string[];
  reason: string;
  at: Date;
}

export interface RevocationPage {
  events: RevocationEvent[];
  /** The id to pass as `since` next time. */
  last: number;
}

export interface RevocationsParams extends NodeCredential {
  since: number;
  /** How long the server may hold the request when there is nothing new: 0 to 30 seconds. */
  waitSeconds: number;
  /** Aborts the request (the daemon stopping). */
  signal?: AbortSignal;
}

/** Everything the agent asks of the CA; CaClient is the HTTPS one. */
export interface AgentCaApi extends NodeCaApi {
  listEntries(p: NodeCredential): Promise<WorkloadEntry[]>;
  issueWorkloadSvid(p: WorkloadSvidParams): Promise<WorkloadIssuance>;
  fetchCrlPem(p: FetchCrlParams): Promise<CrlFetch>;
  revocations(p: RevocationsParams): Promise<RevocationPage>;
  mintJwtSvid(p: JwtSvidParams): Promise<JwtSvid>;
  /**
   * `GET /v1/bundle.jwks`, verified against `trustBundlePem`: the JWT-SVID signing keys as a JWK
   * Set, the `use: "jwt-svid"` keys only (what the Workload API's FetchJWTBundles serves).
   * Optional so that test doubles without it still drive the rest of the agent.
   */
  fetchJwtBundle?(p: { trustBundlePem: string }): Promise<JwtBundle>;
  /**
   * `GET /v1/bundle`, verified against `trustBundlePem`: the roots, two during a root rotation.
   * Optional, as fetchJwtBundle.
   */
  fetchBundle?(trustBundlePem: string): Promise<string>;
}

/** The JWT-SVID keys of the trust domain. */
export interface JwtBundle {
  /** `{"keys":[…]}`, JSON: only the keys whose `use` is `jwt-svid`, each with its `kid`. */
  jwks: string;
}

/**
 * The `use: "jwt-svid"` keys of a SPIFFE bundle (SPIFFE Trust Domain and Bundle §4.2), as the JWK
 * Set a JWT validator takes. The x509-svid keys have no `kid`, which JWT bundle parsers refuse.
 */
export function parseJwtBundle(body: Buffer): JwtBundle {
  const keys = json(body).keys;
  if (!Array.isArray(keys)) throw bad('"keys" in the bundle');
  const jwt = keys.filter(
    (k: Record<string, unknown>) => k && k.use === 'jwt-svid' && typeof k.kid === 'string' && k.kid !== '',
  );
  return { jwks: JSON.stringify({ keys: jwt }) };
}

function json(body: Buffer): Record<string, unknown> {
  try {
    const j = JSON.parse(body.toString('utf8')) as unknown;
    if (j && typeof j === 'object' && !Array.isArray(j)) return j as Record<string, unknown>;
  } catch {
    // Reported below.
  }
  throw new AgentError('ERR_BAD_RESPONSE', 'the CA answered with something that is not JSON');
}

const bad = (what: string) => new AgentError('ERR_BAD_RESPONSE', `the CA's answer has a bad ${what}`);

const strings = (v: unknown, what: string): string[] => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw bad(what);
  return v as string[];
};

export function parseEntries(body: Buffer): WorkloadEntry[] {
  const list = json(body).entries;
  if (!Array.isArray(list)) throw bad('"entries"');
  return list.map((e: Record<string, unknown>) => {
    if (!e || typeof e.name !== 'string' || typeof e.spiffe_id !== 'string') throw bad('entry');
    return {
      name: e.name,
      spiffeId: e.spiffe_id,
      parent: typeof e.parent === 'string' ? e.parent : '',
      selectors: strings(e.selectors, 'entry selector list'),
      dnsNames: strings(e.dns_names, 'entry DNS name list'),
      ttlSeconds: typeof e.ttl_seconds === 'number' ? e.ttl_seconds : 0,
      ...(typeof e.hint === 'string' && e.hint !== '' ? { hint: e.hint } : {}),
    };
  });
}

export function parseRevocationPage(body: Buffer): RevocationPage {
  const j = json(body);
  if (!Array.isArray(j.events) || !Number.isSafeInteger(j.last)) throw bad('revocation page');
  const events = j.events.map((e: Record<string, unknown>): RevocationEvent => {
    if (
      !e ||
      !Number.isSafeInteger(e.id) ||
      (e.kind !== 'node' && e.kind !== 'certificate' && e.kind !== 'entry')
    )
      throw bad('revocation event');
    return {
      id: e.id as number,
      kind: e.kind,
      nodeId: typeof e.node_id === 'string' ? e.node_id : null,
      serials: strings(e.serials, 'revocation serial list').map((s) => s.toLowerCase()),
      reason: typeof e.reason === 'string' ? e.reason : 'unspecified',
      at: new Date(typeof e.at === 'string' ? e.at : Number.NaN),
    };
  });
  return { events, last: j.last as number };
}

const JWS_COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** One base64url part of a JWS, as the JSON object it must be (RFC 7515 §7.1), or undefined. */
function jwsJson(part: string): Record<string, unknown> | undefined {
  try {
    const j = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as unknown;
    if (j && typeof j === 'object' && !Array.isArray(j)) return j as Record<string, unknown>;
  } catch {
    // Reported by the caller.
  }
  return undefined;
}

/**
 * The answer of `POST /v1/jwt-svids` (`{"token","spiffe_id","expires_at"}`), checked against what
 * was asked before anything caches or serves it: the token is a compact JWS whose header and claims
 * are JSON objects; `spiffe_id` and the claim `sub` are the SPIFFE ID asked; `aud` is the audience
 * set asked; `expires_at` is after `now` and agrees with `exp` (to the second, as `exp` is whole
 * seconds). `iat` is kept when it is a time before `exp`.
 */
export function parseJwtSvid(body: Buffer, asked: JwtSvidRequest, now: Date): JwtSvid {
  const j = json(body);
  const token = j.token;
  if (typeof token !== 'string' || !JWS_COMPACT.test(token)) throw bad('"token" (not a compact JWS)');
  const [h, p] = token.split('.') as [string, string, string];
  const header = jwsJson(h);
  if (typeof header?.alg !== 'string' || header.alg === 'none') throw bad('"token" header');
  const claims = jwsJson(p);
  if (!claims) throw bad('"token" payload');
  if (j.spiffe_id !== asked.spiffeId || claims.sub !== asked.spiffeId)
    throw new AgentError('ERR_BAD_RESPONSE', 'the CA returned a JWT-SVID for another SPIFFE ID');
  const aud = typeof claims.aud === 'string' ? [claims.aud] : claims.aud;
  if (!Array.isArray(aud) || !aud.every((a) => typeof a === 'string')) throw bad('"aud" claim');
  const audience = aud as string[];
  const want = new Set(asked.audience);
  if (
    audience.length === 0 ||
    !audience.every((a) => want.has(a)) ||
    ![...want].every((a) => audience.includes(a))
  )
    throw new AgentError('ERR_BAD_RESPONSE', 'the CA returned a JWT-SVID for another audience');
  const expiresAt = new Date(typeof j.expires_at === 'string' ? j.expires_at : Number.NaN);
  if (!Number.isFinite(expiresAt.getTime())) throw bad('"expires_at"');
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) throw bad('"exp" claim');
  // exp is whole seconds (RFC 7519 §2 NumericDate), expires_at may carry the milliseconds.
  if (Math.abs(claims.exp * 1000 - expiresAt.getTime()) > 1000)
    throw new AgentError('ERR_BAD_RESPONSE', 'the CA\'s "expires_at" does not match the token\'s "exp"');
  if (Math.min(expiresAt.getTime(), claims.exp * 1000) <= now.getTime())
    throw new AgentError(
      'ERR_BAD_RESPONSE',
      `the CA returned a JWT-SVID that has already expired (${expiresAt.toISOString()}; is this node's clock right?)`,
    );
  const expMs = Math.min(expiresAt.getTime(), claims.exp * 1000);
  const iat = claims.iat;
  const issuedAt =
    typeof iat === 'number' && Number.isFinite(iat) && iat * 1000 < expMs ? new Date(iat * 1000) : undefined;
  return {
    token,
    spiffeId: asked.spiffeId,
    audience,
    expiresAt: new Date(expMs),
    ...(issuedAt ? { issuedAt } : {}),
  };
}

const CRL_BLOCK = /-----BEGIN X509 CRL-----\r?\n[A-Za-z0-9+/=\r\n]+-----END X509 CRL-----\r?\n?/g;

/**
 * Keeps crl.pem to what it claims to be: one or more PEM CRL blocks (RFC 7468 §6) and nothing
 * else, so a proxy's error page never lands where nginx reads its CRLs.
 */
export function parseCrlPem(text: string): string {
  const blocks = text.match(CRL_BLOCK) ?? [];
  if (blocks.length === 0 || text.replace(CRL_BLOCK, '').trim() !== '')
    throw new AgentError(
      'ERR_BAD_RESPONSE',
      'the CA answered /v1/crl.pem with something that is not PEM CRLs',
    );
  return blocks.map((b) => (b.endsWith('\n') ? b : `${b}\n`)).join('');
}
