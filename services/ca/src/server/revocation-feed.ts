import type { Logger } from 'pino';
import type { RevocationEvent, RevocationRepository } from '../domain/ports';
import { F } from '../log-fields';

interface Waiter {
  since: number;
  resolve(events: RevocationEvent[]): void;
  timer: NodeJS.Timeout;
}

/**
 * The long-poll behind `GET /v1/revocations?since=N`. Each replica polls the shared
 * revocation_events table (one cheap `max(id)` query per interval, only while someone waits) and is
 * woken at once by revocations it made itself, so a revocation made on any replica reaches every
 * waiter within one interval.
 */
export class RevocationFeed {
  readonly #waiters = new Set<Waiter>();
  #timer: NodeJS.Timeout | undefined;
  #lastSeen = 0;
  #polling = false;

  constructor(
    private readonly repo: RevocationRepository,
    private readonly log: Logger,
    private readonly opts = { pollMs: 200, maxWaitMs: 30_000, pageSize: 1000 },
  ) {}

  /** Events after `since`, as soon as there are any, or [] after `maxWaitMs`. */
  async wait(since: number, maxWaitMs = this.opts.maxWaitMs): Promise<RevocationEvent[]> {
    const now = await this.repo.eventsSince(since, this.opts.pageSize);
    if (now.length > 0 || maxWaitMs <= 0) return now;
    return new Promise((resolve) => {
      const waiter: Waiter = {
        since,
        resolve: (events) => {
          clearTimeout(waiter.timer);
          this.#waiters.delete(waiter);
          resolve(events);
        },
        timer: setTimeout(() => waiter.resolve([]), maxWaitMs),
      };
      this.#waiters.add(waiter);
      this.#ensurePolling();
    });
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
    this.#timer = setInterval(() => void this.#poll(), this.opts.pollMs);
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
      const events = await this.repo.eventsSince(oldest, this.opts.pageSize);
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
