import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIPv6 } from 'node:net';
import type { Request, RequestHandler } from 'express';
import type { AbuseLimits, RateLimit } from '../config';
import { BatonError } from '../ground/errors';
import type { Metrics } from './metrics';
import { peerCertificate } from './peer-cert';
import { type TakeResult, TokenBuckets } from './token-bucket';

/** Request headers a client may send (Node's own count limit would drop the excess silently). */
export const MAX_HEADERS = 100;
/** JSON bodies are small (a CSR is ~500 bytes of PEM); anything large is refused early. */
export const BODY_LIMIT = 64 * 1024;
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
 * Seconds a refused revocation long-poll is told to wait (Retry-After; server/revocation-feed.ts):
 * the longest wait, by which every poll holding a slot now has answered. Shorter would bring a full
 * feed's refused clients back in a herd (each retry a TLS handshake and a database read) while the
 * agents that hold slots re-poll at once.
 */
export const FEED_RETRY_AFTER_S = 30;

/**
 * Routes the concurrency guard never sheds: probes and scrapes must see an overloaded server, and
 * the revocation long-poll holds a request for up to 30 s without work (a node must hear of a
 * revocation when the server is busiest). Its waits have caps of their own, per identity and in
 * total (server/revocation-feed.ts), and every connection counts against --max-connections.
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

/** A per-key quota: always granted when the limit is off. */
function quota(limit: RateLimit | null, nowMs: () => number): (key: string) => TakeResult {
  if (!limit) return () => ({ ok: true });
  const buckets = new TokenBuckets(limit, nowMs);
  return (key) => buckets.take(key);
}

/** The quota as middleware: a refusal is a 429 with the seconds until the next token. */
function limiter(
  take: (key: string) => TakeResult,
  keyOf: (req: Request) => string,
  what: string,
): RequestHandler {
  return (req, res, next) => {
    const r = take(keyOf(req));
    if (r.ok) return next();
    res.set('Retry-After', String(r.retryAfterS));
    next(new BatonError('ERR_RATE_LIMITED', `${what}: rate limit reached, retry after ${r.retryAfterS}s`));
  };
}

/** The quota key of an anonymous route: the client's address (clientKey). */
export const byClient = (req: IncomingMessage) => clientKey(req.socket.remoteAddress);
/** The node's SPIFFE ID from its TLS-verified certificate: cheap, and no database read before the quota. */
export const byPeer = (req: IncomingMessage) => peerCertificate(req).spiffeId;

/** The quotas' names in their refusals, shared with the fast path. */
export const ATTEST_QUOTA = 'attestation';
export const RENEW_QUOTA = 'renewal quota';
export const WORKLOAD_QUOTA = 'workload SVID quota';
export const JWT_QUOTA = 'JWT-SVID quota';

export interface AbuseControls {
  /** Sheds requests past the in-flight limit with 429 (a renewal storm is refused, not queued). */
  concurrency: RequestHandler;
  /**
   * The same in-flight slot for a request answered outside Express (the workload fast path):
   * false when none is free (the request then goes to Express, which sheds it). Freed at 'close'.
   */
  tryEnter(res: ServerResponse): boolean;
  /** The workload quota of `workload`, by the node's SPIFFE ID, outside Express. */
  takeWorkload(peerSpiffeId: string): TakeResult;
  /** The renewal quota of `renew`, by the node's SPIFFE ID, outside Express. */
  takeRenew(peerSpiffeId: string): TakeResult;
  /** The JWT-SVID quota of `jwt`, by the node's SPIFFE ID, outside Express. */
  takeJwt(peerSpiffeId: string): TakeResult;
  /** The attestation quota of `attest`, by the client's address (byClient), outside Express. */
  takeAttest(clientAddressKey: string): TakeResult;
  attest: RequestHandler;
  challenge: RequestHandler;
  ocsp: RequestHandler;
  crl: RequestHandler;
  bundle: RequestHandler;
  renew: RequestHandler;
  workload: RequestHandler;
  jwt: RequestHandler;
}

/**
 * Per-replica abuse controls: each replica limits on its own, so N replicas admit up to N times a
 * limit. That is enough to bound abuse; no correctness property depends on a limit.
 */
export function abuseControls(limits: AbuseLimits, metrics: Metrics, nowMs: () => number): AbuseControls {
  let inFlight = 0;
  metrics.inFlight.set(0);
  const tryEnter = (res: ServerResponse): boolean => {
    if (limits.maxInFlight === null) return true;
    if (inFlight >= limits.maxInFlight) return false;
    inFlight += 1;
    metrics.inFlight.set(inFlight);
    // 'close' fires once per response, after 'finish' or on an aborted connection.
    res.once('close', () => {
      inFlight -= 1;
      metrics.inFlight.set(inFlight);
    });
    return true;
  };
  const concurrency: RequestHandler = (req, res, next) => {
    if (limits.maxInFlight === null || NEVER_SHED.has(req.path) || tryEnter(res)) return next();
    res.set('Retry-After', String(OVERLOAD_RETRY_AFTER_S));
    next(new BatonError('ERR_RATE_LIMITED', 'server busy: too many requests in progress'));
  };
  const takeWorkload = quota(limits.workload, nowMs);
  const takeRenew = quota(limits.renew, nowMs);
  // JWT-SVIDs: the workload quota's limit (--quota-workload), in a bucket of their own, so that a
  // node minting tokens does not starve its X.509 SVIDs, nor the reverse.
  const takeJwt = quota(limits.workload, nowMs);
  const takeAttest = quota(limits.attest, nowMs);
  return {
    concurrency,
    tryEnter,
    takeWorkload,
    takeRenew,
    takeJwt,
    takeAttest,
    attest: limiter(takeAttest, byClient, ATTEST_QUOTA),
    challenge: limiter(quota(limits.attest, nowMs), byClient, 'attestation challenge'),
    ocsp: limiter(quota(limits.public, nowMs), byClient, 'OCSP'),
    crl: limiter(quota(limits.public, nowMs), byClient, 'CRL'),
    bundle: limiter(quota(limits.public, nowMs), byClient, 'bundle'),
    renew: limiter(takeRenew, byPeer, RENEW_QUOTA),
    workload: limiter(takeWorkload, byPeer, WORKLOAD_QUOTA),
    jwt: limiter(takeJwt, byPeer, JWT_QUOTA),
  };
}
