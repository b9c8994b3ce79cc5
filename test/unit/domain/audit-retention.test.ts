import {
  AUDIT_PRUNED_EVENT,
  type AuditVerdict,
  auditHash,
  auditVerifier,
} from '../../../services/ca/src/domain/audit';
import { exportAudit, pruneAudit } from '../../../services/ca/src/domain/audit-retention';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import type { AuditRecord, Storage } from '../../../services/ca/src/domain/ports';
import { errorOf } from '../../support/errors';
import { createMemoryStorage } from '../../support/memory-storage';

/**
 * Issue 20, audit retention, on the memory storage with an injected clock: a prune deletes a
 * prefix of sealed rows older than the date and records itself first; the kept chain verifies from
 * its first kept row, and a row removed in the middle, or a front cut beyond what a prune
 * recorded, is still found; an export writes the rows a prune with the same date deletes.
 */

const DAY = 86_400_000;
const RETAIN = 90 * DAY;
const NOW = Date.parse('2026-12-08T12:00:00.000Z');
const ADMIN = { actor: 'spiffe://test.example.org/admin/alice', source: '10.0.0.1' };

/** Rows recorded `daysAgo` days before NOW, one each, in this order, all sealed. */
async function logOf(daysAgo: number[]): Promise<Storage> {
  const storage = createMemoryStorage();
  for (const [i, d] of daysAgo.entries())
    await storage.audit.append({
      at: new Date(NOW - d * DAY),
      event: 'test.event',
      actor: 'system',
      source: null,
      subject: null,
      outcome: 'success',
      details: { i },
    });
  await storage.audit.seal(1000, auditHash);
  return storage;
}

const chainOf = (s: Storage) => s.audit.sealedAfter(0, 10_000);
const verify = (rows: AuditRecord[], anchored = false): AuditVerdict => {
  const v = auditVerifier({ anchored });
  for (const r of rows) if (!v.check(r)) break;
  return v.result();
};
const deps = (storage: Storage, clock = new FakeClock(new Date(NOW))) => ({
  clock,
  audit: storage.audit,
  retainMs: RETAIN,
});
const daysAgo = (d: number) => new Date(NOW - d * DAY);

