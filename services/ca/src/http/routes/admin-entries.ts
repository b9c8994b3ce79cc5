import { Router } from 'express';
import { MAX_TTL, MIN_TTL_MS } from '../../ground/ttl';
import { createEntry, deleteEntry } from '../../domain/entries';
import { BatonError } from '../../ground/errors';
import type { AppDeps } from '../app';
import { auditContext } from '../audit-context';
import { type AdminIdentity, authDepsOf, requireAdmin } from '../authorization';
import { renderEntry } from '../render';
import { body, optionalDurationMs } from '../validate';

/** Registration entries, for admins (CONTRACT: GET|POST /v1/admin/entries, DELETE /v1/admin/entries/:name). */
export function adminEntryRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  const ttl = deps.installation.workloadTtlMs;

  r.get('/v1/admin/entries', requireAdmin(auth, 'GET /v1/admin/entries'), async (_req, res) => {
    res.json({ entries: (await deps.storage.entries.list()).map((e) => renderEntry(e, ttl)) });
  });

  r.post('/v1/admin/entries', requireAdmin(auth, 'POST /v1/admin/entries'), async (req, res) => {
    const b = body(req);
    if (b.allow_wildcard_dns !== undefined && typeof b.allow_wildcard_dns !== 'boolean') {
      throw new BatonError('ERR_BAD_REQUEST', 'allow_wildcard_dns: a boolean');
    }
    const admin = res.locals.admin as AdminIdentity;
    const ttlMs = optionalDurationMs(b, 'ttl', MIN_TTL_MS, MAX_TTL.workload) ?? null;
    const entry = await deps.storage.transaction((tx) =>
      createEntry(
        { clock: deps.clock, repos: tx, trustDomain: deps.installation.trustDomain, defaultTtlMs: ttl },
        {
          name: b.name,
          spiffeId: b.spiffe_id,
          parentNodeId: b.parent,
          selectors: b.selectors,
          dnsNames: b.dns_names,
          allowWildcardDns: b.allow_wildcard_dns === true,
          ttlMs,
          createdBy: admin.spiffeId,
          audit: auditContext(req, admin.spiffeId),
        },
      ),
    );
    res.status(201).json(renderEntry(entry, ttl));
  });

  r.delete(
    '/v1/admin/entries/:name',
    requireAdmin(auth, 'DELETE /v1/admin/entries/:name'),
    async (req, res) => {
      const admin = res.locals.admin as AdminIdentity;
      await deps.storage.transaction((tx) =>
        deleteEntry(
          { clock: deps.clock, repos: tx },
          { name: String(req.params.name), audit: auditContext(req, admin.spiffeId) },
        ),
      );
      res.status(204).end();
    },
  );
  return r;
}
