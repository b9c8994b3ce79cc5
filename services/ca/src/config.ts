import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { DAY, HOUR, parseDuration } from './domain/duration';
import { parseProvisioningCas, type X509popSettings } from './domain/attestation/x509pop-attestor';
import { BatonError } from './ground/errors';
import { MAX_TTL, MIN_TTL_MS } from './ground/ttl';
import { NODE_ROLES, type NodeRole } from './domain/ports';
import { validateTrustDomain } from './domain/trust-domain';
import { parsePkcs11Uri, type Pkcs11Uri } from './kms/pkcs11-uri';

/**
 * Configuration is parsed once, from flags then environment, validated, and frozen. This is the
 * only module that interprets environment variables; callers pass `process.env` in.
 * Every setting: flag, environment variable, default.
 */
export type Env = Readonly<Record<string, string | undefined>>;
export type Flags = Readonly<Record<string, string | boolean | string[] | undefined>>;

export interface StorageConfig {
  /** --data-dir / BATON_DATA_DIR, default ./baton-data */
  readonly dataDir: string;
  /** --database-url / BATON_DATABASE_URL; unset: embedded PGlite in <data-dir>/pgdata */
  readonly databaseUrl?: string;
  /** BATON_KEK (base64 of 32 bytes); unset with the embedded default: <data-dir>/kek */
  readonly kekBase64?: string;
  /**
   * --kms / BATON_KMS: an RFC 7512 PKCS#11 URI; set, the CA and JWT keys are made and kept in that
   * token and no KEK is used (kms/pkcs11-uri.ts). Default unset: keys KEK-wrapped.
   */
  readonly kms?: Pkcs11Uri;
}

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface ServerConfig extends StorageConfig {
  /** --listen / BATON_LISTEN, default 127.0.0.1:8443 */
  readonly listen: ListenAddress;
  /** --public-url / BATON_PUBLIC_URL; default: the installation's public URL */
  readonly publicUrl?: string;
  /** --public-http-url / BATON_PUBLIC_HTTP_URL; default: the installation's (none: no HTTP listener) */
  readonly publicHttpUrl?: string;
  /**
   * --listen-http / BATON_LISTEN_HTTP: where the plain-HTTP publication listener listens (set, the
   * listener runs even without a publication URL); default, when there is a publication URL, the
   * --listen host with the URL's port (80 when it has none).
   */
  readonly httpListen?: ListenAddress;
  /** BATON_LOG_LEVEL: trace|debug|info|warn|error, default info */
  readonly logLevel: LogLevel;
  /** BATON_SERVER_CERT_TTL, default 24h: lifetime of the server's own TLS certificate */
  readonly serverCertTtlMs: number;
  /** --crl-next-update / BATON_CRL_NEXT_UPDATE, default 1h: CRL validity; rebuilt at half of it */
  readonly crlNextUpdateMs: number;
  /** BATON_BACKGROUND_INTERVAL, default 10s: CRL freshness and audit sealing period */
  readonly backgroundIntervalMs: number;
  /**
   * --retain-expired / BATON_RETAIN_EXPIRED, default 7d, at least 1m: certificate rows whose
   * notAfter is further in the past are deleted by the retention job (domain/retention.ts).
   */
  readonly retainExpiredMs: number;
  /**
   * --retain-audit / BATON_RETAIN_AUDIT, default 90d, at least 1m: audit rows recorded within it
   * are never pruned; older ones may be exported and pruned (domain/audit-retention.ts).
   */
  readonly retainAuditMs: number;
  /** Set when --x509pop-ca is: the x509pop attestation method is offered (docs/attestation.md). */
  readonly x509pop?: X509popConfig;
  /** Rate limits, quotas and load shedding: per replica, in memory (docs/configuration.md). */
  readonly limits: AbuseLimits;
  /** Slow-client defences of the HTTPS server. */
  readonly http: HttpLimits;
}

/** A token bucket: `burst` requests at once, refilled at `perSecond`. */
export interface RateLimit {
  readonly perSecond: number;
  readonly burst: number;
}

