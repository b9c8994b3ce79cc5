import { createHash } from 'node:crypto';
import { BatonError } from '../ground/errors';
import type { Clock } from './clock';
import type { AuditEvent, AuditRecord, AuditRepository } from './ports';

/**
 * The tamper-evident audit log. Each security event is appended inside the transaction of the
 * action it records (so an action and its record land together); a sealer then chains sealed rows:
 *   hash(n) = SHA-256(prev_hash(n) || canonical JSON of row n, its id and seal_seq included)
 * Changing, removing or reordering a sealed row breaks the chain at that row. One sealer runs at a
 * time across replicas (an advisory lock), so the chain is total without a lock on the hot path.
 */

/** JSON with object keys sorted at every level, so the hash does not depend on key order. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v ?? null);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  let out = '';
  for (const key of Object.keys(o).sort()) {
    const x = o[key];
    if (x === undefined) continue;
    out += `${out ? ',' : ''}${JSON.stringify(key)}:${canonicalJson(x)}`;
  }
  return `{${out}}`;
}

type SealedContent = Omit<AuditRecord, 'prevHash' | 'hash'>;

/**
 * The hashed fields of a row, each with its JSON key, in the code-unit order `canonicalJson`
 * sorts them into: the sealer hashes every row, so the top level is written out rather than sorted
 * each time. The result is exactly `canonicalJson` of the same object (a property test holds it to
 * that), so chains sealed before and after this shortcut verify alike.
 */
const FIELD_GETTERS: ReadonlyArray<readonly [string, (r: SealedContent) => unknown]> = [
  ['actor', (r) => r.actor],
  ['at', (r) => r.at.toISOString()],
  ['details', (r) => r.details],
  ['event', (r) => r.event],
  ['id', (r) => r.id],
  ['outcome', (r) => r.outcome],
  ['seal_seq', (r) => r.sealSeq],
  ['source', (r) => r.source],
  ['subject', (r) => r.subject],
];
const CONTENT_FIELDS = FIELD_GETTERS.map(([key, get]) => [`${JSON.stringify(key)}:`, get] as const);

export function auditContent(row: SealedContent): string {
  let out = '';
  for (const [key, get] of CONTENT_FIELDS) {
    const value = get(row);
    if (value === undefined) continue;
    out += `${out ? ',' : ''}${key}${canonicalJson(value)}`;
  }
  return `{${out}}`;
}

/** The previous hash of the first sealed row. */
const ZERO_HASH = Buffer.alloc(32);

export function auditHash(row: SealedContent, prevHash: Buffer | null): Buffer {
  return createHash('sha256')
    .update(prevHash ?? ZERO_HASH)
    .update(auditContent(row), 'utf8')
    .digest();
}

export type AuditVerdict =
  | {
      ok: true;
      rows: number;
      /**
       * The seal_seq the chain starts at: 1, or after a prune the first kept row, whose prev_hash
       * (the hash of the last pruned row) is the anchor the kept chain is verified from.
       */
      from: number;
    }
  | {
      ok: false;
      rows: number;
      rowId: number | null;
      sealSeq: number;
      problem: 'changed' | 'removed' | 'reordered';
    };

/**
 * The event a prune records before it deletes (domain/audit-retention.ts); its `through_seq` says
 * how far the chain may be cut from the front.
 */
export const AUDIT_PRUNED_EVENT = 'audit.pruned';

/**
 * Walks sealed rows in chain order and names the first row that was changed, removed or reordered.
 * Rows arrive in pages; call `check` for each (false once the chain is broken: stop there) and
 * `result` at the end.
 *
 * The chain may start after seal_seq 1, once rows have been pruned: the first row's prev_hash is
 * then the anchor, taken as given (what was pruned is in the export, which ends with that hash).
 * A front cut is accepted only as far as a prune recorded in the kept chain allows (the
 * `through_seq` of its `audit.pruned` row): rows missing beyond it were removed, not pruned.
 * `anchored`: a part of the chain on its own (an export), whose start needs no such licence.
 */
