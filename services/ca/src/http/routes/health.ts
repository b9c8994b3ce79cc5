import { Router } from 'express';
import type { AppDeps } from '../ports';
import { refreshScrapeGauges } from '../metrics';

/** Liveness says the process answers; readiness that the database and the CA keys are usable. */
export function healthRoutes(deps: AppDeps): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  r.get('/readyz', async (_req, res) => {
    const checks = { database: false, ca_keys: false };
    try {
      await deps.storage.ping();
      checks.database = true;
    } catch {
      // reported below
    }
    try {
      // Throws when this replica cannot unwrap the active signing CA (server/start-server.ts); a
      // key in a PKCS#11 token is usable when the token answers (kms/pkcs11-custody.ts).
      const signing = deps.keyring().signing;
      checks.ca_keys =
        signing.record.notAfter.getTime() > deps.clock.now().getTime() &&
        (signing.signer.available?.() ?? true);
    } catch {
      // reported below
    }
    const ready = checks.database && checks.ca_keys;
    if (!ready) res.set('Retry-After', '5');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready', checks });
  });
  r.get('/metrics', async (_req, res) => {
    await refreshScrapeGauges(deps.metrics, {
      now: deps.clock.now(),
      keyring: deps.keyring(),
      crls: deps.storage.crls,
      nodes: deps.storage.nodes,
      feedWaiters: deps.feed.waiting,
    });
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  return r;
}
