import { type Request, Router } from 'express';
import { BatonError } from '../../ground/errors';
import type { AuditRecord } from '../../domain/ports';
import type { AppDeps } from '../ports';
import { authDepsOf, requireAdmin } from '../authorization';

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

function dateParam(req: Request, name: string): Date | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  const d = new Date(String(v));
  if (Number.isNaN(d.getTime())) throw new BatonError('ERR_BAD_REQUEST', `${name}: an ISO 8601 time`);
  return d;
}

function intParam(req: Request, name: string, min: number, max: number): number | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new BatonError('ERR_BAD_REQUEST', `${name}: an integer from ${min} to ${max}`);
  return n;
}

const str = (req: Request, name: string): string | undefined =>
  req.query[name] === undefined ? undefined : String(req.query[name]).slice(0, 2048);

/**
 * `GET /v1/admin/audit`: newest first, filtered by actor, subject, event and time; or, with
 * `sealed_after=N`, the sealed chain in order for `baton audit verify` (which recomputes every
 * hash itself rather than trusting the server's verdict). A read writes nothing, for `auditor`
 * least of all (issue 14, finding 7): the chain is what the background job has sealed so far, and
 * `unsealed` counts the rows it will seal within BATON_BACKGROUND_INTERVAL.
 */
export function adminAuditRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  r.get('/v1/admin/audit', requireAdmin(auth, 'GET /v1/admin/audit'), async (req, res) => {
    const limit = intParam(req, 'limit', 1, 10_000) ?? 100;
    const sealedAfter = intParam(req, 'sealed_after', 0, Number.MAX_SAFE_INTEGER);
    if (sealedAfter !== undefined) {
      const rows = await deps.storage.audit.sealedAfter(sealedAfter, limit);
      res.json({ events: rows.map(renderAudit), unsealed: await deps.storage.audit.countUnsealed() });
      return;
    }
    const rows = await deps.storage.audit.list({
      actor: str(req, 'actor'),
      subject: str(req, 'subject'),
      event: str(req, 'event'),
      since: dateParam(req, 'since'),
      until: dateParam(req, 'until'),
      limit,
    });
    res.json({ events: rows.map(renderAudit) });
  });
  return r;
}