/**
 * Abuse controls. They bound what one client address or one node can cost; correctness never
 * depends on them (token use, serials and revocation are enforced by the database). A limit of
 * null is off. `--rate-limits off` / BATON_RATE_LIMITS=off turns the four rates off unless one is
 * set explicitly.
 */
export interface AbuseLimits {
  /** --rate-attest / BATON_RATE_ATTEST, default 300/m: per client address, POST /v1/attest and POST /v1/attest/challenge (a bucket each) */
  readonly attest: RateLimit | null;
  /** --rate-public / BATON_RATE_PUBLIC, default 6000/m: per client address, OCSP, CRL and bundle (a bucket each) */
  readonly public: RateLimit | null;
  /** --quota-renew / BATON_QUOTA_RENEW, default 10/m: per node, POST /v1/renew */
  readonly renew: RateLimit | null;
  /** --quota-workload / BATON_QUOTA_WORKLOAD, default 300/m: per node, POST /v1/workload-svids */
  readonly workload: RateLimit | null;
  /** --max-in-flight / BATON_MAX_IN_FLIGHT, default 256: requests in progress past which new ones are shed (429) */
  readonly maxInFlight: number | null;
  /**
   * --max-feed-waiters / BATON_MAX_FEED_WAITERS, default 20000: revocation long-polls waiting at once
   * in this process; past it a new one gets 429 (a `wait=0` read, or one with events to answer at
   * once, never waits and is never counted). Sized for a 10,000-node fleet on one replica with room
   * for as many library-based services; about 70 KB of RSS each (docs/configuration.md).
   */
  readonly feedWaiters: number | null;
  /**
   * --max-feed-waiters-per-identity / BATON_MAX_FEED_WAITERS_PER_IDENTITY, default 4: the same per
   * caller, a node (its SPIFFE ID) or a workload SPIFFE ID on the node that minted its SVID. An
   * agent holds one; the rest is room for a poll whose socket has not closed yet.
   */
  readonly feedWaitersPerIdentity: number | null;
}

export interface HttpLimits {
  /** --request-timeout / BATON_REQUEST_TIMEOUT, default 30s: the whole request (headers and body) must arrive within it */
  readonly requestTimeoutMs: number;
  /** --headers-timeout / BATON_HEADERS_TIMEOUT, default 10s: the TLS handshake, and the request headers; below the request timeout */
  readonly headersTimeoutMs: number;
  /** --keep-alive-timeout / BATON_KEEP_ALIVE_TIMEOUT, default 65s: an idle keep-alive connection is closed after it */
  readonly keepAliveTimeoutMs: number;
  /** --idle-timeout / BATON_IDLE_TIMEOUT, default 2m: a socket silent this long during a request is closed; above the 30 s long-poll */
  readonly idleTimeoutMs: number;
  /** --max-requests-per-socket / BATON_MAX_REQUESTS_PER_SOCKET, default 1000 (off: unlimited): then the connection closes */
  readonly maxRequestsPerSocket: number | null;
  /**
   * --max-connections / BATON_MAX_CONNECTIONS, default 25000 (off: unlimited): open connections of
   * this process past which a new one is closed at once, before its TLS handshake. Above
   * --max-feed-waiters plus --max-in-flight, so a full feed leaves room for every other route.
   */
  readonly maxConnections: number | null;
}

export interface X509popConfig extends X509popSettings {
  /**
   * --x509pop-ca FILE / BATON_X509POP_CA, default unset (method not offered): a PEM bundle of the
   * provisioning CA certificates, read and checked once here so a bad file stops the server at start.
   * The role is --x509pop-role / BATON_X509POP_ROLE: worker (default) or manager.
   */
  readonly caFile: string;
}

