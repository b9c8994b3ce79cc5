import { Router } from 'express';
import { readListPage } from '../../domain/admin-lists';
import { createEntry, deleteEntry } from '../../domain/entries';
import type { AppDeps } from '../ports';
import { auditContext } from '../audit-context';
import { type AdminIdentity, authDepsOf, requireAdmin } from '../authorization';
import { readEntryListQuery } from '../params/admin-lists';
import { readCreateEntryParams } from '../params/entries';
import { renderEntry } from '../render';

/** Registration entries, for admins (CONTRACT: GET|POST /v1/admin/entries, DELETE /v1/admin/entries/:name). */
export function adminEntryRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  const ttl = deps.installation.workloadTtlMs;

  // CONTRACT "Fleet scale": one page by name, `next` the cursor of the following one.
  r.get('/v1/admin/entries', requireAdmin(auth, 'GET /v1/admin/entries'), async (req, res) => {
    const { page } = readEntryListQuery(req);
    const entries = await readListPage(
      { clock: deps.clock, keys: deps.storage.listCursorKey },
      'entries',
      page,
      (p) => deps.storage.entries.page(p),
    );
    res.json({ entries: entries.items.map((e) => renderEntry(e, ttl)), next: entries.next });
  });

  r.post('/v1/admin/entries', requireAdmin(auth, 'POST /v1/admin/entries'), async (req, res) => {
    const params = readCreateEntryParams(req.body, deps.installation.trustDomain);
    const admin = res.locals.admin as AdminIdentity;
    const entry = await deps.storage.transaction((tx) =>
      createEntry(
        { clock: deps.clock, repos: tx, defaultTtlMs: ttl },
        { ...params, createdBy: admin.spiffeId, audit: auditContext(req, admin.spiffeId) },
      ),
    );
    // The `entry` event committed with it: the parent's agent, long-polling here, hears at once.
    deps.feed.notify();
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
      deps.feed.notify();
      res.status(204).end();
    },
  );
  return r;
}
