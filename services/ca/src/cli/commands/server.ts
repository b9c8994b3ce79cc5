import { writeAdminCredentials, localActor } from '../../admin-credentials';
import { initCa, openCa } from '../../ca-service';
import { loadInitConfig, loadServerConfig } from '../../config';
import { systemClock } from '../../domain/clock';
import { isBatonError } from '../../ground/errors';
import { createLogger } from '../../logger';
import { isClusterWorker, parseWorkers, runClusterPrimary } from '../../server/cluster';
import { startServer } from '../../server/start-server';
import { join } from 'node:path';
import { type Command, STORAGE_OPTIONS } from '../command';

export const server: Command = {
  words: ['server'],
  summary:
    'Run migrations and serve the API over HTTPS with a certificate from the CA, renewed automatically. Prints "listening on https://HOST:PORT". Stops cleanly on SIGTERM/SIGINT.',
  options: {
    listen: {
      type: 'string',
      value: 'HOST:PORT',
      description: 'address to listen on (env BATON_LISTEN, default 127.0.0.1:8443; port 0 picks one)',
    },
    'public-url': {
      type: 'string',
      value: 'URL',
      description: 'public https URL (env BATON_PUBLIC_URL; default: the one given at ca init)',
    },
    'public-http-url': {
      type: 'string',
      value: 'URL',
      description:
        'plain-HTTP publication URL: CRL and OCSP URLs of certificates made from now on point here, and a listener serves only the bundle, CRLs and OCSP there (env BATON_PUBLIC_HTTP_URL; default: the one given at ca init)',
    },
    'listen-http': {
      type: 'string',
      value: 'HOST:PORT',
      description:
        'address of the publication listener (env BATON_LISTEN_HTTP; default with --public-http-url: the --listen host with its port; port 0 picks one)',
    },
    'x509pop-ca': {
      type: 'string',
      value: 'FILE',
      description:
        'PEM bundle of provisioning CA certificates; set, the x509pop attestation method is offered (env BATON_X509POP_CA)',
    },
    'x509pop-role': {
      type: 'string',
      value: 'ROLE',
      description:
        'role of nodes attested by x509pop: worker|manager (env BATON_X509POP_ROLE, default worker)',
    },
    'crl-next-update': {
      type: 'string',
      value: '1h',
      description: 'CRL validity (env BATON_CRL_NEXT_UPDATE); rebuilt at half of it and on every revocation',
    },
    'retain-expired': {
      type: 'string',
      value: '7d',
      description:
        'certificate rows expired longer than this are deleted, revoked ones too, by a job that runs at least once a minute on one replica at a time; at least 1m (env BATON_RETAIN_EXPIRED)',
    },
    'retain-audit': {
      type: 'string',
      value: '90d',
      description:
        'audit rows recorded within this are never pruned; older ones may be exported and pruned with baton audit export/prune; at least 1m (env BATON_RETAIN_AUDIT)',
    },
    'rate-limits': {
      type: 'string',
      value: 'on|off',
      description:
        'off: the four limits below default to off (env BATON_RATE_LIMITS, default on); limits are per replica',
    },
    'rate-attest': {
      type: 'string',
      value: '300/m',
      description:
        'per client address on POST /v1/attest and /v1/attest/challenge: N/s|m|h[,burst=B] or off (env BATON_RATE_ATTEST)',
    },
    'rate-public': {
      type: 'string',
      value: '6000/m',
      description: 'per client address on OCSP, CRL and bundle (env BATON_RATE_PUBLIC)',
    },
    'quota-renew': {
      type: 'string',
      value: '10/m',
      description: 'per node on POST /v1/renew (env BATON_QUOTA_RENEW)',
    },
    'quota-workload': {
      type: 'string',
      value: '300/m',
      description: 'per node on POST /v1/workload-svids (env BATON_QUOTA_WORKLOAD)',
    },
    'max-in-flight': {
      type: 'string',
      value: '256',
      description:
        'requests in progress past which new ones get 429 + Retry-After, or off (env BATON_MAX_IN_FLIGHT)',
    },
    'max-feed-waiters': {
      type: 'string',
      value: '20000',
      description:
        'revocation long-polls waiting at once past which a new one gets 429 + Retry-After, or off (env BATON_MAX_FEED_WAITERS)',
    },
    'max-feed-waiters-per-identity': {
      type: 'string',
      value: '4',
      description:
        'the same per node, or per workload SPIFFE ID on a node, or off (env BATON_MAX_FEED_WAITERS_PER_IDENTITY)',
    },
    'max-connections': {
      type: 'string',
      value: '25000',
      description:
        'open connections past which new ones are closed unanswered, or off; above --max-feed-waiters plus --max-in-flight (env BATON_MAX_CONNECTIONS)',
    },
    'request-timeout': {
      type: 'string',
      value: '30s',
      description: 'the whole request must arrive within it (env BATON_REQUEST_TIMEOUT)',
    },
    'headers-timeout': {
      type: 'string',
      value: '10s',
      description:
        'the TLS handshake and the request headers must arrive within it; below --request-timeout (env BATON_HEADERS_TIMEOUT)',
    },
    'keep-alive-timeout': {
      type: 'string',
      value: '65s',
      description: 'an idle keep-alive connection is closed after it (env BATON_KEEP_ALIVE_TIMEOUT)',
    },
    'idle-timeout': {
      type: 'string',
      value: '2m',
      description: 'a socket silent this long during a request is closed; above 30s (env BATON_IDLE_TIMEOUT)',
    },
    'max-requests-per-socket': {
      type: 'string',
      value: '1000',
      description:
        'a keep-alive connection closes after this many requests, or off (env BATON_MAX_REQUESTS_PER_SOCKET)',
    },
    workers: {
      type: 'string',
      value: 'N',
      description:
        'serve from N processes sharing the port (node cluster), or auto: one per CPU; needs --database-url (default 1)',
    },
    'init-trust-domain': {
      type: 'string',
      value: 'TD',
      description: 'initialize the CA with this trust domain first if it is not initialized yet (npm start)',
    },
    ...STORAGE_OPTIONS,
  },
  async run(ctx) {
    const cfg = loadServerConfig(ctx.flags, ctx.env);
    const workers = parseWorkers(ctx.flags.workers, cfg);
    const log = createLogger(cfg.logLevel);
    const td = ctx.flags['init-trust-domain'];
    const ca = await openCa(cfg, { publicUrl: cfg.publicUrl }).catch(async (e) => {
      if (typeof td !== 'string' || !isBatonError(e, 'ERR_NOT_INITIALIZED')) throw e;
      const initCfg = loadInitConfig({ ...ctx.flags, 'trust-domain': td }, ctx.env);
      const created = await initCa(initCfg, systemClock);
      const adminDir = join(initCfg.dataDir, 'admin');
      await writeAdminCredentials(
        {
          clock: systemClock,
          keyring: created.keyring,
          installation: created.installation,
          storage: created.storage,
        },
        { name: 'admin', role: 'admin', dir: adminDir, audit: localActor() },
      );
      ctx.stdout.write(`initialized trust domain ${td}\nroot pin: ${created.keyring.pin}\n`);
      await created.storage.close();
      return openCa(cfg, { publicUrl: cfg.publicUrl });
    });
    const banner = [
      `trust domain: ${ca.installation.trustDomain}`,
      `admin credentials: ${join(cfg.dataDir, 'admin')}`,
      ...(cfg.x509pop
        ? [
            `x509pop attestation: ${cfg.x509pop.cas.length} provisioning CA certificate(s), role ${cfg.x509pop.role}`,
          ]
        : []),
    ];
    if (workers > 1 && !isClusterWorker()) {
      // The primary only supervises: migrations and init are done, each worker opens its own pool.
      await ca.storage.close();
      return runClusterPrimary({
        workers,
        listen: cfg.listen,
        log,
        stdout: ctx.stdout,
        banner,
        stopSignal: ctx.stopSignal,
      });
    }
    const running = await startServer({ config: cfg, ca, clock: systemClock, log });
    if (!isClusterWorker()) {
      ctx.stdout.write(`listening on ${running.url}\n`);
      if (running.publicationListenUrl) ctx.stdout.write(`listening on ${running.publicationListenUrl}\n`);
      for (const line of banner) ctx.stdout.write(`${line}\n`);
    }
    const signal = await ctx.stopSignal;
    log.info({ signal }, 'Shutting down');
    await running.close();
    await ca.storage.close();
    return 0;
  },
};