export interface InitConfig extends StorageConfig {
  readonly trustDomain: string;
  readonly publicUrl: string;
  /** --public-http-url / BATON_PUBLIC_HTTP_URL: CRL and OCSP URLs point here (http://). */
  readonly publicHttpUrl?: string;
  readonly nodeTtlMs: number;
  readonly workloadTtlMs: number;
  readonly adminTtlMs: number;
  /** --upstream-csr FILE: write the signing CA's CSR there and stop (docs/operations.md "Upstream CA"). */
  readonly upstreamCsr?: string;
}

/** `baton ca import`: the certificate an outside CA signed for the pending signing CA, and its chain. */
export interface ImportConfig extends StorageConfig {
  /** --cert FILE (required): PEM, Baton's signing CA certificate first */
  readonly certFile: string;
  /** --chain FILE (required): PEM, the outside intermediates, if any, and the root */
  readonly chainFile: string;
}

export interface AdminClientConfig {
  /** --server / BATON_SERVER, default https://127.0.0.1:8443 */
  readonly server: string;
  /** --admin-dir / BATON_ADMIN_DIR, default <data-dir>/admin */
  readonly adminDir: string;
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'silent'];

export const DEFAULT_LISTEN = '127.0.0.1:8443';

const invalid = (message: string): never => {
  throw new BatonError('ERR_CONFIG_INVALID', message);
};

function str(flags: Flags, name: string, env: Env, envName: string | undefined): string | undefined {
  const v = flags[name];
  if (typeof v === 'string') return v;
  return envName ? env[envName] || undefined : undefined;
}

export function parseTtl(text: string, what: string, max: number): number {
  const ms = parseDuration(text, what);
  if (ms < MIN_TTL_MS) invalid(`${what}: must be at least 1m`);
  if (ms > max) invalid(`${what}: must be at most ${max / DAY}d`);
  return ms;
}

export function parseListen(text: string, what = '--listen'): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || !(port >= 0 && port <= 65535)) invalid(`${what}: expected HOST:PORT, got "${text}"`);
  return { host: host!, port };
}

export function parseUrl(text: string, what: string, scheme: 'https' | 'http' = 'https'): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return invalid(`${what}: not a URL: "${text}"`);
  }
  if (u.protocol !== `${scheme}:`) invalid(`${what}: must be an ${scheme}:// URL`);
  if (u.search || u.hash || u.username || u.password)
    invalid(`${what}: must not have a query, fragment or credentials`);
  return u.toString().replace(/\/+$/, '');
}

