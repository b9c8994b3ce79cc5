import { Router } from 'express';
import type { AppDeps } from '../app';

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
    const kr = deps.keyring();
    checks.ca_keys = kr.signing.record.notAfter.getTime() > deps.clock.now().getTime();
    const ready = checks.database && checks.ca_keys;
    if (!ready) res.set('Retry-After', '5');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready', checks });
  });
  r.get('/metrics', async (_req, res) => {
    const now = deps.clock.now().getTime();
    for (const ca of deps.keyring().all) {
      deps.metrics.caExpirySeconds.set(
        { ca_id: ca.record.id, kind: ca.record.kind },
        (ca.record.notAfter.getTime() - now) / 1000,
      );
    }
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  return r;
}
