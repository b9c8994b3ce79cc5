import type { EntryRecord, EntryRepository } from './ports';

/** Finds the entry parented to `nodeId` with `spiffeId`, null when there is none. */
export type EntryLookup = (nodeId: string, spiffeId: string) => Promise<EntryRecord | null>;

/** Entry reads for the fast path of workload issuance; `forget` drops what turned out stale. */
export interface EntrySource {
  lookup: EntryLookup;
  forget(nodeId: string, spiffeId: string): void;
}

export interface EntryCacheOptions {
  /** Monotonic milliseconds (never the wall clock). */
  nowMs: () => number;
  ttlMs?: number;
  maxEntries?: number;
}

/**
 * A read-through cache of entries for workload issuance. It is never trusted: the statement that
 * records a certificate re-checks that the entry still exists unchanged (IssuanceRepository), and
 * a refusal there falls back to a fresh read. So a stale entry costs one retry, never a wrong
 * certificate, and replicas need no invalidation messages. Misses are not cached: an entry created
 * a moment ago is found at once. Bounded: when full it starts over.
 */
export function entryCache(
  entries: Pick<EntryRepository, 'findForNode'>,
  o: EntryCacheOptions,
): EntrySource & { readonly size: number } {
  const ttlMs = o.ttlMs ?? 60_000;
  const max = o.maxEntries ?? 10_000;
  const cached = new Map<string, { entry: EntryRecord; until: number }>();
  // Node ids and SPIFFE IDs never contain a newline (base32 ids; SPIFFE IDs are validated URIs).
  const keyOf = (nodeId: string, spiffeId: string) => `${nodeId}\n${spiffeId}`;
  return {
    lookup: async (nodeId, spiffeId) => {
      const key = keyOf(nodeId, spiffeId);
      const hit = cached.get(key);
      const now = o.nowMs();
      if (hit && hit.until > now) return hit.entry;
      const entry = await entries.findForNode(nodeId, spiffeId);
      if (!entry) {
        cached.delete(key);
        return null;
      }
      if (cached.size >= max) cached.clear();
      cached.set(key, { entry, until: now + ttlMs });
      return entry;
    },
    forget: (nodeId, spiffeId) => void cached.delete(keyOf(nodeId, spiffeId)),
    get size() {
      return cached.size;
    },
  };
}