describe('pruneAudit (issue 20)', () => {
  it('fail/a date within --retain-audit is refused (ERR_BAD_REQUEST naming the latest allowed), nothing deleted', async () => {
    const storage = await logOf([200, 100, 10]);
    const e = await errorOf(pruneAudit(deps(storage), { before: daysAgo(89) }, ADMIN));
    expect(e.code).toBe('ERR_BAD_REQUEST');
    expect(e.message).toBe(
      `before: rows of the last 90d are kept (--retain-audit): at most ${daysAgo(90).toISOString()}`,
    );
    expect(await chainOf(storage)).toHaveLength(3);
  });

  it('ok/deletes the sealed prefix older than the date, records and seals itself first; the kept chain verifies from its first row', async () => {
    const storage = await logOf([300, 250, 200, 150, 95, 20, 10]);
    const before = await chainOf(storage);
    const done = await pruneAudit(deps(storage), { before: daysAgo(100) }, ADMIN);
    expect(done).toEqual({ pruned: 4, firstSeq: 1, throughSeq: 4, done: true });
    const kept = await chainOf(storage);
    expect(kept.map((r) => r.sealSeq)).toEqual([5, 6, 7, 8]);
    // The first kept row is untouched: its prev_hash is the hash of the last pruned row.
    expect(kept[0]).toStrictEqual(before[4]);
    expect(kept[0]!.prevHash).toStrictEqual(before[3]!.hash);
    const record = kept[3]!;
    expect(record).toMatchObject({
      event: AUDIT_PRUNED_EVENT,
      actor: ADMIN.actor,
      source: ADMIN.source,
      outcome: 'success',
      details: { before: daysAgo(100).toISOString(), first_seq: 1, through_seq: 4 },
    });
    expect(verify(kept)).toEqual({ ok: true, rows: 4, from: 5 });
    expect(await storage.audit.countUnsealed()).toBe(0);
  });

  it('ok/never the chain head, even when every row is older; nothing to do the second time', async () => {
    const storage = await logOf([300, 200, 100]);
    expect(await pruneAudit(deps(storage), { before: daysAgo(90) }, ADMIN)).toEqual({
      pruned: 2,
      firstSeq: 1,
      throughSeq: 2,
      done: true,
    });
    // Kept: the old head (seq 3) and the prune's record (4); the record is newer than the date.
    expect((await chainOf(storage)).map((r) => r.sealSeq)).toEqual([3, 4]);
    expect(verify(await chainOf(storage))).toEqual({ ok: true, rows: 2, from: 3 });
    // Seq 3 is no longer the head: the next prune takes it, and leaves its own record.
    expect(await pruneAudit(deps(storage), { before: daysAgo(90) }, ADMIN)).toMatchObject({ pruned: 1 });
    expect(await pruneAudit(deps(storage), { before: daysAgo(90) }, ADMIN)).toEqual({
      pruned: 0,
      firstSeq: null,
      throughSeq: null,
      done: true,
    });
    expect(verify(await chainOf(storage))).toEqual({ ok: true, rows: 2, from: 4 });
  });

  it('ok/bounded by maxRows and batch: done only when the cut reached the date; repeating finishes it', async () => {
    const storage = await logOf([400, 399, 398, 397, 396, 395, 10]);
    const one = await pruneAudit(deps(storage), { before: daysAgo(100), maxRows: 4, batch: 3 }, ADMIN);
    expect(one).toEqual({ pruned: 4, firstSeq: 1, throughSeq: 4, done: false });
    const two = await pruneAudit(deps(storage), { before: daysAgo(100), maxRows: 4, batch: 3 }, ADMIN);
    expect(two).toEqual({ pruned: 2, firstSeq: 5, throughSeq: 6, done: true });
    expect(verify(await chainOf(storage))).toMatchObject({ ok: true, from: 7 });
  });

  it('fail/rows cut from the front with no prune recorded: the verifier names seal_seq 1 as missing', async () => {
    const storage = await logOf([300, 200, 100, 10]);
    await storage.audit.deleteSealedThrough(2, 100);
    const kept = await chainOf(storage);
    expect(verify(kept)).toEqual({ ok: false, rows: 2, rowId: kept[0]!.id, sealSeq: 1, problem: 'removed' });
    // As a part on its own (an export) it verifies from its anchor.
    expect(verify(kept, true)).toEqual({ ok: true, rows: 2, from: 3 });
  });

  it('fail/rows cut beyond what the recorded prune deleted: the first of them is named missing', async () => {
    const storage = await logOf([300, 200, 100, 50, 10]);
    await pruneAudit(deps(storage), { before: daysAgo(250) }, ADMIN);
    expect((await chainOf(storage))[0]!.sealSeq).toBe(2);
    // Someone deletes two more rows from the front, directly.
    await storage.audit.deleteSealedThrough(3, 100);
    const kept = await chainOf(storage);
    expect(verify(kept)).toMatchObject({ ok: false, sealSeq: 2, problem: 'removed' });
  });

  it('fail/after a prune a row removed in the middle, or changed, is still found', async () => {
    const storage = await logOf([300, 200, 100, 50, 40, 30, 10]);
    await pruneAudit(deps(storage), { before: daysAgo(150) }, ADMIN);
    const kept = await chainOf(storage);
    expect(verify(kept)).toMatchObject({ ok: true, from: 3 });
    expect(verify([...kept.slice(0, 2), ...kept.slice(3)])).toMatchObject({
      ok: false,
      sealSeq: kept[2]!.sealSeq,
      problem: 'removed',
    });
    const changed = kept.map((r, i) => (i === 3 ? { ...r, outcome: 'failure' as const } : r));
    expect(verify(changed)).toMatchObject({ ok: false, rowId: kept[3]!.id, problem: 'changed' });
  });
});

describe('exportAudit (issue 20)', () => {
  const exported = async (storage: Storage, before: Date, page = 2) => {
    const out: AuditRecord[] = [];
    for await (const rows of exportAudit(storage.audit, { before, page })) out.push(...rows);
    return out;
  };

  it('ok/the sealed rows in chain order up to the first recorded at or after the date, in pages', async () => {
    const storage = await logOf([300, 250, 200, 150, 95, 20, 10]);
    const rows = await exported(storage, daysAgo(100));
    expect(rows.map((r) => r.sealSeq)).toEqual([1, 2, 3, 4]);
    expect(verify(rows, true)).toEqual({ ok: true, rows: 4, from: 1 });
    // Exactly what a prune with the same date deletes.
    const done = await pruneAudit(deps(storage), { before: daysAgo(100) }, ADMIN);
    expect([done.firstSeq, done.throughSeq]).toEqual([1, 4]);
    // The export's last hash is the kept chain's anchor.
    expect((await chainOf(storage))[0]!.prevHash).toStrictEqual(rows[3]!.hash);
  });

  it('ok/a prefix only; the head too when it is older; from the first kept row after a prune', async () => {
    const storage = await logOf([300, 10, 250, 200]);
    expect((await exported(storage, daysAgo(100))).map((r) => r.sealSeq)).toEqual([1]);
    expect((await exported(storage, daysAgo(1))).map((r) => r.sealSeq)).toEqual([1, 2, 3, 4]);
    await storage.audit.deleteSealedThrough(1, 10);
    expect((await exported(storage, daysAgo(1))).map((r) => r.sealSeq)).toEqual([2, 3, 4]);
    expect(await exported(storage, daysAgo(500))).toEqual([]);
  });
});
