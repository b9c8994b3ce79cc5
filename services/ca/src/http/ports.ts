import type { Logger } from 'pino';
import type { AbuseLimits } from '../config';
import type { Attestor } from '../domain/attestation/attestor';
import type { Clock } from '../domain/clock';
import type { MintCounter } from '../domain/jwt-mint-tally';
import type { Keyring } from '../domain/keyring';
import type { KeyCustodySource } from '../domain/key-custody';
import type { CrlRecord, Installation, Repositories, RevocationEvent, Storage } from '../domain/ports';
import type { Metrics } from './metrics';

/** What the HTTP application is built from (buildApp in app.ts; every route takes the same). */
export interface AppDeps {
  clock: Clock;
  storage: Storage;
  installation: Installation;
  /** A getter: the keyring can be reloaded (CA rotation) without rebuilding the app. */
  keyring: () => Keyring;
  log: Logger;
  metrics: Metrics;
  /** Attestation methods by name (join_token, x509pop …). */
  attestors: ReadonlyMap<string, Attestor>;
  /** Jitter source for refresh_at (injected so tests are deterministic). */
  random: () => number;
  /** The CRL cache (server/crl-service.ts). */
  crls: CrlSource;
  /** The revocation long-poll (server/revocation-feed.ts). */
  feed: RevocationWaiter;
  /** Serves the CRLs a revocation committed (drops cached ones) and wakes the feed; called after it commits. */
  afterRevocation(): Promise<void>;
  /** Rate limits, quotas and the in-flight limit (per replica). */
  limits: AbuseLimits;
  /** Monotonic milliseconds for the rate limits (never the wall clock). */
  monotonicMs: () => number;
  /** JWT-SVID mints, counted for the aggregated audit rows (domain/jwt-mint-tally.ts). */
  jwtMints: MintCounter;
  /** --retain-audit: audit rows recorded within it are never pruned (domain/audit-retention.ts). */
  auditRetainMs: number;
  /**
   * What a root rotation needs (routes/admin-ca.ts): the key wrapping of new CA keys, where their
   * CRL Distribution Points point, and a reload of this replica's keyring once a step committed.
   * Absent: the server cannot change its CA set (503).
   */
  caSet?: { kek: KeyCustodySource; publicationUrl: string; reload(): Promise<void> };
}

/**
 * What the routes ask of the replica's CRL cache and revocation feed: only the methods they call.
 * http/ does not import server/ (test/unit/architecture/import-rules.test.ts); server/crl-service.ts
 * and server/revocation-feed.ts implement these structurally, and server/start-server.ts passes
 * them to buildApp.
 */

/** The current CRLs (server/crl-service.ts CrlService). */
export interface CrlSource {
  /** The current CRL of CA `caId`, built on demand when none is current. */
  current(caId: string): Promise<CrlRecord>;
  /** New CRLs for every CA inside a revocation's transaction `tx`. */
  publishIn(tx: Repositories): Promise<CrlRecord[]>;
}

/** The long-poll behind GET /v1/revocations (server/revocation-feed.ts RevocationFeed). */
export interface RevocationWaiter {
  /**
   * Events after `since`, as soon as there are any, or [] after `maxWaitMs`; ERR_RATE_LIMITED past
   * a waiting limit. `signal` ends the wait when the client goes away.
   */
  wait(
    since: number,
    maxWaitMs: number,
    o: { identity: string; signal?: AbortSignal },
  ): Promise<RevocationEvent[]>;
  /** Long-polls waiting now (health, metrics). */
  readonly waiting: number;
  /** An event was committed on this replica: its waiters are answered now, not at the next poll. */
  notify(): void;
}