function parseDatabaseUrl(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  if (!/^postgres(ql)?:\/\//.test(text)) invalid('--database-url: expected a postgres:// URL');
  return text;
}

export function loadStorageConfig(flags: Flags, env: Env): StorageConfig {
  const kms = str(flags, 'kms', env, 'BATON_KMS');
  return Object.freeze({
    dataDir: resolve(str(flags, 'data-dir', env, 'BATON_DATA_DIR') ?? 'baton-data'),
    databaseUrl: parseDatabaseUrl(str(flags, 'database-url', env, 'BATON_DATABASE_URL')),
    kekBase64: env.BATON_KEK || undefined,
    ...(kms === undefined
      ? {}
      : { kms: parsePkcs11Uri(kms, typeof flags.kms === 'string' ? '--kms' : 'BATON_KMS') }),
  });
}

export function urlForListen(listen: ListenAddress): string {
  const host =
    isIP(listen.host) === 6 ? `[${listen.host}]` : listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host;
  return `https://${host}:${listen.port}`;
}

function loadX509popConfig(flags: Flags, env: Env): X509popConfig | undefined {
  const file = str(flags, 'x509pop-ca', env, 'BATON_X509POP_CA');
  const role = str(flags, 'x509pop-role', env, 'BATON_X509POP_ROLE');
  if (role !== undefined && !NODE_ROLES.includes(role as NodeRole))
    invalid(`--x509pop-role: one of ${NODE_ROLES.join(', ')}`);
  if (file === undefined) {
    // Cross-field: a role without a provisioning CA would silently offer nothing.
    if (role !== undefined) invalid('--x509pop-role: needs --x509pop-ca (the provisioning CA bundle)');
    return undefined;
  }
  const caFile = resolve(file);
  let pem = '';
  try {
    pem = readFileSync(caFile, 'utf8');
  } catch (e) {
    invalid(`--x509pop-ca: cannot read ${caFile} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return Object.freeze({
    caFile,
    cas: Object.freeze(parseProvisioningCas(pem, `--x509pop-ca ${caFile}`)),
    role: (role ?? 'worker') as NodeRole,
  });
}

const RATE_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600 };

/** `60/m` (60 at once, then one a second), `10/s,burst=50`, or `off` (null). */
export function parseRate(text: string, what: string): RateLimit | null {
  const t = text.trim().toLowerCase().replace(/\s+/g, '');
  if (t === 'off') return null;
  const m = /^(\d{1,9})\/(s|m|h)(?:,burst=(\d{1,9}))?$/.exec(t);
  if (!m) return invalid(`${what}: expected N/s, N/m or N/h (optionally ",burst=B"), or off; got "${text}"`);
  const count = Number(m[1]);
  const burst = m[3] === undefined ? count : Number(m[3]);
  if (count < 1 || burst < 1) invalid(`${what}: the rate and the burst must be at least 1`);
  return { perSecond: count / RATE_UNITS[m[2]!]!, burst };
}

/** A positive count, or `off` (null). */
function parseCount(text: string, what: string): number | null {
  const t = text.trim().toLowerCase();
  if (t === 'off') return null;
  if (!/^\d{1,9}$/.test(t) || Number(t) < 1) return invalid(`${what}: a positive integer or off`);
  return Number(t);
}

/** A count flag (a positive integer, or `off` for no limit): the flag, else the environment, else the default. */
const countFlag = (flags: Flags, env: Env, flag: string, envName: string, fallback: string): number | null =>
  parseCount(str(flags, flag, env, envName) ?? fallback, `--${flag}`);

/** The revocation long-poll holds a request up to 30 s without traffic (CONTRACT). */
const LONG_POLL_MS = 30_000;

function loadAbuseLimits(flags: Flags, env: Env): AbuseLimits {
  const master = (str(flags, 'rate-limits', env, 'BATON_RATE_LIMITS') ?? 'on').trim().toLowerCase();
  if (master !== 'on' && master !== 'off') invalid('--rate-limits: on or off');
  const rate = (flag: string, envName: string, fallback: string) =>
    parseRate(str(flags, flag, env, envName) ?? (master === 'off' ? 'off' : fallback), `--${flag}`);
  return Object.freeze({
    attest: rate('rate-attest', 'BATON_RATE_ATTEST', '300/m'),
    public: rate('rate-public', 'BATON_RATE_PUBLIC', '6000/m'),
    renew: rate('quota-renew', 'BATON_QUOTA_RENEW', '10/m'),
    workload: rate('quota-workload', 'BATON_QUOTA_WORKLOAD', '300/m'),
    maxInFlight: countFlag(flags, env, 'max-in-flight', 'BATON_MAX_IN_FLIGHT', '256'),
    feedWaiters: countFlag(flags, env, 'max-feed-waiters', 'BATON_MAX_FEED_WAITERS', '20000'),
    feedWaitersPerIdentity: countFlag(
      flags,
      env,
      'max-feed-waiters-per-identity',
      'BATON_MAX_FEED_WAITERS_PER_IDENTITY',
      '4',
    ),
  });
}

function loadHttpLimits(flags: Flags, env: Env): HttpLimits {
  const ms = (flag: string, envName: string, fallback: string) => {
    const v = parseDuration(str(flags, flag, env, envName) ?? fallback, `--${flag}`);
    if (v < 100) invalid(`--${flag}: must be at least 100ms`);
    return v;
  };
  const limits: HttpLimits = {
    requestTimeoutMs: ms('request-timeout', 'BATON_REQUEST_TIMEOUT', '30s'),
    headersTimeoutMs: ms('headers-timeout', 'BATON_HEADERS_TIMEOUT', '10s'),
    keepAliveTimeoutMs: ms('keep-alive-timeout', 'BATON_KEEP_ALIVE_TIMEOUT', '65s'),
    idleTimeoutMs: ms('idle-timeout', 'BATON_IDLE_TIMEOUT', '2m'),
    maxRequestsPerSocket: countFlag(
      flags,
      env,
      'max-requests-per-socket',
      'BATON_MAX_REQUESTS_PER_SOCKET',
      '1000',
    ),
    maxConnections: countFlag(flags, env, 'max-connections', 'BATON_MAX_CONNECTIONS', '25000'),
  };
  // Cross-field: Node refuses headersTimeout above requestTimeout, and a socket timeout shorter than
  // the long-poll would cut every idle revocation feed.
  if (limits.headersTimeoutMs >= limits.requestTimeoutMs)
    invalid('--headers-timeout: must be below --request-timeout');
  if (limits.idleTimeoutMs <= LONG_POLL_MS)
    invalid('--idle-timeout: must be above 30s (the revocation long-poll)');
  return Object.freeze(limits);
}

/**
 * Cross-field: the per-identity cap fits in the total one, and a full feed still leaves connections
 * for the routes it must not starve (renewals above all); past --max-connections Node closes new
 * connections without a word, which no client can tell from a network fault.
 */
function checkConnectionBudget(limits: AbuseLimits, http: HttpLimits): void {
  const { feedWaiters, feedWaitersPerIdentity, maxInFlight } = limits;
  if (feedWaiters !== null && feedWaitersPerIdentity !== null && feedWaitersPerIdentity > feedWaiters)
    invalid('--max-feed-waiters-per-identity: must not exceed --max-feed-waiters');
  if (http.maxConnections === null) return;
  if (feedWaiters === null)
    invalid('--max-connections: needs --max-feed-waiters (unlimited long-polls would take every connection)');
  if (http.maxConnections <= feedWaiters! + (maxInFlight ?? 0))
    invalid('--max-connections: must be above --max-feed-waiters plus --max-in-flight');
}

/**
 * Retention defaults (CONTRACT "Fleet scale"). A week of expired certificates is what an operator
 * looks back on after an incident (`baton cert list --status expired`); 90 days of audit rows is
 * the usual online window for security logs, older ones going to an archive (the export).
 */
export const DEFAULT_RETAIN_EXPIRED = '7d';
export const DEFAULT_RETAIN_AUDIT = '90d';

/** A retention window: a duration of at least a minute. */
function parseRetention(text: string, what: string): number {
  const ms = parseDuration(text, what);
  if (ms < MIN_TTL_MS) invalid(`${what}: must be at least 1m`);
  return ms;
}

export function loadServerConfig(flags: Flags, env: Env): ServerConfig {
  const level = (env.BATON_LOG_LEVEL || 'info') as LogLevel;
  if (!LOG_LEVELS.includes(level)) invalid(`BATON_LOG_LEVEL: one of ${LOG_LEVELS.join(', ')}`);
  const publicUrl = str(flags, 'public-url', env, 'BATON_PUBLIC_URL');
  const publicHttpUrl = str(flags, 'public-http-url', env, 'BATON_PUBLIC_HTTP_URL');
  const httpListen = str(flags, 'listen-http', env, 'BATON_LISTEN_HTTP');
  const limits = loadAbuseLimits(flags, env);
  const http = loadHttpLimits(flags, env);
  checkConnectionBudget(limits, http);
  return Object.freeze({
    ...loadStorageConfig(flags, env),
    listen: parseListen(str(flags, 'listen', env, 'BATON_LISTEN') ?? DEFAULT_LISTEN),
    publicUrl: publicUrl === undefined ? undefined : parseUrl(publicUrl, '--public-url'),
    ...(publicHttpUrl === undefined
      ? {}
      : { publicHttpUrl: parseUrl(publicHttpUrl, '--public-http-url', 'http') }),
    ...(httpListen === undefined ? {} : { httpListen: parseListen(httpListen, '--listen-http') }),
    logLevel: level,
    serverCertTtlMs: parseTtl(env.BATON_SERVER_CERT_TTL ?? '24h', 'BATON_SERVER_CERT_TTL', 30 * DAY),
    crlNextUpdateMs: parseTtl(
      str(flags, 'crl-next-update', env, 'BATON_CRL_NEXT_UPDATE') ?? '1h',
      '--crl-next-update',
      7 * DAY,
    ),
    backgroundIntervalMs: parseDuration(env.BATON_BACKGROUND_INTERVAL ?? '10s', 'BATON_BACKGROUND_INTERVAL'),
    retainExpiredMs: parseRetention(
      str(flags, 'retain-expired', env, 'BATON_RETAIN_EXPIRED') ?? DEFAULT_RETAIN_EXPIRED,
      '--retain-expired',
    ),
    retainAuditMs: parseRetention(
      str(flags, 'retain-audit', env, 'BATON_RETAIN_AUDIT') ?? DEFAULT_RETAIN_AUDIT,
      '--retain-audit',
    ),
    x509pop: loadX509popConfig(flags, env),
    limits,
    http,
  });
}

export function loadInitConfig(flags: Flags, env: Env): InitConfig {
  const td = str(flags, 'trust-domain', env, undefined);
  if (!td) throw new BatonError('ERR_USAGE', '--trust-domain is required');
  let trustDomain: string;
  try {
    trustDomain = validateTrustDomain(td);
  } catch (e) {
    return invalid(`--trust-domain: ${(e as Error).message}`);
  }
  return Object.freeze({
    ...loadStorageConfig(flags, env),
    trustDomain,
    publicUrl: parseUrl(
      str(flags, 'public-url', env, 'BATON_PUBLIC_URL') ?? urlForListen(parseListen(DEFAULT_LISTEN)),
      '--public-url',
    ),
    ...(str(flags, 'public-http-url', env, 'BATON_PUBLIC_HTTP_URL') === undefined
      ? {}
      : {
          publicHttpUrl: parseUrl(
            str(flags, 'public-http-url', env, 'BATON_PUBLIC_HTTP_URL')!,
            '--public-http-url',
            'http',
          ),
        }),
    nodeTtlMs: parseTtl(str(flags, 'node-ttl', env, undefined) ?? '24h', '--node-ttl', MAX_TTL.node),
    workloadTtlMs: parseTtl(
      str(flags, 'workload-ttl', env, undefined) ?? '1h',
      '--workload-ttl',
      MAX_TTL.workload,
    ),
    adminTtlMs: parseTtl(str(flags, 'admin-ttl', env, undefined) ?? '8h', '--admin-ttl', MAX_TTL.admin),
    ...(typeof flags['upstream-csr'] === 'string' ? { upstreamCsr: resolve(flags['upstream-csr']) } : {}),
  });
}

export function loadImportConfig(flags: Flags, env: Env): ImportConfig {
  const file = (name: string) => {
    const v = str(flags, name, env, undefined);
    if (!v) throw new BatonError('ERR_USAGE', `--${name} is required`);
    return resolve(v);
  };
  return Object.freeze({
    ...loadStorageConfig(flags, env),
    certFile: file('cert'),
    chainFile: file('chain'),
  });
}

export function loadAdminClientConfig(flags: Flags, env: Env): AdminClientConfig {
  // Only for the data dir: an admin command talks to the server and never reads the token's PIN.
  const storage = loadStorageConfig(flags, { ...env, BATON_KMS: undefined });
  return Object.freeze({
    server: parseUrl(
      str(flags, 'server', env, 'BATON_SERVER') ?? urlForListen(parseListen(DEFAULT_LISTEN)),
      '--server',
    ),
    adminDir: resolve(str(flags, 'admin-dir', env, 'BATON_ADMIN_DIR') ?? join(storage.dataDir, 'admin')),
  });
}

export const DEFAULTS = { nodeTtlMs: 24 * HOUR, workloadTtlMs: HOUR, adminTtlMs: 8 * HOUR } as const;
