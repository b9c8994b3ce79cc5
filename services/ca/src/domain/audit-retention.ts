import { BatonError } from '../ground/errors';
import { AUDIT_PRUNED_EVENT, type AuditContext, auditEvent, sealAudit } from './audit';
import type { Clock } from './clock';
import { formatDuration } from './duration';
import type { AuditRecord, AuditRepository } from './ports';

/**
 * Audit retention (issue 20; CONTRACT "Fleet scale"): rows older than `--retain-audit` (default
 * 90d) may be exported, then pruned, and the kept chain stays verifiable from its first row.
 *
 * Pruning is an explicit admin act (`baton audit prune --before DATE`, admin role), never a timer:
 * an audit log that deletes itself on schedule loses rows for good the day its export silently
 * failed, and an explicit prune is itself an audit event, sealed into the chain it cut. The server
 * refuses to prune rows recorded within the retention window.
 *
 * A prune removes a prefix of the chain, never a row in the middle: from the oldest sealed row, in
 * chain order, up to the first row recorded at or after `before`, and never the chain head (the
 * next sealed row links to it). Before it deletes anything it records and seals an `audit.pruned`
 * row with the cut's `first_seq` and `through_seq`; `baton audit verify` accepts a chain that
 * starts after seal_seq 1 only as far as such a row allows (domain/audit.ts auditVerifier).
 * `baton audit export --before DATE` writes the same prefix (with the head, when the head is in
 * it), so an export followed by a prune with the same DATE archives every row the prune deletes.
 */

/** Rows one prune request deletes at most; the CLI repeats the request until `done`. */
export const PRUNE_MAX_ROWS = 100_000;
/** Rows per delete statement. */
export const PRUNE_BATCH = 5000;

export interface AuditPruneDeps {
  clock: Clock;
  audit: AuditRepository;
  /** --retain-audit: rows recorded within this much of now are kept. */
  retainMs: number;
}

export interface AuditPruneResult {
  /** Rows deleted. */
  pruned: number;
  /** The seal_seq range deleted, both included; null when nothing was. */
  firstSeq: number | null;
  throughSeq: number | null;
  /** Nothing older than `before` is left to prune (the chain head aside). */
  done: boolean;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The latest `before` a prune may name now: rows of the last `retainMs` are kept. */
export function latestPrunable(now: Date, retainMs: number): Date {
  return new Date(now.getTime() - retainMs);
}

/**
 * Deletes up to `maxRows` of the sealed rows recorded before `before`, oldest first, in batches;
 * ERR_BAD_REQUEST when `before` is within the retention window.
 */
export async function pruneAudit(
  deps: AuditPruneDeps,
  p: { before: Date; maxRows?: number; batch?: number },
  ctx: AuditContext,
): Promise<AuditPruneResult> {
  const now = deps.clock.now();
  const latest = latestPrunable(now, deps.retainMs);
  if (p.before.getTime() > latest.getTime())
    throw new BatonError(
      'ERR_BAD_REQUEST',
      `before: rows of the last ${formatDuration(deps.retainMs)} are kept (--retain-audit): at most ${latest.toISOString()}`,
    );
  // Seal first: only sealed rows are pruned, and the cut is decided on the chain as it is now.
  await sealAudit(deps.audit);
  const cut = await deps.audit.pruneCut(p.before, p.maxRows ?? PRUNE_MAX_ROWS);
  if (!cut) return { pruned: 0, firstSeq: null, throughSeq: null, done: true };
  // The record goes into the chain (sealed, after the head, so it is kept) before any row goes:
  // a prune that stops half-way still has its record, and the verifier its licence.
  await deps.audit.append(
    auditEvent(ctx, now, AUDIT_PRUNED_EVENT, null, 'success', {
      before: p.before.toISOString(),
      first_seq: cut.first,
      through_seq: cut.through,
    }),
  );
  await sealAudit(deps.audit);
  const batch = p.batch ?? PRUNE_BATCH;
  let pruned = 0;
  for (;;) {
    const n = await deps.audit.deleteSealedThrough(cut.through, batch);
    pruned += n;
    if (n < batch) break;
    await nextTurn();
  }
  return { pruned, firstSeq: cut.first, throughSeq: cut.through, done: cut.complete };
}

/** Rows per read of an export. */
export const EXPORT_PAGE = 1000;

/**
 * The rows `baton audit export --before DATE` writes, page by page, in chain order: every sealed
 * row from the oldest kept one up to the first recorded at or after `before` (the chain head
 * included when it is older). `afterSeq` resumes after a seal_seq.
 */
export async function* exportAudit(
  audit: Pick<AuditRepository, 'sealedAfter'>,
  p: { before: Date; afterSeq?: number; page?: number },
): AsyncGenerator<AuditRecord[]> {
  const page = p.page ?? EXPORT_PAGE;
  let after = p.afterSeq ?? 0;
  for (;;) {
    const rows = await audit.sealedAfter(after, page);
    const stop = rows.findIndex((r) => r.at.getTime() >= p.before.getTime());
    const take = stop < 0 ? rows : rows.slice(0, stop);
    if (take.length) yield take;
    if (stop >= 0 || rows.length < page) return;
    after = rows[rows.length - 1]!.sealSeq!;
  }
}
