import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import type { AuditEvent, AuditRepository } from './ports';

/** Where a use case counts a JWT-SVID it minted (MintTally; a test may pass its own). */
export interface MintCounter {
  /** One token minted by node `nodeId` for `spiffeId` at `at`; `actor` is the node's audit context. */
  record(actor: AuditContext, nodeId: string, spiffeId: string, at: Date): void;
}

const MINUTE_MS = 60_000;

interface Bucket {
  actor: string;
  minute: number;
  nodeId: string;
  spiffeId: string;
  count: number;
  first: Date;
  last: Date;
}

/**
 * The audit record of JWT-SVID mints, in aggregate: one `jwt_svid.minted` row per node, SPIFFE ID
 * and minute, `{count, node, spiffe_id, first, last}`. A row per token would swamp the log (a node
 * may mint thousands a minute, each a few hundred bytes hashed into the chain) and cost a database
 * write on the hot path; a token cannot be revoked, so the log needs who minted what and when, not
 * each token. Refusals are not counted here: each is a row of its own (domain/jwt-svid.ts).
 *
 * Counts live in memory until the minute has ended; `flush()` writes the ended minutes (the
 * background jobs call it every interval), `flush({ all: true })` everything (server stop). A
 * replica that dies loses at most its open minutes' counts, which the audit log states by the
 * rows it has (nothing here is needed for correctness). Memory is bounded by the entries nodes may
 * mint for (only authorized mints are counted) times the minutes between flushes.
 */
export class MintTally implements MintCounter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #audit: Pick<AuditRepository, 'append'>;
  readonly #clock: Clock;

  constructor(audit: Pick<AuditRepository, 'append'>, clock: Clock) {
    this.#audit = audit;
    this.#clock = clock;
  }

  record(actor: AuditContext, nodeId: string, spiffeId: string, at: Date): void {
    const minute = Math.floor(at.getTime() / MINUTE_MS);
    // Node ids and SPIFFE IDs never contain a newline (base32 ids; entries hold validated URIs).
    const key = `${minute}\n${nodeId}\n${spiffeId}`;
    const b = this.#buckets.get(key);
    if (b) {
      b.count += 1;
      if (at < b.first) b.first = at;
      if (at > b.last) b.last = at;
      return;
    }
    this.#buckets.set(key, { actor: actor.actor, minute, nodeId, spiffeId, count: 1, first: at, last: at });
  }

  /** Buckets not yet written. */
  get pending(): number {
    return this.#buckets.size;
  }

  /**
   * Writes one audit row per bucket whose minute has ended by the clock (all of them with `all`),
   * and returns how many it wrote. A bucket whose row could not be written is kept, merged with any
   * count that arrived meanwhile, for the next flush; the first error is thrown after the others
   * were tried.
   */
  async flush(o: { all?: boolean } = {}): Promise<number> {
    const current = Math.floor(this.#clock.now().getTime() / MINUTE_MS);
    const due: [string, Bucket][] = [];
    for (const [key, b] of this.#buckets) {
      if (o.all || b.minute < current) due.push([key, b]);
    }
    for (const [key] of due) this.#buckets.delete(key);
    let written = 0;
    let failure: unknown;
    for (const [key, b] of due) {
      try {
        await this.#audit.append(mintedEvent(b));
        written += 1;
      } catch (e) {
        failure ??= e;
        this.#putBack(key, b);
      }
    }
    if (failure !== undefined) throw failure;
    return written;
  }

  #putBack(key: string, b: Bucket): void {
    const now = this.#buckets.get(key);
    if (!now) {
      this.#buckets.set(key, b);
      return;
    }
    now.count += b.count;
    if (b.first < now.first) now.first = b.first;
    if (b.last > now.last) now.last = b.last;
  }
}

const mintedEvent = (b: Bucket): AuditEvent =>
  auditEvent({ actor: b.actor, source: null }, b.last, 'jwt_svid.minted', b.spiffeId, 'success', {
    count: b.count,
    node: b.nodeId,
    spiffe_id: b.spiffeId,
    first: b.first.toISOString(),
    last: b.last.toISOString(),
  });
