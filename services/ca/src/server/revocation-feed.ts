import type { Logger } from 'pino';
import { BatonError } from '../ground/errors';
import { FEED_RETRY_AFTER_S } from '../http/abuse-controls';
import type { RevocationEvent, RevocationRepository } from '../domain/ports';
import { F } from '../log-fields';

interface Waiter {
  since: number;
  identity: string;
  resolve(events: RevocationEvent[]): void;
  timer: NodeJS.Timeout;
}

/** How many long-polls may wait at once; null: no limit (config.ts AbuseLimits). */
export interface FeedLimits {
  readonly total: number | null;
  readonly perIdentity: number | null;
}

export interface FeedOptions {
  pollMs: number;
  maxWaitMs: number;
  pageSize: number;
  limits: FeedLimits;
}

const DEFAULT_OPTIONS: FeedOptions = {
  pollMs: 200,
  maxWaitMs: 30_000,
  pageSize: 1000,
  limits: { total: null, perIdentity: null },
};

export interface WaitOptions {
  /** Who waits: the per-identity cap counts by it. */
  identity: string;
  /** Aborted when the client goes away: the wait ends there and its slot is free at once. */
  signal?: AbortSignal;
}

/**
 * The long-poll behind `GET /v1/revocations?since=N`. Each replica polls the shared
 * revocation_events table (one cheap `max(id)` query per interval, only while someone waits) and is
 * woken at once by revocations it made itself, so a revocation made on any replica reaches every
 * waiter within one interval.
 */
export class RevocationFeed {
  readonly #waiters = new Set<Waiter>();
  /** Waiters per identity; an identity with none has no entry (the map stays as small as the set). */
  readonly #perIdentity = new Map<string, number>();
  readonly #opts: FeedOptions;
  #timer: NodeJS.Timeout | undefined;
  #lastSeen = 0;
  #polling = false;

  constructor(
    private readonly repo: RevocationRepository,
    private readonly log: Logger,
    opts: Partial<FeedOptions> = {},
  ) {
    this.#opts = { ...DEFAULT_OPTIONS, ...opts };
  }

  /**
   * Events after `since`, as soon as there are any, or [] after `maxWaitMs`. Only a call that
   * has to wait takes a slot: a `maxWaitMs` of 0 (the catch-up read) and a call with events to
   * answer at once are never refused. Past a limit: ERR_RATE_LIMITED (Retry-After
   * FEED_RETRY_AFTER_S). The slot is freed when the wait ends, however it ends.
   */
  async wait(
    since: number,
    maxWaitMs = this.#opts.maxWaitMs,
    o: WaitOptions = { identity: '' },
  ): Promise<RevocationEvent[]> {
    const now = await this.repo.eventsSince(since, this.#opts.pageSize);
    if (now.length > 0 || maxWaitMs <= 0 || o.signal?.aborted) return now;
    this.#admit(o.identity);
    return new Promise((resolve) => {
      const onAbort = () => waiter.resolve([]);
      const waiter: Waiter = {
        since,
        identity: o.identity,
        resolve: (events) => {
          if (!this.#waiters.delete(waiter)) return;
          clearTimeout(waiter.timer);
          o.signal?.removeEventListener('abort', onAbort);
          this.#release(waiter.identity);
          resolve(events);
        },
        timer: setTimeout(() => waiter.resolve([]), maxWaitMs),
      };
      this.#waiters.add(waiter);
      this.#perIdentity.set(o.identity, (this.#perIdentity.get(o.identity) ?? 0) + 1);
      o.signal?.addEventListener('abort', onAbort, { once: true });
      this.#ensurePolling();
    });
  }

  /** Long-polls waiting now for `identity`. */
  waitingFor(identity: string): number {
    return this.#perIdentity.get(identity) ?? 0;
  }

  #admit(identity: string): void {
    const { total, perIdentity } = this.#opts.limits;
    if (perIdentity !== null && this.waitingFor(identity) >= perIdentity)
      throw new BatonError(
        'ERR_RATE_LIMITED',
        `revocation feed: ${perIdentity} long-polls already wait for this caller, retry after ${FEED_RETRY_AFTER_S}s`,
      );
    if (total !== null && this.#waiters.size >= total)
      throw new BatonError(
        'ERR_RATE_LIMITED',
        `revocation feed: server busy (${total} long-polls waiting), retry after ${FEED_RETRY_AFTER_S}s`,
      );
  }

  #release(identity: string): void {
    const n = (this.#perIdentity.get(identity) ?? 1) - 1;
    if (n > 0) this.#perIdentity.set(identity, n);
    else this.#perIdentity.delete(identity);
  }

  /** Called by this replica right after it commits a revocation. */
  notify(): void {
    void this.#poll();
  }

  get waiting(): number {
    return this.#waiters.size;
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    for (const w of [...this.#waiters]) w.resolve([]);
  }

  #ensurePolling(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.#poll(), this.#opts.pollMs);
    this.#timer.unref();
  }

  async #poll(): Promise<void> {
    if (this.#waiters.size === 0) {
      if (this.#timer) clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    if (this.#polling) return;
    this.#polling = true;
    try {
      const last = await this.repo.lastEventId();
      if (last === this.#lastSeen && last > 0) return;
      this.#lastSeen = last;
      const waiters = [...this.#waiters].filter((w) => w.since < last);
      if (waiters.length === 0) return;
      const oldest = Math.min(...waiters.map((w) => w.since));
      const events = await this.repo.eventsSince(oldest, this.#opts.pageSize);
      for (const w of waiters) {
        const mine = events.filter((e) => e.id > w.since);
        if (mine.length > 0) w.resolve(mine);
      }
    } catch (err) {
      this.log.warn({ [F.err]: err }, 'Revocation feed poll failed');
    } finally {
      this.#polling = false;
    }
  }
}
