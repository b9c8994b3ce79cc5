import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import type { OpenCa } from '../ca-service';
import { type ServerConfig, urlForListen } from '../config';
import type { Attestor } from '../domain/attestation/attestor';
import { defaultAttestors } from '../domain/attestation/registry';
import { x509popAttestor } from '../domain/attestation/x509pop-attestor';
import type { Clock } from '../domain/clock';
import { buildApp } from '../http/app';
import { createMetrics, type Metrics } from '../http/metrics';
import { F } from '../log-fields';
import { caSetVersion } from '../domain/ca-rotation';
import { loadKeyring } from '../domain/keyring';
import { type BackgroundJobs, startBackgroundJobs } from './background-jobs';
import { CrlService } from './crl-service';
import { RevocationFeed } from './revocation-feed';
import { issueServerCredential, type ServerCredential } from './server-certificate';

export interface RunningServer {
  /** https://HOST:PORT actually bound (port 0 resolved). */
  url: string;
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
}): Promise<RunningServer> {
  const { config, ca, clock, log } = p;
  const publicUrl = config.publicUrl ?? ca.installation.publicUrl;
  const metrics = createMetrics();
  const crlDeps = () => ({
    clock,
    storage: ca.storage,
    keyring: ca.keyring,
    nextUpdateMs: config.crlNextUpdateMs,
  });
  const crls = new CrlService(crlDeps);
  const feed = new RevocationFeed(ca.storage.revocations, log);
  const app = buildApp({
    clock,
    storage: ca.storage,
    installation: ca.installation,
    keyring: () => ca.keyring,
    log,
    metrics,
    // x509pop is offered only when a provisioning CA is configured (--x509pop-ca).
    attestors: p.attestors ?? defaultAttestors(config.x509pop ? [x509popAttestor(config.x509pop)] : []),
    random: p.random ?? Math.random,
    crls,
    feed,
    afterRevocation: async () => {
      await crls.republish();
      feed.notify();
    },
  });
  const issue = () =>
    issueServerCredential({
      clock,
      keyring: ca.keyring,
      installation: ca.installation,
      certificates: ca.storage.certificates,
      listen: config.listen,
      publicUrl,
      ttlMs: config.serverCertTtlMs,
    });
  let credential: ServerCredential = await issue();
  const tlsOptions = (c: ServerCredential): SecureContextOptions => ({
    key: c.key,
    cert: c.cert,
    ca: ca.keyring.bundlePem,
  });
  const server = createServer(
    {
      ...tlsOptions(credential),
      minVersion: 'TLSv1.2',
      requestCert: true,
      rejectUnauthorized: false,
      // Slow-client limits: a TLS handshake or request header that dribbles in is cut off.
      requestTimeout: 30_000,
      headersTimeout: 10_000,
      keepAliveTimeout: 65_000,
    },
    app,
  );
  server.maxHeadersCount = 100;

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

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  schedule(halfLife(credential));
  let caVersion = caSetVersion(ca.keyring.all.map((c) => c.record));
  const reloadKeyring = async () => {
    const cas = await ca.storage.cas.listCas();
    const version = caSetVersion(cas);
    if (version === caVersion) return;
    ca.keyring = loadKeyring(cas, ca.kek, publicUrl);
    caVersion = version;
    log.info({ [F.caId]: ca.keyring.signing.record.id }, 'CA set changed: keyring reloaded');
  };
  const jobs = startBackgroundJobs({
    reloadKeyring,
    crls,
    audit: ca.storage.audit,
    log,
    intervalMs: config.backgroundIntervalMs,
  });
  const port = (server.address() as AddressInfo).port;
  const url = urlForListen({ host: config.listen.host, port });
  log.info({ [F.url]: url, [F.trustDomain]: ca.installation.trustDomain }, 'Server listening');

  return {
    url,
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
      jobs.stop();
      feed.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Idle keep-alive sockets would hold close() open; in-flight requests finish first.
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 5000).unref();
      });
    },
  };
}