export function auditVerifier(opts: { anchored?: boolean } = {}) {
  let expectedSeq: number | null = null;
  let from = 1;
  let firstRowId: number | null = null;
  let prev: Buffer | null = null;
  let rows = 0;
  let prunedThrough = 0;
  let failure: AuditVerdict | null = null;
  return {
    check(row: AuditRecord): boolean {
      if (failure) return false;
      rows += 1;
      const seq = row.sealSeq ?? -1;
      if (expectedSeq === null) {
        // The first row: seal_seq 1 links to nothing; a later one to its own prev_hash (the anchor).
        from = Math.max(seq, 1);
        firstRowId = row.id;
        expectedSeq = from;
        prev = seq > 1 ? row.prevHash : null;
      }
      if (seq > expectedSeq) {
        failure = { ok: false, rows, rowId: row.id, sealSeq: expectedSeq, problem: 'removed' };
        return false;
      }
      const linkOk =
        (row.prevHash === null && prev === null) ||
        (row.prevHash !== null && prev !== null && row.prevHash.equals(prev));
      const recomputed = auditHash(row, row.prevHash);
      if (!row.hash || !recomputed.equals(row.hash)) {
        // A row whose stored prev_hash does not link here was moved here (e.g. seal_seq swapped):
        // its hash covers its old place. A row that links but does not hash was edited in place.
        failure = { ok: false, rows, rowId: row.id, sealSeq: seq, problem: linkOk ? 'changed' : 'reordered' };
        return false;
      }
      if (!linkOk || seq !== expectedSeq) {
        failure = { ok: false, rows, rowId: row.id, sealSeq: seq, problem: 'reordered' };
        return false;
      }
      if (row.event === AUDIT_PRUNED_EVENT && row.outcome === 'success') {
        const through = row.details.through_seq;
        if (typeof through === 'number' && Number.isSafeInteger(through) && through < seq)
          prunedThrough = Math.max(prunedThrough, through);
      }
      prev = row.hash;
      expectedSeq += 1;
      return true;
    },
    result(): AuditVerdict {
      if (failure) return failure;
      // Rows cut from the front beyond what a recorded prune deleted: the first missing one.
      if (!opts.anchored && from > prunedThrough + 1)
        return { ok: false, rows, rowId: firstRowId, sealSeq: prunedThrough + 1, problem: 'removed' };
      return { ok: true, rows, from };
    },
  };
}

/**
 * Rows per sealing transaction. The sealer runs on the event loop of a serving replica: a batch of
 * 5,000 once held it for over 100 ms every background interval, which was the issuance p99 (bench).
 * Now a batch is hashed in slices of 50 rows with a turn of the event loop between them and
 * written back with one parameter (audit-repository.ts), so the longest pause is reading the batch
 * (about 5 ms for 500 rows); smaller batches cost more per row in round trips (about 40% at 200).
 */
export const SEAL_BATCH = 500;

/** Seals everything unsealed now (the background job of every replica; reads never do). */
export async function sealAudit(audit: AuditRepository): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await audit.seal(SEAL_BATCH, auditHash);
    total += n;
    if (n < SEAL_BATCH) return total;
    // Let requests that arrived meanwhile run between batches.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

export interface AuditContext {
  actor: string;
  source: string | null;
}

export const SYSTEM_ACTOR: AuditContext = { actor: 'system', source: null };

export function auditEvent(
  ctx: AuditContext,
  at: Date,
  event: string,
  subject: string | null,
  outcome: AuditEvent['outcome'],
  details: Record<string, unknown> = {},
): AuditEvent {
  return { at, event, actor: ctx.actor, source: ctx.source, subject, outcome, details };
}

/**
 * A refused request is a security event too: one `failure` row with the refusal's code and no
 * subject (nothing was acted on). Written on its own, since the refused action's transaction, if
 * any, rolled back; a failure to write it never replaces the refusal the caller gets.
 */
export async function recordRefusal(
  deps: { clock: Clock; storage: { audit: Pick<AuditRepository, 'append'> } },
  audit: AuditContext,
  event: string,
  details: Record<string, unknown>,
  error: unknown,
): Promise<void> {
  const code = error instanceof BatonError ? error.code : 'ERR_INTERNAL';
  const about = error instanceof BatonError ? error.auditDetails : undefined;
  await deps.storage.audit
    .append(auditEvent(audit, deps.clock.now(), event, null, 'failure', { ...about, ...details, code }))
    .catch(() => undefined);
}
