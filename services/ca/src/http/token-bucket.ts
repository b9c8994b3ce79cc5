import type { RateLimit } from '../config';

export type TakeResult = { ok: true } | { ok: false; retryAfterS: number };

interface Bucket {
  tokens: number;
  /** Monotonic ms of the last refill. */
  at: number;
}

/** Most keys one limiter remembers; past it the least recently used bucket is dropped. */
export const MAX_BUCKETS = 100_000;

/**
 * Token buckets keyed by client address or node, in this replica's memory. Time comes from an
 * injected monotonic source (never the wall clock: a clock step must not open or close a limit).
 * Memory is bounded twice: a bucket that has refilled is the same as no bucket, so full buckets
 * are swept out; and at `maxKeys` the least recently used bucket is dropped, which at worst grants
 * that key a fresh burst.
 */
export class TokenBuckets {
  readonly #buckets = new Map<string, Bucket>();
  readonly #refillMs: number;
  #lastSweep: number;

  constructor(
    private readonly limit: RateLimit,
    private readonly nowMs: () => number,
    private readonly maxKeys = MAX_BUCKETS,
  ) {
    // Time for an empty bucket to fill: a bucket untouched this long is full and can go.
    this.#refillMs = (limit.burst / limit.perSecond) * 1000;
    this.#lastSweep = nowMs();
  }

  take(key: string): TakeResult {
    const now = this.nowMs();
    this.#sweep(now);
    const b = this.#buckets.get(key) ?? { tokens: this.limit.burst, at: now };
    const elapsedS = Math.max(0, now - b.at) / 1000;
    b.tokens = Math.min(this.limit.burst, b.tokens + elapsedS * this.limit.perSecond);
    b.at = now;
    // Re-inserting keeps the Map in least-recently-used order.
    this.#buckets.delete(key);
    this.#buckets.set(key, b);
    if (this.#buckets.size > this.maxKeys) this.#buckets.delete(this.#buckets.keys().next().value!);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - b.tokens) / this.limit.perSecond)) };
  }

  get size(): number {
    return this.#buckets.size;
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < Math.max(1000, this.#refillMs)) return;
    this.#lastSweep = now;
    for (const [key, b] of this.#buckets) if (now - b.at >= this.#refillMs) this.#buckets.delete(key);
  }
}
