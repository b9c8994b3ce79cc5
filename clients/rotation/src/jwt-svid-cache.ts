import { AgentError } from './agent-error';
import type { JwtSvid, JwtSvidRequest } from './agent-api';
import { CaClientError } from './ca-client';

/**
 * The JWT-SVIDs the agent has minted for its entries (CONTRACT "JWT-SVIDs"), for the Workload API.
 * A token is minted on demand and served again for the same SPIFFE ID, audience set and ttl until
 * half its lifetime has passed; after that the next `get` mints a new one.
 *
 *   - the audience is a set: ["b","a","a"] and ["a","b"] are the same key;
 *   - half-life: issued + (expires − issued) / 2, issued being the token's `iat`, or the time the
 *     answer arrived when the token has no `iat`, its `iat` is later than that (clock skew), or it
 *     would put the half-life behind us already;
 *   - concurrent gets of one key share one request; a failed mint is not cached, so the next get
 *     asks again. While the CA cannot be reached (no answer, 429, 5xx) a token past its half-life
 *     that has not expired is served instead of the error, as SPIRE's agent does; a refusal (4xx)
 *     drops it;
 *   - expired tokens are dropped; past `maxEntries`, the oldest minted go first;
 *   - only the SPIFFE IDs of this node's entries are asked for: any other is refused here
 *     (ERR_NOT_AUTHORIZED, the code the CA would answer) without a request.
 */

export interface JwtSvidCacheOptions {
  clock: { now(): Date };
  /** Mints one; the agent sends POST /v1/jwt-svids with the node's current credential. */
  mint: (request: JwtSvidRequest) => Promise<JwtSvid>;
  /**
   * The SPIFFE IDs of this node's entries as last listed, or undefined before the first listing
   * (then every get is refused with ERR_NOT_READY).
   */
  entrySpiffeIds: () => { has(spiffeId: string): boolean } | undefined;
  /** Default JWT_SVID_CACHE_MAX_ENTRIES. */
  maxEntries?: number;
}

export const JWT_SVID_CACHE_MAX_ENTRIES = 1000;

interface Cached {
  svid: JwtSvid;
  spiffeId: string;
  refreshAt: number;
  expiresAt: number;
}

interface Flight {
  promise: Promise<JwtSvid>;
  spiffeId: string;
  /** invalidate() came while it was in flight: its token is handed to its callers, not kept. */
  cancelled: boolean;
}

/** No answer, or an answer that says "later": a cached token that is still valid may stand in. */
const isTransient = (e: unknown): boolean =>
  e instanceof CaClientError && (e.status === 0 || e.status === 429 || e.status >= 500);

export class JwtSvidCache {
  readonly #o: JwtSvidCacheOptions & { maxEntries: number };
  /** In insertion order: the first is the oldest minted. */
  readonly #entries = new Map<string, Cached>();
  readonly #flights = new Map<string, Flight>();

