import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from 'pino';
import { F } from '../log-fields';
import type { Metrics } from './metrics';

/** What the completion log line and metrics of a request say. */
export interface CompletedRequest {
  id: string;
  method: string;
  /** The route pattern ('unmatched' when none), never the URL: no query strings in logs. */
  route: string;
  status: number;
  /** process.hrtime.bigint() when the request arrived. */
  started: bigint;
  remoteAddress: string | undefined;
}

/** One log line and the request metrics at completion (express and the workload fast path). */
export function recordRequest(log: Logger, metrics: Metrics, r: CompletedRequest): void {
  const seconds = Number(process.hrtime.bigint() - r.started) / 1e9;
  metrics.httpRequests.inc({ route: r.route, method: r.method, status: String(r.status) });
  metrics.httpDuration.observe({ route: r.route }, seconds);
  log.info(
    {
      [F.requestId]: r.id,
      [F.method]: r.method,
      [F.route]: r.route,
      [F.status]: r.status,
      [F.durationMs]: Math.round(seconds * 1e5) / 100,
      [F.remoteAddress]: r.remoteAddress,
    },
    'Request handled',
  );
}

export const newRequestId = (): string => randomUUID();

/**
 * A request id per request (echoed in X-Request-Id), and one log line and metric at completion.
 * The log names the route pattern, never the body or the query string.
 */
export function requestContext(log: Logger, metrics: Metrics): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    const id = newRequestId();
    res.locals.requestId = id;
    res.set('X-Request-Id', id);
    res.on('finish', () => {
      recordRequest(log, metrics, {
        id,
        method: req.method,
        route: req.route?.path ? `${req.baseUrl}${req.route.path}` : 'unmatched',
        status: res.statusCode,
        started,
        remoteAddress: req.socket.remoteAddress,
      });
    });
    next();
  };
}

/** Baseline secure headers for a JSON API (OWASP secure headers). */
export const SECURE_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
  'Strict-Transport-Security': 'max-age=31536000',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
  'Referrer-Policy': 'no-referrer',
};

export const secureHeaders: RequestHandler = (_req, res, next) => {
  res.set(SECURE_HEADERS);
  next();
};
