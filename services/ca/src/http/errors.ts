import type { ErrorRequestHandler } from 'express';
import type { Logger } from 'pino';
import { type BatonErrorCode, BatonError } from '../ground/errors';
import { F } from '../log-fields';
import type { Metrics } from './metrics';

/** The one table from error code to HTTP status. A code missing here is answered as a 500. */
export const HTTP_STATUS: Partial<Record<BatonErrorCode, number>> = {
  ERR_USAGE: 400,
  ERR_BAD_REQUEST: 400,
  ERR_CURSOR_INVALID: 400,
  ERR_CONFIG_INVALID: 400,
  ERR_CSR_INVALID: 400,
  ERR_CSR_KEY_UNSUPPORTED: 400,
  ERR_TTL_INVALID: 400,
  ERR_ATTESTATION_METHOD_UNKNOWN: 400,
  ERR_TOKEN_INVALID: 401,
  ERR_ATTESTATION_FAILED: 401,
  ERR_NOT_AUTHENTICATED: 401,
  ERR_NOT_AUTHORIZED: 403,
  ERR_NODE_REVOKED: 403,
  ERR_CERT_REVOKED: 403,
  ERR_CERT_SUPERSEDED: 403,
  ERR_CERT_EXPIRED: 401,
  ERR_NOT_FOUND: 404,
  ERR_CONFLICT: 409,
  ERR_ROTATION_IN_PROGRESS: 409,
  ERR_NO_ROTATION: 409,
  ERR_ROTATION_PENDING: 409,
  ERR_KEY_REUSED: 409,
  ERR_ALREADY_INITIALIZED: 409,
  // A rotation of an installation whose CA an outside root signed (domain/upstream-ca.ts).
  ERR_UPSTREAM_ROTATION: 409,
  ERR_BODY_TOO_LARGE: 413,
  ERR_HEADERS_TOO_LARGE: 431,
  ERR_RATE_LIMITED: 429,
  ERR_NOT_INITIALIZED: 503,
  ERR_CA_UNAVAILABLE: 503,
  ERR_KEK_INVALID: 503,
  ERR_KEK_MISSING: 503,
  ERR_DATABASE_UNAVAILABLE: 503,
};

/**
 * Seconds a client should wait before retrying a 503/429 (RFC 9110 §10.2.3), unless the refusing
 * middleware set its own (a rate limit knows when its next token comes).
 */
export const RETRY_AFTER_S = 5;

export function errorBody(code: string, message: string): { error: { code: string; message: string } } {
  return { error: { code, message } };
}

interface BodyParserError {
  type?: string;
  status?: number;
}

/** The status, code and message a thrown error is answered with (the table above decides). */
export function describeError(err: unknown): { status: number; code: string; message: string } {
  const parserError = (err ?? {}) as BodyParserError;
  if (err instanceof BatonError && HTTP_STATUS[err.code])
    return { status: HTTP_STATUS[err.code]!, code: err.code, message: err.message };
  if (parserError.type === 'entity.too.large')
    return { status: 413, code: 'ERR_BODY_TOO_LARGE', message: 'request body too large' };
  if (
    parserError.type === 'entity.parse.failed' ||
    parserError.type === 'encoding.unsupported' ||
    parserError.status === 400
  )
    return { status: 400, code: 'ERR_BAD_REQUEST', message: 'malformed JSON body' };
  if (parserError.type === 'charset.unsupported' || parserError.status === 415)
    return { status: 415, code: 'ERR_BAD_REQUEST', message: 'unsupported content type' };
  return { status: 500, code: 'ERR_INTERNAL', message: 'internal error' };
}

/**
 * Everything about a refusal but writing it: the 5xx log line with the cause, the refusal metric,
 * and Retry-After on 503/429 unless the refusing code set its own (a rate limit knows when its next
 * token comes). Returns what to answer.
 */
export function refusal(
  log: Logger,
  metrics: Metrics,
  err: unknown,
  r: { requestId: string; route: string; hasRetryAfter: boolean; setRetryAfter(seconds: string): void },
): { status: number; body: ReturnType<typeof errorBody> } {
  const { status, code, message } = describeError(err);
  if (status >= 500) {
    log.error(
      { [F.requestId]: r.requestId, [F.errorCode]: code, [F.err]: err, [F.route]: r.route },
      'Request failed',
    );
  }
  metrics.requestsRefused.inc({ code });
  if ((status === 503 || status === 429) && !r.hasRetryAfter) r.setRetryAfter(String(RETRY_AFTER_S));
  return { status, body: errorBody(code, message) };
}

/**
 * Renders every error as `{"error":{"code","message"}}`. Known codes are exposed; anything else
 * is a redacted 500 whose cause is logged under the request id (oidc-provider err_out.js).
 * Every refusal is counted by code (baton_requests_refused_total).
 */
export function errorHandler(log: Logger, metrics: Metrics): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const answer = refusal(log, metrics, err, {
      requestId: String(res.locals.requestId ?? ''),
      route: req.path,
      hasRetryAfter: Boolean(res.get('Retry-After')),
      setRetryAfter: (s) => res.set('Retry-After', s),
    });
    if (!res.headersSent) res.status(answer.status).json(answer.body);
  };
}