  constructor(options: JwtSvidCacheOptions) {
    const maxEntries = options.maxEntries ?? JWT_SVID_CACHE_MAX_ENTRIES;
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1)
      throw new RangeError('maxEntries must be a positive integer');
    this.#o = { ...options, maxEntries };
  }

  /** The tokens held (expired ones are dropped when the next one is stored). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * A JWT-SVID of `spiffeId` for `audience` (one or more; order and repeats do not matter), from
   * the cache while it is before its half-life, else newly minted. `ttl` ("5m") is passed to the
   * CA and is part of the key.
   */
  async get(spiffeId: string, audience: readonly string[], ttl?: string): Promise<JwtSvid> {
    const aud = audienceSet(audience);
    if (ttl !== undefined && (typeof ttl !== 'string' || ttl === ''))
      throw new AgentError('ERR_BAD_REQUEST', 'ttl: must be a duration such as "5m"');
    const ids = this.#o.entrySpiffeIds();
    if (!ids)
      throw new AgentError(
        'ERR_NOT_READY',
        "the agent has not listed this node's entries yet: it mints JWT-SVIDs after its first pass",
      );
    if (typeof spiffeId !== 'string' || !ids.has(spiffeId))
      throw new AgentError(
        'ERR_NOT_AUTHORIZED',
        `${String(spiffeId)} is not the SPIFFE ID of an entry of this node: no JWT-SVID is minted for it`,
      );
    const key = JSON.stringify([spiffeId, aud, ttl ?? null]);
    const now = this.#o.clock.now().getTime();
    let held = this.#entries.get(key);
    if (held && now >= held.expiresAt) {
      this.#entries.delete(key);
      held = undefined;
    }
    if (held && now < held.refreshAt) return held.svid;
    const flying = this.#flights.get(key);
    if (flying) return flying.promise;
    const flight = { spiffeId, cancelled: false } as Flight;
    // In the map before the mint starts: a mint that throws at once must still be taken out.
    this.#flights.set(key, flight);
    flight.promise = this.#mint(key, { spiffeId, audience: aud, ...(ttl ? { ttl } : {}) }, held, flight);
    return flight.promise;
  }

  /**
   * Drops the tokens of `spiffeId`, or all of them, and detaches the requests in flight for them
   * (their callers still get their answer; later gets mint again). For when the node's entries
   * change or the node's identity does.
   */
  invalidate(spiffeId?: string): void {
    for (const [key, c] of this.#entries)
      if (spiffeId === undefined || c.spiffeId === spiffeId) this.#entries.delete(key);
    for (const [key, f] of this.#flights)
      if (spiffeId === undefined || f.spiffeId === spiffeId) {
        f.cancelled = true;
        this.#flights.delete(key);
      }
  }

  async #mint(
    key: string,
    request: JwtSvidRequest,
    stale: Cached | undefined,
    flight: Flight,
  ): Promise<JwtSvid> {
    try {
      const svid = await this.#o.mint(request);
      const arrived = this.#o.clock.now().getTime();
      if (svid.spiffeId !== request.spiffeId)
        throw new AgentError('ERR_BAD_RESPONSE', 'the CA returned a JWT-SVID for another SPIFFE ID');
      if (svid.expiresAt.getTime() <= arrived)
        throw new AgentError('ERR_BAD_RESPONSE', 'the CA returned a JWT-SVID that has already expired');
      if (!flight.cancelled) this.#store(key, request.spiffeId, svid, arrived);
      return svid;
    } catch (e) {
      // `stale` is still the one held unless invalidate() dropped it or another mint replaced it.
      if (stale && this.#entries.get(key) === stale) {
        if (isTransient(e) && this.#o.clock.now().getTime() < stale.expiresAt) return stale.svid;
        this.#entries.delete(key);
      }
      throw e;
    } finally {
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
    }
  }

  #store(key: string, spiffeId: string, svid: JwtSvid, arrived: number): void {
    const expiresAt = svid.expiresAt.getTime();
    const iat = svid.issuedAt?.getTime();
    const issued = iat !== undefined && iat <= arrived ? iat : arrived;
    let refreshAt = issued + (expiresAt - issued) / 2;
    if (refreshAt <= arrived) refreshAt = arrived + (expiresAt - arrived) / 2;
    this.#entries.delete(key);
    this.#entries.set(key, { svid, spiffeId, refreshAt, expiresAt });
    for (const [k, c] of this.#entries) if (c.expiresAt <= arrived) this.#entries.delete(k);
    for (const k of this.#entries.keys()) {
      if (this.#entries.size <= this.#o.maxEntries) break;
      this.#entries.delete(k);
    }
  }
}

/** The audience as a key: sorted, without repeats; at least one non-empty string. */
function audienceSet(audience: readonly string[]): string[] {
  if (
    !Array.isArray(audience) ||
    audience.length === 0 ||
    !audience.every((a) => typeof a === 'string' && a !== '')
  )
    throw new AgentError(
      'ERR_BAD_REQUEST',
      'audience: at least one audience (a non-empty string) is required',
    );
  return [...new Set(audience)].sort();
}
