import type { ServerResponse } from 'node:http';
import { type Request, Router } from 'express';
import { makeCheckpoint } from '../../domain/audit-checkpoint';
import { exportAudit, PRUNE_MAX_ROWS, pruneAudit } from '../../domain/audit-retention';
import { BatonError } from '../../ground/errors';
import { F } from '../../log-fields';
import { auditContext } from '../audit-context';
import { type AdminIdentity, authDepsOf, requireAdmin } from '../authorization';
import type { AppDeps } from '../ports';
import { jsonObject, optionalInt, requiredString } from '../validate';
import { renderAudit } from './admin-audit';

/** An ISO 8601 time (a date alone is its midnight UTC); ERR_BAD_REQUEST naming the field. */
function timeOf(field: string, v: string | undefined): Date {
  const d = v === undefined || v.length > 64 ? new Date(Number.NaN) : new Date(v);
  if (Number.isNaN(d.getTime()))
    throw new BatonError('ERR_BAD_REQUEST', `${field}: an ISO 8601 time is required`);
  return d;
}

const queryString = (req: Request, name: string): string | undefined =>
  typeof req.query[name] === 'string' ? req.query[name] : undefined;

/** Writes a chunk, waiting for the client to take it when its buffer is full; false once it left. */
async function send(res: ServerResponse, chunk: string): Promise<boolean> {
  if (res.destroyed) return false;
  if (res.write(chunk)) return true;
  await new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
  return !res.destroyed;
}

/**
 * Audit retention and checkpoints (issue 20): `GET /v1/admin/audit/checkpoint` (any admin role),
 * `GET /v1/admin/audit/export?before=` (admin, auditor: the roles that read the log), and
 * `POST /v1/admin/audit/prune` (admin alone: it deletes). domain/audit-retention.ts and
 * domain/audit-checkpoint.ts say what each does.
 */
export function adminAuditRetentionRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);

  r.get(
    '/v1/admin/audit/checkpoint',
    requireAdmin(auth, 'GET /v1/admin/audit/checkpoint'),
    async (_req, res) => {
      res.json(
        await makeCheckpoint({
          clock: deps.clock,
          audit: deps.storage.audit,
          signing: deps.keyring().signing,
        }),
      );
    },
  );

  // JSON lines, one sealed row each as GET /v1/admin/audit renders it, in chain order. The status
  // and headers go with the first rows, so a failure before them is an ordinary error answer; a
  // failure after them cuts the connection before the chunked body's end, which every HTTP client
  // reports as an incomplete response (the CLI then writes no file).
  r.get('/v1/admin/audit/export', requireAdmin(auth, 'GET /v1/admin/audit/export'), async (req, res) => {
    const before = timeOf('before', queryString(req, 'before'));
    const after = queryString(req, 'after_seq');
    const afterSeq = after === undefined ? 0 : Number(after);
    if (!Number.isSafeInteger(afterSeq) || afterSeq < 0)
      throw new BatonError('ERR_BAD_REQUEST', 'after_seq: an integer of at least 0');
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      res.status(200).set({ 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
    };
    try {
      for await (const page of exportAudit(deps.storage.audit, { before, afterSeq })) {
        start();
        if (!(await send(res, page.map((row) => `${JSON.stringify(renderAudit(row))}\n`).join('')))) return;
      }
      start();
      res.end();
    } catch (err) {
      if (!started) throw err;
      deps.log.error(
        { [F.requestId]: String(res.locals.requestId ?? ''), [F.err]: err, [F.route]: req.path },
        'Audit export failed',
      );
      res.destroy();
    }
  });

  r.post('/v1/admin/audit/prune', requireAdmin(auth, 'POST /v1/admin/audit/prune'), async (req, res) => {
    const admin = res.locals.admin as AdminIdentity;
    const b = jsonObject(req.body ?? {});
    const before = timeOf('before', requiredString(b, 'before', 64));
    const maxRows = optionalInt(b, 'max_rows', 1, PRUNE_MAX_ROWS);
    const done = await pruneAudit(
      { clock: deps.clock, audit: deps.storage.audit, retainMs: deps.auditRetainMs },
      { before, maxRows },
      auditContext(req, admin.spiffeId),
    );
    res.json({
      pruned: done.pruned,
      first_seq: done.firstSeq,
      through_seq: done.throughSeq,
      done: done.done,
    });
  });
  return r;
}
