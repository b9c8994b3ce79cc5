import type { ErrorRequestHandler } from 'express';
import type { Logger } from 'pino';
import { type BatonErrorCode, BatonError } from '../domain/errors';
import { F } from '../log-fields';
import type { Metrics } from './metrics';

/** The one table from error code to HTTP status. A code missing here is answered as a 500. */
export const HTTP_STATUS: Partial<Record<BatonErrorCode, number>> = {
  ERR_USAGE: 400,
  ERR_BAD_REQUEST: 400,
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
  ERR_KEY_REUSED: 409,
  ERR_ALREADY_INITIALIZED: 409,
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

/**
 * Renders every error as `{"error":{"code","message"}}`. Known codes are exposed; anything else
 * is a redacted 500 whose cause is logged under the request id (oidc-provider err_out.js).
 * Every refusal is counted by code (baton_requests_refused_total).
 */
export function errorHandler(log: Logger, metrics: Metrics): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const reqId = String(res.locals.requestId ?? '');
    let status = 500;
    let code = 'ERR_INTERNAL';
    let message = 'internal error';
    const parserError = err as BodyParserError;
    if (err instanceof BatonError && HTTP_STATUS[err.code]) {
      status = HTTP_STATUS[err.code]!;
      code = err.code;
      message = err.message;
    } else if (parserError.type === 'entity.too.large') {
      [status, code, message] = [413, 'ERR_BODY_TOO_LARGE', 'request body too large'];
    } else if (
      parserError.type === 'entity.parse.failed' ||
      parserError.type === 'encoding.unsupported' ||
      parserError.status === 400
    ) {
      [status, code, message] = [400, 'ERR_BAD_REQUEST', 'malformed JSON body'];
    } else if (parserError.type === 'charset.unsupported' || parserError.status === 415) {
      [status, code, message] = [415, 'ERR_BAD_REQUEST', 'unsupported content type'];
    }
    if (status >= 500) {
      log.error(
        { [F.requestId]: reqId, [F.errorCode]: code, [F.err]: err, [F.route]: req.path },
        'Request failed',
      );
    }
    metrics.requestsRefused.inc({ code });
    if ((status === 503 || status === 429) && !res.get('Retry-After'))
      res.set('Retry-After', String(RETRY_AFTER_S));
    if (!res.headersSent) res.status(status).json(errorBody(code, message));
  };
}
