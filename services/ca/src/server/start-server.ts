import { constants } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:https';
import { type AddressInfo, isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import type { OpenCa } from '../ca-service';
import { type ServerConfig, urlForListen } from '../config';
import type { Attestor } from '../domain/attestation/attestor';
import { defaultAttestors } from '../domain/attestation/registry';
import { x509popAttestor } from '../domain/attestation/x509pop-attestor';
import type { Clock } from '../domain/clock';
import { MAX_HEADER_BYTES } from '../http/abuse-controls';
import { buildApp, buildPublicationApp } from '../http/app';
import type { AppDeps } from '../http/ports';
import { createMetrics, type Metrics, timedIssuance } from '../http/metrics';
import { MintTally } from '../domain/jwt-mint-tally';
import { F } from '../log-fields';
import { nativeEc } from '../pki/native-ec';
import { caSetVersion } from '../domain/ca-rotation';
import { BatonError } from '../ground/errors';
import { ensureJwtKey } from '../domain/jwt-keys';
import { type Keyring, loadKeyring } from '../domain/keyring';
import { publicationUrlOf } from '../domain/urls';
import { type BackgroundJobs, RETENTION_MAX_PERIOD_MS, startBackgroundJobs } from './background-jobs';
import { capConnections } from './connection-cap';
import { CrlService } from './crl-service';
import { RevocationFeed } from './revocation-feed';
import { issueServerCredential, type ServerCredential } from './server-certificate';

/**
 * The keyring without its signing CA: every use of `signing` throws ERR_CA_UNAVAILABLE (503), and
 * no JWT signing key (`jwt.active` null); the JWKS keeps what it published.
 */
function withoutSigning(keyring: Keyring, cause: unknown): Keyring {
  const unavailable = new BatonError(
    'ERR_CA_UNAVAILABLE',
    'the signing CA is unavailable on this replica (its key cannot be unwrapped): retry on another replica',
    { cause },
  );
  return Object.defineProperty({ ...keyring, jwt: { ...keyring.jwt, active: null } }, 'signing', {
    enumerable: true,
    get: (): never => {
      throw unavailable;
    },
  });
}

export interface RunningServer {
  /** https://HOST:PORT actually bound (port 0 resolved). */
  url: string;
  /** http://HOST:PORT of the publication listener, when there is one (--public-http-url). */
  publicationListenUrl?: string;
  server: Server;
  metrics: Metrics;
  crls: CrlService;
  feed: RevocationFeed;
  jobs: BackgroundJobs;
  /** The serial of the certificate new TLS handshakes get. */
  currentCertificateSerial(): string;
  /** Issues a new server certificate and swaps it in for new handshakes (open connections stay). */
  renewCertificate(): Promise<void>;
  close(): Promise<void>;
}

const RETRY_RENEWAL_MS = 60_000;

/** Resolves once `server` listens on `at`, rejects with its listen error (EADDRINUSE, EACCES). */
function listenOn(server: Server | HttpServer, at: { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Serves the API over HTTPS. TLS 1.2 minimum (1.3 negotiated when the client has it); client
 * certificates are requested but not required, because authorization is decided per route.
 */
export async function startServer(p: {
  config: ServerConfig;
  ca: OpenCa;
  clock: Clock;
  log: Logger;
  attestors?: ReadonlyMap<string, Attestor>;
  random?: () => number;
  /** Monotonic milliseconds for the rate limits; default performance.now(). */
  monotonicMs?: () => number;
  /**
   * Period of the retention job; default the background interval, at most a minute (CONTRACT). The
   * in-process test server runs its jobs by hand and sets it out of the way, as it does the interval.
   */
  retentionPeriodMs?: number;
}): Promise<RunningServer> {
  const { config, ca, clock, log } = p;
  const publicUrl = config.publicUrl ?? ca.installation.publicUrl;
  const publicationUrl = publicationUrlOf(ca.installation, config);
  const versionOf = (k: Keyring) =>
    caSetVersion(
      k.all.map((c) => c.record),
      k.jwt.keys,
    );
  // The signing CA must have a JWT signing key: one initialized before JWT-SVIDs has none, and the
  // first replica to start makes it (domain/jwt-keys.ts ensureJwtKey; replicas starting at once
  // end with one).
  const keys = await ensureJwtKey({ storage: ca.storage, kek: ca.custody, clock });
  if (caSetVersion(keys.cas, keys.jwtKeys) !== versionOf(ca.keyring))
    ca.keyring = loadKeyring(keys.cas, ca.custody, publicUrl, keys.jwtKeys, publicationUrl, keys.cross);
  const metrics = createMetrics();
  const crlDeps = () => ({
    clock,
    storage: ca.storage,
    keyring: ca.keyring,
    nextUpdateMs: config.crlNextUpdateMs,
  });
  const crls = new CrlService(crlDeps);
  const feed = new RevocationFeed(ca.storage.revocations, log, {
    limits: { total: config.limits.feedWaiters, perIdentity: config.limits.feedWaitersPerIdentity },
  });
  // JWT-SVID mints are audited per node, SPIFFE ID and minute: the background jobs write the
  // minutes that ended, close() the rest.
  const mints = new MintTally(ca.storage.audit, clock);
  const appDeps: AppDeps = {
    clock,
    storage: ca.storage,
    installation: ca.installation,
    keyring: () => ca.keyring,
    log,
    metrics,
    // Called only by requests, after reloadKeyring below is defined.
    caSet: { kek: ca.custody, publicationUrl, reload: () => reloadKeyring() },
    // x509pop is offered only when a provisioning CA is configured (--x509pop-ca).
    attestors: p.attestors ?? defaultAttestors(config.x509pop ? [x509popAttestor(config.x509pop)] : []),
    random: p.random ?? Math.random,
    crls,
    feed,
    // The revocation's transaction published the CRLs (RevocationDeps.publishCrls); once it has
    // committed, this replica serves them and wakes its feed at once.
    afterRevocation: async () => {
      crls.forget();
      feed.notify();
    },
    limits: config.limits,
    monotonicMs: p.monotonicMs ?? (() => performance.now()),
    jwtMints: mints,
    auditRetainMs: config.retainAuditMs,
  };
  const app = buildApp(appDeps);
  const issue = () =>
    timedIssuance(metrics, 'server', 'server', () =>
      issueServerCredential({
        clock,
        keyring: ca.keyring,
        installation: ca.installation,
        certificates: ca.storage.certificates,
        listen: config.listen,
        publicUrl,
        ttlMs: config.serverCertTtlMs,
      }),
    );
  let credential: ServerCredential = await issue();
  // Every option of the secure context, since setSecureContext (on each server certificate renewal)
  // resets whatever it is not given.
  const tlsOptions = (c: ServerCredential): SecureContextOptions => ({
    key: c.key,
    cert: c.cert,
    ca: ca.keyring.trustPem,
    minVersion: 'TLSv1.2',
    // No TLS session resumption. A resumed session carries the client certificate and OpenSSL's
    // verdict on it forward without checking them again (a certificate expired since would still
    // be "authorized" in http/peer-cert.ts; only the per-request database checks would catch it):
    // every connection gets a full handshake, as the client library's agent already insists
    // (maxCachedSessions 0). It also saves the server a quarter of a millisecond per handshake:
    // OpenSSL 3 encodes and re-parses the session, client certificate included, for each stateless
    // ticket (RFC 8446 §4.6.1), and most clients are nodes that connect once per renewal.
    secureOptions: constants.SSL_OP_NO_TICKET,
  });
  const limits = config.http;
  const server = createServer(
    {
      ...tlsOptions(credential),
      requestCert: true,
      rejectUnauthorized: false,
      // Slow-client limits: a TLS handshake or request header that dribbles in is cut off
      // (slowloris), a body that dribbles in too, and oversized headers get 431 from Node.
      handshakeTimeout: limits.headersTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      maxHeaderSize: MAX_HEADER_BYTES,
      // Node checks the two timeouts above on this period (default 30 s): keep it well below them.
      connectionsCheckingInterval: Math.max(100, Math.min(1000, limits.headersTimeoutMs / 4)),
    },
    app,
  );
  // Node would drop headers past maxHeadersCount silently (Host included, giving a bare 400): keep
  // them all, since maxHeaderSize bounds the memory, and let headerLimit refuse past MAX_HEADERS.
  server.maxHeadersCount = 0;
  // A socket silent this long in the middle of a request (a client that stops reading) is closed.
  server.timeout = limits.idleTimeoutMs;
  // Keep-alive connections end after this many requests, so clients behind an L4 load balancer
  // spread over replicas again (authorization never depends on the connection).
  server.maxRequestsPerSocket = limits.maxRequestsPerSocket ?? 0;
  // Every connection costs memory, long-polls most of all (--max-feed-waiters caps those with a
  // 429); past this many the rest are closed unanswered, whoever opens them.
  capConnections(server, limits.maxConnections, () => metrics.connectionsDropped.inc());
  // A TLS 1.2 client could renegotiate with another certificate mid-connection; peer identity is
  // read once per socket (http/peer-cert.ts), so renegotiation is refused outright.
  server.on('secureConnection', (socket) => socket.disableRenegotiation());

  let timer: NodeJS.Timeout | undefined;
  const schedule = (delayMs: number) => {
    timer = setTimeout(() => void renew(), Math.max(1000, delayMs));
    timer.unref();
  };
  const halfLife = (c: ServerCredential) => {
    const { notBefore, notAfter } = c.issued.record;
    return notBefore.getTime() + (notAfter.getTime() - notBefore.getTime()) / 2 - clock.now().getTime();
  };
  const renew = async () => {
    try {
      credential = await issue();
      server.setSecureContext(tlsOptions(credential));
      log.info(
        { [F.serial]: credential.issued.record.serial, [F.notAfter]: credential.issued.record.notAfter },
        'Server certificate renewed',
      );
      schedule(halfLife(credential));
    } catch (err) {
      log.error({ [F.err]: err }, 'Server certificate renewal failed');
      schedule(RETRY_RENEWAL_MS);
    }
  };

  await listenOn(server, config.listen);
  // The plain-HTTP publication listener (issue 18): only the bundle, the CRLs, OCSP and the OIDC
  // discovery document, so that the
  // CRL Distribution Points and OCSP URLs in certificates are http (RFC 5280 §4.2.1.13).
  const publicHttp = config.publicHttpUrl ?? ca.installation.publicHttpUrl;
  let publication: HttpServer | undefined;
  let publicationListenUrl: string | undefined;
  if (publicHttp || config.httpListen) {
    const at = config.httpListen ?? {
      host: config.listen.host,
      port: Number(new URL(publicHttp!).port || 80),
    };
    publication = createHttpServer(buildPublicationApp(appDeps));
    publication.headersTimeout = 10_000;
    publication.requestTimeout = 30_000;
    await listenOn(publication, at).catch((e: unknown) => {
      // The HTTPS listener is up already: a server that cannot publish does not start at all.
      server.close();
      throw e;
    });
    const port = (publication.address() as AddressInfo).port;
    publicationListenUrl = `http://${isIP(at.host) === 6 ? `[${at.host}]` : at.host}:${port}`;
    log.info({ [F.url]: publicationListenUrl }, 'Publication listener (HTTP) listening');
  }
  schedule(halfLife(credential));
  let caVersion = versionOf(ca.keyring);
  let lastLoaded = ca.keyring;
  let signingUnavailable = false;
  const reloadKeyring = async () => {
    // The CA set and its JWT keys; a signing CA without a JWT key (rotated by an older version)
    // gets one here.
    const { cas, jwtKeys, cross } = await ensureJwtKey({ storage: ca.storage, kek: ca.custody, clock });
    const version = caSetVersion(cas, jwtKeys);
    if (version === caVersion) return;
    try {
      ca.keyring = loadKeyring(cas, ca.custody, publicUrl, jwtKeys, publicationUrl, cross);
    } catch (err) {
      // No fallback: a replica that cannot unwrap the new CA set (a rotation made under another
      // KEK) must not go on signing with the intermediate it had. It stops issuing (503 with
      // Retry-After, /readyz 503) and retries at every interval; the CAs it holds keep their CRLs.
      if (!signingUnavailable)
        log.error({ [F.err]: err }, 'CA set changed but its keys cannot be loaded: issuance stopped');
      signingUnavailable = true;
      ca.keyring = withoutSigning(lastLoaded, err);
      return;
    }
    const before = lastLoaded;
    lastLoaded = ca.keyring;
    caVersion = version;
    if (before.bundlePem !== ca.keyring.bundlePem) {
      // A root rotation started or finished: the server's own chain follows at once (with the
      // cross-certificate during the overlap, without it after), and so does what it trusts.
      clearTimeout(timer);
      await renew();
    } else if (before.trustPem !== ca.keyring.trustPem) {
      server.setSecureContext(tlsOptions(credential));
    }
    if (signingUnavailable) log.warn('CA keys loaded again: issuance resumed');
    signingUnavailable = false;
    log.info({ [F.caId]: ca.keyring.signing.record.id }, 'CA set changed: keyring reloaded');
  };
  const jobs = startBackgroundJobs({
    reloadKeyring,
    crls,
    audit: ca.storage.audit,
    nonces: ca.storage.nonces,
    clock,
    log,
    intervalMs: config.backgroundIntervalMs,
    flushMints: () => mints.flush(),
    retention: {
      storage: ca.storage,
      retainMs: config.retainExpiredMs,
      periodMs: p.retentionPeriodMs ?? Math.min(config.backgroundIntervalMs, RETENTION_MAX_PERIOD_MS),
      onBatch: (deleted) => metrics.retentionDeleted.inc(deleted),
      onRun: (run) => {
        if (run === 'failed' || !run.ran) {
          metrics.retentionRuns.inc({ outcome: run === 'failed' ? 'failed' : 'skipped' });
          return;
        }
        metrics.retentionRuns.inc({ outcome: run.complete ? 'completed' : 'partial' });
        metrics.retentionLastRun.set(clock.now().getTime() / 1000);
      },
    },
  });
  const port = (server.address() as AddressInfo).port;
  const url = urlForListen({ host: config.listen.host, port });
  log.info(
    {
      [F.url]: url,
      [F.trustDomain]: ca.installation.trustDomain,
      [F.csrVerifier]: nativeEc ? 'native' : 'node:crypto',
    },
    'Server listening',
  );

  return {
    url,
    ...(publicationListenUrl ? { publicationListenUrl } : {}),
    server,
    metrics,
    crls,
    feed,
    jobs,
    currentCertificateSerial: () => credential.issued.record.serial,
    renewCertificate: async () => {
      if (timer) clearTimeout(timer);
      await renew();
    },
    close: async () => {
      if (timer) clearTimeout(timer);
      const jobsStopped = jobs.stop();
      feed.close();
      if (publication) {
        const closing = new Promise<void>((resolve) => publication!.close(() => resolve()));
        publication.closeAllConnections();
        await closing;
      }
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Idle keep-alive sockets would hold close() open; in-flight requests finish first.
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 5000).unref();
      });
      // A job under way ends after its current statement, before the caller closes the database.
      await jobsStopped;
      // Requests have finished: every mint is counted.
      await mints
        .flush({ all: true })
        .catch((err: unknown) => log.error({ [F.err]: err }, 'Audit of JWT-SVID mints failed at stop'));
    },
  };
}
