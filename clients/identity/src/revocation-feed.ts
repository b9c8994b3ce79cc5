import type { RevocationEvent } from '../../rotation/src/agent-api';
import type { CaClient } from '../../rotation/src/ca-client';
import { backoffDelay } from '../../rotation/src/rotation-strategy';
import { IdentityError, isIdentityError } from './errors';
import type { Timers } from './identity';
import type { IdentitySnapshot } from './load';

/**
 * The library's side of `GET /v1/revocations?since=N&wait=S` (CONTRACT "HTTP API"), followed with
 * the service's own SVID: the server takes node and workload certificates. It reads from event 0,
 * paging the history in with wait=0, so that revocations made before the service started are
 * learned too, then holds long-polls open. Failures are retried with full-jitter backoff (0.25 s
 * to 30 s). The cursor lives in memory only: a restarted service reads the history again, which
 * its CRLs cover anyway.
 */
export interface FeedFollowerOptions {
  client: Pick<CaClient, 'revocations' | 'serverUrl'>;
  /** The identity to present now (it rotates). */
  credential(): IdentitySnapshot;
  waitSeconds: number;
  clock: { now(): Date };
  timers: Timers;
  random: () => number;
  signal: AbortSignal;
  onEvents(events: RevocationEvent[]): void;
  /** Each failure, already an IdentityError (ERR_REVOCATION_SOURCE unless the cause was one). */
  onError(error: IdentityError): void;
  /** A request succeeded after a failure (or for the first time). */
  onUp(): void;
}

export class FeedFollower {
  readonly url: string;
  /** The `since` of the next request. */
  last = 0;
  connected = false;
  /** Since when no request has succeeded: the start, until the first success. */
  downSince: Date | undefined;

  constructor(readonly o: FeedFollowerOptions) {
    this.url = `${o.client.serverUrl}/v1/revocations`;
    this.downSince = o.clock.now();
  }

  /** Starts following; resolves once the history has been read (or the follower stopped). */
  start(): Promise<void> {
    return new Promise((caughtUp) => void this.#run(caughtUp));
  }

  /** Why the feed counts as down at `now` with `maxMs` allowed, or undefined. */
  outage(now: Date, maxMs: number | undefined): string | undefined {
    if (maxMs === undefined || !this.downSince) return undefined;
    const down = now.getTime() - this.downSince.getTime();
    return down > maxMs
      ? `the revocation feed has been unreachable for ${Math.round(down / 1000)} s`
      : undefined;
  }

  async #run(caughtUp: () => void): Promise<void> {
    const o = this.o;
    let attempt = 0;
    let current = false;
    while (!o.signal.aborted) {
      try {
        const id = o.credential();
        const page = await o.client.revocations({
          certificateChainPem: id.certChainPem,
          keyPem: id.keyPem,
          trustBundlePem: id.bundlePem,
          since: this.last,
          waitSeconds: current ? o.waitSeconds : 0,
          signal: o.signal,
        });
        attempt = 0;
        this.connected = true;
        this.downSince = undefined;
        o.onUp();
        o.onEvents(page.events);
        this.last = page.last;
        if (page.events.length === 0 && !current) {
          current = true;
          caughtUp();
        }
      } catch (e) {
        if (o.signal.aborted) break;
        this.connected = false;
        this.downSince ??= o.clock.now();
        o.onError(sourceError(this.url, e));
        const delay = Math.max(250, backoffDelay(attempt++, o.random, { baseMs: 500, maxMs: 30_000 }));
        await new Promise((r) => o.timers.setTimeout(() => r(undefined), delay));
      }
    }
    caughtUp();
  }
}

/** A failure of a revocation source as an IdentityError, keeping the CA's ERR_ code in the message. */
export function sourceError(what: string, e: unknown): IdentityError {
  if (isIdentityError(e)) return e;
  const code = (e as { code?: string }).code;
  return new IdentityError(
    'ERR_REVOCATION_SOURCE',
    `${what}: ${(e as Error).message ?? String(e)}${code ? ` (${code})` : ''}`,
  );
}
