import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { crlIssuers } from '../domain/crl-publisher';
import type { Keyring } from '../domain/keyring';
import type { CertificateKind, CrlRepository, NodeRepository } from '../domain/ports';

/** How a certificate came to be issued (the `operation` label). */
export type IssuanceOperation = 'attest' | 'renew' | 'workload' | 'admin' | 'server';

/**
 * One registry per app (never the global one), so several servers in one process stay apart.
 * Counters move where things happen; gauges that need the database are computed at scrape time
 * (refreshScrapeGauges), so no request pays for a metric query. The list is in docs/operations.md.
 */
export interface Metrics {
  registry: Registry;
  httpRequests: Counter<'route' | 'method' | 'status'>;
  httpDuration: Histogram<'route'>;
  inFlight: Gauge;
  certificatesIssued: Counter<'kind' | 'operation'>;
  issuanceDuration: Histogram<'kind'>;
  requestsRefused: Counter<'code'>;
  revocations: Counter<'kind'>;
  caExpirySeconds: Gauge<'ca_id' | 'kind'>;
  crlAgeSeconds: Gauge<'ca_id'>;
  activeNodes: Gauge;
  feedWaiters: Gauge;
  connectionsDropped: Counter;
  scrapeErrors: Counter;
  retentionDeleted: Counter;
  retentionRuns: Counter<'outcome'>;
  retentionLastRun: Gauge;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    httpRequests: new Counter({
      name: 'baton_http_requests_total',
      help: 'HTTP requests by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers,
    }),
    httpDuration: new Histogram({
      name: 'baton_http_request_duration_seconds',
      help: 'HTTP request latency by route',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    inFlight: new Gauge({
      name: 'baton_http_requests_in_flight',
      help: 'Requests in progress that count against --max-in-flight',
      registers,
    }),
    certificatesIssued: new Counter({
      name: 'baton_certificates_issued_total',
      help: 'Certificates issued, by kind (node, workload, admin, server) and operation (attest, renew, workload, admin, server)',
      labelNames: ['kind', 'operation'],
      registers,
    }),
    issuanceDuration: new Histogram({
      name: 'baton_issuance_duration_seconds',
      help: 'Time to issue a certificate (checks, signing and the database transaction), by kind',
      labelNames: ['kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    requestsRefused: new Counter({
      name: 'baton_requests_refused_total',
      help: 'Requests answered with a 4xx or 5xx, by error code',
      labelNames: ['code'],
      registers,
    }),
    revocations: new Counter({
      name: 'baton_revocations_total',
      help: 'Revocations made through this replica, by kind (node, certificate)',
      labelNames: ['kind'],
      registers,
    }),
    caExpirySeconds: new Gauge({
      name: 'baton_ca_expiry_seconds',
      help: 'Seconds until each CA certificate expires',
      labelNames: ['ca_id', 'kind'],
      registers,
    }),
    crlAgeSeconds: new Gauge({
      name: 'baton_crl_age_seconds',
      help: "Seconds since the thisUpdate of each CA's latest CRL",
      labelNames: ['ca_id'],
      registers,
    }),
    activeNodes: new Gauge({
      name: 'baton_active_nodes',
      help: 'Nodes that are not revoked and hold an unexpired, current node certificate',
      registers,
    }),
    feedWaiters: new Gauge({
      name: 'baton_revocation_feed_waiters',
      help: 'Clients waiting on the revocation long-poll of this replica',
      registers,
    }),
    connectionsDropped: new Counter({
      name: 'baton_connections_dropped_total',
      help: 'Connections closed unanswered because --max-connections were open',
      registers,
    }),
    scrapeErrors: new Counter({
      name: 'baton_metrics_scrape_errors_total',
      help: 'Scrapes whose database-backed gauges could not be computed (they are left out)',
      registers,
    }),
    retentionDeleted: new Counter({
      name: 'baton_retention_certificates_deleted_total',
      help: 'Certificate rows deleted by the retention job of this replica (--retain-expired)',
      registers,
    }),
    retentionRuns: new Counter({
      name: 'baton_retention_runs_total',
      help: 'Retention job runs of this replica by outcome: completed, partial (more left for the next run), skipped (another replica held the lock), failed',
      labelNames: ['outcome'],
      registers,
    }),
    retentionLastRun: new Gauge({
      name: 'baton_retention_last_run_timestamp_seconds',
      help: 'Unix time at which the last retention run of this replica ended (it held the lock and finished)',
      registers,
    }),
  };
}

/** Times one issuance and counts it once it succeeded. */
export async function timedIssuance<T>(
  m: Metrics,
  kind: CertificateKind,
  operation: IssuanceOperation,
  issue: () => Promise<T>,
): Promise<T> {
  const end = m.issuanceDuration.startTimer({ kind });
  const out = await issue();
  end();
  m.certificatesIssued.inc({ kind, operation });
  return out;
}

export interface ScrapeSources {
  now: Date;
  keyring: Keyring;
  crls: Pick<CrlRepository, 'latest'>;
  nodes: Pick<NodeRepository, 'countActive'>;
  feedWaiters: number;
}

/**
 * Gauges computed at scrape time: a few small queries per scrape, none per request. When the
 * database does not answer, the CRL ages are left out (an alert on a missing or old CRL fires),
 * active nodes keeps its last value, and scrapeErrors counts the failure.
 */
export async function refreshScrapeGauges(m: Metrics, s: ScrapeSources): Promise<void> {
  const now = s.now.getTime();
  m.caExpirySeconds.reset();
  for (const ca of s.keyring.all) {
    m.caExpirySeconds.set(
      { ca_id: ca.record.id, kind: ca.record.kind },
      (ca.record.notAfter.getTime() - now) / 1000,
    );
  }
  m.feedWaiters.set(s.feedWaiters);
  m.crlAgeSeconds.reset();
  try {
    m.activeNodes.set(await s.nodes.countActive(s.now));
    for (const ca of crlIssuers(s.keyring, s.now)) {
      const crl = await s.crls.latest(ca.record.id);
      if (crl) m.crlAgeSeconds.set({ ca_id: ca.record.id }, (now - crl.thisUpdate.getTime()) / 1000);
    }
  } catch {
    m.crlAgeSeconds.reset();
    m.scrapeErrors.inc();
  }
}
