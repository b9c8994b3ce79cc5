import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { BatonError } from '../ground/errors';
import { type AbuseControls, BODY_LIMIT, MAX_HEADERS } from './abuse-controls';
import { refusal } from './errors';
import type { Metrics } from './metrics';
import { newRequestId, recordRequest, SECURE_HEADERS } from './request-context';
import type { TakeResult } from './token-bucket';

export const WORKLOAD_ROUTE = '/v1/workload-svids';
export const RENEW_ROUTE = '/v1/renew';
export const JWT_SVID_ROUTE = '/v1/jwt-svids';
export const ATTEST_ROUTE = '/v1/attest';
const JSON_TYPE = /^application\/json\s*(;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;

/** A POST route that the fast path may answer. */
export interface FastRoute {
  /** The exact path; a query string goes to Express. */
  path: string;
  /**
   * Whose quota the request takes, known before a byte of body is read: the node's SPIFFE ID from
   * the TLS handshake (byPeer, which refuses a request without a node certificate), or the
   * client's address (byClient), as the route's Express limiter keys it.
   */
  quotaKey(req: IncomingMessage): string;
  /** The route's quota (the one its Express limiter uses), and its name in a refusal. */
  take(key: string): TakeResult;
  quotaName: string;
  /** The 201 body for a request whose JSON body has been read, or a throw: the Express route's own. */
  handle(req: IncomingMessage, parsedBody: unknown): Promise<unknown>;
}

/**
 * The routes a fleet calls most, without Express: POST /v1/workload-svids (a node minting its
 * workloads' SVIDs), POST /v1/jwt-svids (their JWT-SVIDs, short-lived and asked for often),
 * POST /v1/renew (a node renewing its own certificate, all nodes at once in a renewal storm) and
 * POST /v1/attest (a fleet bootstrap or an autoscaling burst, issue 20). Each is answered by the same handler as its Express route, with the same headers,
 * request id, log line, metrics, in-flight limit, quota and error bodies. Express costs more per
 * request than the rest of the HTTP stack (bench: `loadgen_echo_server_cpu_ms_per_request` against
 * Baton's).
 *
 * It takes only the plain case: the exact path, a JSON body of a declared length within the limit,
 * no content encoding, a header count within the limit, and a free in-flight slot. Anything else
 * (false) goes to Express untouched, body unread, and gets Express's answer, so every edge case
 * (chunked or oversized bodies, header floods, shedding, other content types) has one implementation.
 */
export function fastPath(p: {
  routes: readonly FastRoute[];
  controls: AbuseControls;
  log: Logger;
  metrics: Metrics;
}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const routes = new Map(p.routes.map((r) => [r.path, r]));
  return (req, res) => {
    const route = req.method === 'POST' && req.url !== undefined ? routes.get(req.url) : undefined;
    if (!route) return false;
    const h = req.headers;
    const length = Number(h['content-length']);
    if (
      !Number.isInteger(length) ||
      length > BODY_LIMIT ||
      h['transfer-encoding'] !== undefined ||
      h['content-encoding'] !== undefined ||
      !JSON_TYPE.test(h['content-type'] ?? '') ||
      req.rawHeaders.length / 2 > MAX_HEADERS
    )
      return false;
    if (!p.controls.tryEnter(res)) return false;

    const started = process.hrtime.bigint();
    const id = newRequestId();
    res.setHeader('X-Request-Id', id);
    for (const [name, value] of Object.entries(SECURE_HEADERS)) res.setHeader(name, value);
    res.on('finish', () =>
      recordRequest(p.log, p.metrics, {
        id,
        method: 'POST',
        route: route.path,
        status: res.statusCode,
        started,
        remoteAddress: req.socket.remoteAddress,
      }),
    );
    const send = (status: number, value: unknown) => {
      const body = Buffer.from(JSON.stringify(value));
      res.writeHead(status, {
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': body.length,
      });
      res.end(body);
    };
    const fail = (err: unknown) => {
      if (res.headersSent) return;
      const answer = refusal(p.log, p.metrics, err, {
        requestId: id,
        route: route.path,
        hasRetryAfter: res.hasHeader('Retry-After'),
        setRetryAfter: (s) => res.setHeader('Retry-After', s),
      });
      send(answer.status, answer.body);
    };

    // The quota's key (the node, from the TLS handshake; or the client's address) needs no body.
    let key: string;
    try {
      key = route.quotaKey(req);
    } catch (e) {
      fail(e);
      return true;
    }
    const quota = route.take(key);
    if (!quota.ok) {
      res.setHeader('Retry-After', String(quota.retryAfterS));
      fail(
        new BatonError(
          'ERR_RATE_LIMITED',
          `${route.quotaName}: rate limit reached, retry after ${quota.retryAfterS}s`,
        ),
      );
      return true;
    }

    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => undefined);
    req.on('end', () => {
      let parsed: unknown;
      try {
        parsed = parseJsonBody(Buffer.concat(chunks));
      } catch (e) {
        fail(e);
        return;
      }
      route.handle(req, parsed).then((answer) => send(201, answer), fail);
    });
    return true;
  };
}

/**
 * JSON as Express's parser (body-parser, strict) reads it: an object or array at the top, UTF-8.
 * Refusals are the codes the Express error handler gives body-parser's errors.
 */
function parseJsonBody(raw: Buffer): unknown {
  const text = raw.toString('utf8');
  // RFC 8259 §2 whitespace, then the first character of the value.
  const first = /^[ \t\n\r]*([^ \t\n\r])/.exec(text)?.[1];
  // body-parser answers an empty body with {} (then "a JSON object body is required" follows).
  if (first === undefined) return {};
  if (first !== '{' && first !== '[') throw new BatonError('ERR_BAD_REQUEST', 'malformed JSON body');
  try {
    return JSON.parse(text);
  } catch {
    throw new BatonError('ERR_BAD_REQUEST', 'malformed JSON body');
  }
}
