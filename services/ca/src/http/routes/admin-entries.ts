import { Router } from 'express';
import { MAX_TTL, MIN_TTL_MS } from '../../config';
import { createEntry } from '../../domain/entries';
import { BatonError } from '../../domain/errors';
import type { AppDeps } from '../app';
import { type AdminIdentity, requireAdmin } from '../authorization';
import { renderEntry } from '../render';
import { body, optionalDurationMs } from '../validate';

/** Registration entries, for admins (CONTRACT: GET|POST /v1/admin/entries, DELETE /v1/admin/entries/:name). */
export function adminEntryRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = { clock: deps.clock, repos: deps.storage, trustDomain: deps.installation.trustDomain };
  const ttl = deps.installation.workloadTtlMs;

  r.get('/v1/admin/entries', requireAdmin(auth, 'GET /v1/admin/entries'), async (_req, res) => {
    res.json({ entries: (await deps.storage.entries.list()).map((e) => renderEntry(e, ttl)) });
  });

  r.post('/v1/admin/entries', requireAdmin(auth, 'POST /v1/admin/entries'), async (req, res) => {
    const b = body(req);
    if (b.allow_wildcard_dns !== undefined && typeof b.allow_wildcard_dns !== 'boolean') {
      throw new BatonError('ERR_BAD_REQUEST', 'allow_wildcard_dns: a boolean');
    }
    const entry = await createEntry(
      {
        clock: deps.clock,
        repos: deps.storage,
        trustDomain: deps.installation.trustDomain,
        defaultTtlMs: ttl,
      },
      {
        name: b.name,
        spiffeId: b.spiffe_id,
        parentNodeId: b.parent,
        selectors: b.selectors,
        dnsNames: b.dns_names,
        allowWildcardDns: b.allow_wildcard_dns === true,
        ttlMs: optionalDurationMs(b, 'ttl', MIN_TTL_MS, MAX_TTL.workload) ?? null,
        createdBy: (res.locals.admin as AdminIdentity).spiffeId,
      },
    );
    res.status(201).json(renderEntry(entry, ttl));
  });

  r.delete(
    '/v1/admin/entries/:name',
    requireAdmin(auth, 'DELETE /v1/admin/entries/:name'),
    async (req, res) => {
      if (!(await deps.storage.entries.delete(String(req.params.name))))
        throw new BatonError('ERR_NOT_FOUND', 'no such entry');
      res.status(204).end();
    },
  );
  return r;
}
