import { type Request, Router } from 'express';
import { readListPage } from '../../domain/admin-lists';
import { BatonError } from '../../ground/errors';
import type { AuditRecord } from '../../domain/ports';
import type { AppDeps } from '../ports';
import { authDepsOf, requireAdmin } from '../authorization';
import { queryLimit, queryValue, readAuditListQuery } from '../params/admin-lists';

export function renderAudit(r: AuditRecord) {
  return {
    id: r.id,
    at: r.at.toISOString(),
    event: r.event,
    actor: r.actor,
    source: r.source,
    subject: r.subject,
    outcome: r.outcome,
    details: r.details,
    seal_seq: r.sealSeq,
    prev_hash: r.prevHash?.toString('hex') ?? null,
    hash: r.hash?.toString('hex') ?? null,
  };
}

/** `sealed_after`: a seal_seq, 0 for the start of the chain. */
function sealedAfterParam(req: Request): number | undefined {
  const v = queryValue(req, 'sealed_after');
  if (v === undefined) return undefined;
  const n = /^[0-9]{1,16}$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n))
    throw new BatonError('ERR_BAD_REQUEST', `sealed_after: an integer from 0 to ${Number.MAX_SAFE_INTEGER}`);
  return n;
}

/**
 * `GET /v1/admin/audit`: a page of events newest first, filtered by actor, subject, event and time,
 * with `next` (CONTRACT "Fleet scale"); or, with `sealed_after=N`, the sealed chain in order for
 * `baton audit verify` (which recomputes every hash itself rather than trusting the server's
 * verdict), paged by seal_seq itself. A read writes nothing, for `auditor` least of all (issue 14,
 * finding 7): the chain is what the background job has sealed so far, and `unsealed` counts the
 * rows it will seal within BATON_BACKGROUND_INTERVAL.
 */
export function adminAuditRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  r.get('/v1/admin/audit', requireAdmin(auth, 'GET /v1/admin/audit'), async (req, res) => {
    const sealedAfter = sealedAfterParam(req);
    if (sealedAfter !== undefined) {
      if (req.query.after !== undefined)
        throw new BatonError('ERR_BAD_REQUEST', 'after: not with sealed_after (the chain pages by seal_seq)');
      const rows = await deps.storage.audit.sealedAfter(sealedAfter, queryLimit(req));
      res.json({ events: rows.map(renderAudit), unsealed: await deps.storage.audit.countUnsealed() });
      return;
    }
    const { filter, page } = readAuditListQuery(req);
    const events = await readListPage(
      { clock: deps.clock, keys: deps.storage.listCursorKey },
      'audit',
      page,
      (p) => deps.storage.audit.page(filter, p),
    );
    res.json({ events: events.items.map(renderAudit), next: events.next });
  });
  return r;
}
