import type { TlsTarget } from './http';

/**
 * The orchestrator (run.ts) forks the load generator (load.ts) and talks to it over the IPC
 * channel: job → ready (setup and warm-up done, untimed) → go … result (one per timed run) → done.
 * Timed runs start only on `go`, so the orchestrator can read the server's CPU counters around
 * exactly the timed part.
 */

/** Closed-loop issuance: `concurrency` requests in flight on keep-alive connections. */
export interface IssueJob {
  kind: 'issue';
  target: TlsTarget;
  /** What each request is (baton-jwt: a JWT-SVID for the entry, no CSR). */
  api: 'baton-workload' | 'baton-jwt' | 'cfssl-sign' | 'echo';
  /** baton-workload, baton-jwt: the SPIFFE ID of an entry parented to the client's node. */
  spiffeId?: string;
  /**
   * baton-workload or baton-jwt with several nodes: connection k speaks as identities[k % n] (its own client
   * certificate and entry), as a fleet of agents would. Unset: every connection is `target`'s.
   */
  identities?: { cert: string; key: string; spiffeId: string }[];
  concurrency: number;
  /** Each request on a new connection (a full mTLS handshake), as a renewing node makes it. */
  newConnections?: boolean;
  warmupRequests: number;
  /** A timed run ends at whichever comes first. */
  durationMs: number;
  maxRequests: number;
  /** CSRs prepared before timing (each used once per pass; the pool wraps only if a run outlasts it). */
  csrPool: number;
}

/** Attests nodes with a multi-use join token; with `credentialsOut`, appends each node's credentials. */
export interface AttestJob {
  kind: 'attest';
  target: TlsTarget;
  token: string;
  concurrency: number;
  /** Attestations per timed run. */
  perRun: number;
  runs: number;
  credentialsOut?: string;
  label: string;
}

/**
 * Renews nodes, each over its own new mTLS connection with its own certificate. Closed-loop at
 * `concurrency` (a throughput figure), or a storm: every node starts at a random moment within
 * `jitterMs` of a shared start, retrying 429/503 after Retry-After (or exponential backoff with
 * full jitter), at most `maxInFlight` connections open from this process.
 */
export interface RenewJob {
  kind: 'renew';
  target: TlsTarget;
  credentialsIn: string;
  /** The slice of the credentials file this process renews. */
  offset: number;
  limit: number;
  /** Renewals per timed run (closed-loop mode). */
  perRun: number;
  concurrency: number;
  storm?: { jitterMs: number; maxInFlight: number; maxAttempts: number; deadlineMs: number };
  /** Rewrites the credentials file slice with the renewed certificates (for the next storm). */
  credentialsOut?: string;
}

/** Long-polling watchers and the revocations they wait for. */
export interface WatchJob {
  kind: 'watch';
  target: TlsTarget;
  credentialsIn: string;
  watchers: number;
  admin: { cert: string; key: string };
  /** One node is revoked per round. */
  victims: string[];
  /** Time to let every long-poll reach the server before the revocation (ms). */
  settleMs: number;
}

export type LoadJob = IssueJob | AttestJob | RenewJob | WatchJob;

export interface Credential {
  nodeId: string;
  cert: string;
  key: string;
}

export interface RunResult {
  /** Requests that got a 2xx. */
  ok: number;
  elapsedMs: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Every answer by status ("201", "429", "error:ECONNRESET"). */
  statuses: Record<string, number>;
  /** The generator's own CPU time over the run. */
  clientCpuMs: number;
  /** Storm: monotonic ms (CLOCK_MONOTONIC) of the shared start and of the last success. */
  startMono?: number;
  lastOkMono?: number;
  attempts?: number;
  /** Watch: per-round answer delays, ms after the revoke call started. */
  delaysMs?: number[][];
  revokeCallMs?: number[];
}

export type ToLoad = { type: 'job'; job: LoadJob } | { type: 'go'; startMono?: number } | { type: 'done' };
export type FromLoad =
  | { type: 'ready'; setupMs: number }
  | { type: 'result'; result: RunResult }
  | { type: 'error'; message: string };
