import type { TokenForAttestation, TokenRepository } from './ports';

/** The join token `id` with the node its name binds, as an attestation reads it; null: unknown. */
export type TokenLookup = (id: string) => Promise<TokenForAttestation | null>;

/** Token reads for join-token attestation; `forget` drops a token that turned out spent. */
export interface TokenSource {
  lookup: TokenLookup;
  forget(id: string): void;
}

export interface TokenCacheOptions {
  /** Monotonic milliseconds (never the wall clock). */
  nowMs: () => number;
  ttlMs?: number;
  maxEntries?: number;
}

/**
 * A read-through cache of multi-use join tokens, for a fleet bootstrap (hundreds of nodes joining
 * with one token): their attestations after the first are then one database round trip, the
 * statement that records the certificate, instead of two.
 *
 * What it keeps never changes once a token is made (its id, secret hash, role, expiry, uses
 * allowed): the secret is still checked in constant time and the expiry against the clock on
 * every request. What changes (`uses_left`) is never trusted from it: the recording statement
 * locks the token row and checks uses and expiry again (IssuanceRepository.recordAttestation), and
 * a refusal there makes the caller forget the token. So a stale entry costs at most one refused
 * attestation, never a use too many, and replicas need no invalidation. Only tokens with more than
 * one use are kept (a 1-use token is read once anyway, and a token bound to a node name has one
 * use, so the node's record is never kept); misses are not cached. Bounded: when full it starts
 * over.
 */
export function tokenCache(
  tokens: Pick<TokenRepository, 'findForAttestation'>,
  o: TokenCacheOptions,
): TokenSource & { readonly size: number } {
  const ttlMs = o.ttlMs ?? 60_000;
  const max = o.maxEntries ?? 1000;
  const cached = new Map<string, { found: TokenForAttestation; until: number }>();
  return {
    lookup: async (id) => {
      const hit = cached.get(id);
      const now = o.nowMs();
      if (hit && hit.until > now) return hit.found;
      const found = await tokens.findForAttestation(id);
      if (!found || found.token.usesAllowed < 2 || found.token.nodeName !== null) {
        cached.delete(id);
        return found;
      }
      if (cached.size >= max) cached.clear();
      cached.set(id, { found, until: now + ttlMs });
      return found;
    },
    forget: (id) => void cached.delete(id),
    get size() {
      return cached.size;
    },
  };
}
