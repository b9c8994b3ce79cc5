import type { AgentCaApi, NodeCredential, RevocationEvent } from './agent-api';
import type { AgentState } from './agent-state';
import { CaClientError } from './ca-client';
import { backoffDelay } from './rotation-strategy';

/**
 * Follows `GET /v1/revocations?since=N&wait=S` (CONTRACT "HTTP API": a long-poll that answers as
 * soon as a revocation happens, or with nothing after at most 30 s).
 *
 * The cursor is the id of the last event handled, kept in DIR/state.json so that a restarted
 * agent also sees the revocations made while it was down. With no cursor yet it starts at event
 * 0 and pages with wait=0 until an answer is empty; only then does it hold requests open. Reading
 * that history once (rather than jumping to the head) lets a node that was revoked before its
 * agent started find out from the feed too. Failures are retried with backoff (full jitter, at
 * least the Retry-After), up to a minute apart.
 */
export interface RevocationFollowerOptions {
  client: Pick<AgentCaApi, 'revocations'>;
  state: AgentState;
  random: () => number;
  /** The `wait` of a long-poll, 0–30 s. */
  waitSeconds: number;
  /** The node credential to present now (it rotates), or undefined before the first attestation. */
  credential(): NodeCredential | undefined;
  sleep(ms: number): Promise<void>;
  /** Aborts the request in flight when the agent stops. */
  signal?: AbortSignal;
  isDone(): boolean;
  /** Called with each non-empty page, before the cursor moves past it. */
  onEvents(events: RevocationEvent[]): Promise<void>;
  onError(error: Error & { code?: string }, retryInMs: number): void;
}

const MAX_BACKOFF_MS = 60_000;
const NO_CREDENTIAL_POLL_MS = 5_000;

export class RevocationFollower {
  constructor(readonly o: RevocationFollowerOptions) {}

  async run(): Promise<void> {
    const o = this.o;
    let since = o.state.read().revocationsLast ?? 0;
    let caughtUp = false;
    let attempt = 0;
    while (!o.isDone()) {
      const credential = o.credential();
      if (!credential) {
        await o.sleep(NO_CREDENTIAL_POLL_MS);
        continue;
      }
      try {
        const page = await o.client.revocations({
          ...credential,
          since,
          waitSeconds: caughtUp ? o.waitSeconds : 0,
          signal: o.signal,
        });
        attempt = 0;
        if (page.events.length === 0) caughtUp = true;
        else await o.onEvents(page.events);
        if (page.last !== since) {
          since = page.last;
          o.state.update({ revocationsLast: since });
        }
      } catch (e) {
        if (o.isDone()) return;
        const error = e instanceof Error ? (e as Error & { code?: string }) : new Error(String(e));
        const retryAfter = e instanceof CaClientError ? (e.retryAfterMs ?? 0) : 0;
        const delayMs = Math.max(
          backoffDelay(attempt++, o.random, { maxMs: MAX_BACKOFF_MS }),
          retryAfter,
          1000,
        );
        o.onError(error, delayMs);
        await o.sleep(delayMs);
      }
    }
  }
}
