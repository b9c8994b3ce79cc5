import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per app (never the global one), so several servers in one process stay apart. */
export interface Metrics {
  registry: Registry;
  httpRequests: Counter<'route' | 'method' | 'status'>;
  httpDuration: Histogram<'route'>;
  certificatesIssued: Counter<'kind'>;
  caExpirySeconds: Gauge<'ca_id' | 'kind'>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpRequests: new Counter({
      name: 'baton_http_requests_total',
      help: 'HTTP requests by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'baton_http_request_duration_seconds',
      help: 'HTTP request latency by route',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    certificatesIssued: new Counter({
      name: 'baton_certificates_issued_total',
      help: 'Certificates issued by kind',
      labelNames: ['kind'],
      registers: [registry],
    }),
    caExpirySeconds: new Gauge({
      name: 'baton_ca_expiry_seconds',
      help: 'Seconds until each CA certificate expires',
      labelNames: ['ca_id', 'kind'],
      registers: [registry],
    }),
  };
}
