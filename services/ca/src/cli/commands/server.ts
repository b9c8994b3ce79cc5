import { writeAdminCredentials, localActor } from '../../admin-credentials';
import { initCa, openCa } from '../../ca-service';
import { loadInitConfig, loadServerConfig } from '../../config';
import { systemClock } from '../../domain/clock';
import { isBatonError } from '../../domain/errors';
import { createLogger } from '../../logger';
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
    'init-trust-domain': {
      type: 'string',
      value: 'TD',
      description: 'initialize the CA with this trust domain first if it is not initialized yet (npm start)',
    },
    ...STORAGE_OPTIONS,
  },
  async run(ctx) {
    const cfg = loadServerConfig(ctx.flags, ctx.env);
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
    const running = await startServer({ config: cfg, ca, clock: systemClock, log });
    ctx.stdout.write(`listening on ${running.url}\n`);
    ctx.stdout.write(`trust domain: ${ca.installation.trustDomain}\n`);
    ctx.stdout.write(`admin credentials: ${join(cfg.dataDir, 'admin')}\n`);
    if (cfg.x509pop) {
      ctx.stdout.write(
        `x509pop attestation: ${cfg.x509pop.cas.length} provisioning CA certificate(s), role ${cfg.x509pop.role}\n`,
      );
    }
    const signal = await ctx.stopSignal;
    log.info({ signal }, 'Shutting down');
    await running.close();
    await ca.storage.close();
    return 0;
  },
};
