import { isIPv6 } from 'node:net';
import type { Request, RequestHandler } from 'express';
import type { AbuseLimits, RateLimit } from '../config';
import { BatonError } from '../domain/errors';
import type { Metrics } from './metrics';
import { peerCertificate } from './peer-cert';
import { TokenBuckets } from './token-bucket';

/** Request headers a client may send (Node's own count limit would drop the excess silently). */
export const MAX_HEADERS = 100;
/** Bytes of request line and headers (Node answers 431 past it, before Express runs). */
export const MAX_HEADER_BYTES = 16 * 1024;

/** A header flood within the byte limit is refused, not truncated. */
export const headerLimit: RequestHandler = (req, _res, next) => {
  if (req.rawHeaders.length / 2 > MAX_HEADERS)
    return next(new BatonError('ERR_HEADERS_TOO_LARGE', `more than ${MAX_HEADERS} request headers`));
  next();
};

/** Seconds a shed client waits: short, because shedding is cheap and clients add jitter. */
export const OVERLOAD_RETRY_AFTER_S = 2;

/**
 * Routes the concurrency guard never sheds: probes and scrapes must see an overloaded server, and
 * the revocation long-poll holds a request for up to 30 s while costing nothing.
 */
const NEVER_SHED = new Set(['/healthz', '/readyz', '/metrics', '/v1/revocations']);

/**
 * The bucket key of a client address. IPv4-mapped IPv6 is the IPv4 address; other IPv6 addresses
 * count per /64, the smallest block a site is usually given, so one host cannot rotate through its
 * 2^64 addresses. Baton terminates TLS itself (mTLS), so the socket address is the client's, or that
 * of the NAT or L4 load balancer in front of it; X-Forwarded-For is never trusted.
 */
export function clientKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::')
    ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

function limiter(
  limit: RateLimit | null,
  nowMs: () => number,
  keyOf: (req: Request) => string,
  what: string,
): RequestHandler {
  if (!limit) return (_req, _res, next) => next();
  const buckets = new TokenBuckets(limit, nowMs);
  return (req, res, next) => {
    const r = buckets.take(keyOf(req));
    if (r.ok) return next();
    res.set('Retry-After', String(r.retryAfterS));
    next(new BatonError('ERR_RATE_LIMITED', `${what}: rate limit reached, retry after ${r.retryAfterS}s`));
  };
}

const byClient = (req: Request) => clientKey(req.socket.remoteAddress);
/** The node's SPIFFE ID from its TLS-verified certificate: cheap, and no database read before the quota. */
const byPeer = (req: Request) => peerCertificate(req).spiffeId;

export interface AbuseControls {
  /** Sheds requests past the in-flight limit with 429 (a renewal storm is refused, not queued). */
  concurrency: RequestHandler;
  attest: RequestHandler;
  challenge: RequestHandler;
  ocsp: RequestHandler;
  crl: RequestHandler;
  bundle: RequestHandler;
  renew: RequestHandler;
  workload: RequestHandler;
}

/**
 * Per-replica abuse controls: each replica limits on its own, so N replicas admit up to N times a
 * limit. That is enough to bound abuse; no correctness property depends on a limit.
 */
export function abuseControls(limits: AbuseLimits, metrics: Metrics, nowMs: () => number): AbuseControls {
  let inFlight = 0;
  metrics.inFlight.set(0);
  const concurrency: RequestHandler = (req, res, next) => {
    if (limits.maxInFlight === null || NEVER_SHED.has(req.path)) return next();
    if (inFlight >= limits.maxInFlight) {
      res.set('Retry-After', String(OVERLOAD_RETRY_AFTER_S));
      return next(new BatonError('ERR_RATE_LIMITED', 'server busy: too many requests in progress'));
    }
    inFlight += 1;
    metrics.inFlight.set(inFlight);
    // 'close' fires once per response, after 'finish' or on an aborted connection.
    res.once('close', () => {
      inFlight -= 1;
      metrics.inFlight.set(inFlight);
    });
    next();
  };
  return {
    concurrency,
    attest: limiter(limits.attest, nowMs, byClient, 'attestation'),
    challenge: limiter(limits.attest, nowMs, byClient, 'attestation challenge'),
    ocsp: limiter(limits.public, nowMs, byClient, 'OCSP'),
    crl: limiter(limits.public, nowMs, byClient, 'CRL'),
    bundle: limiter(limits.public, nowMs, byClient, 'bundle'),
    renew: limiter(limits.renew, nowMs, byPeer, 'renewal quota'),
    workload: limiter(limits.workload, nowMs, byPeer, 'workload SVID quota'),
  };
}
