import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from 'pino';
import { F } from '../log-fields';
import type { Metrics } from './metrics';

/**
 * A request id per request (echoed in X-Request-Id), and one log line and metric at completion.
 * The log names the route pattern, never the body or the query string.
 */
export function requestContext(log: Logger, metrics: Metrics): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    const id = randomUUID();
    res.locals.requestId = id;
    res.set('X-Request-Id', id);
    res.on('finish', () => {
      const route = req.route?.path ? `${req.baseUrl}${req.route.path}` : 'unmatched';
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.httpRequests.inc({ route, method: req.method, status: String(res.statusCode) });
      metrics.httpDuration.observe({ route }, seconds);
      log.info(
        {
          [F.requestId]: id,
          [F.method]: req.method,
          [F.route]: route,
          [F.status]: res.statusCode,
          [F.durationMs]: Math.round(seconds * 1e5) / 100,
          [F.remoteAddress]: req.socket.remoteAddress,
        },
        'Request handled',
      );
    });
    next();
  };
}

/** Baseline secure headers for a JSON API (OWASP secure headers). */
export const secureHeaders: RequestHandler = (_req, res, next) => {
  res.set({
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': 'no-store',
    'Strict-Transport-Security': 'max-age=31536000',
    'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
    'Referrer-Policy': 'no-referrer',
  });
  next();
};
