import type { Knex } from 'knex';
import type { AuditRecord, AuditRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';
import { pageOf, timeKeySql } from './keyset';

interface AuditRow {
  id: string | number;
  at: Date;
  event: string;
  actor: string;
  source: string | null;
  subject: string | null;
  outcome: 'success' | 'failure';
  details: Record<string, unknown> | string;
  seal_seq: string | number | null;
  prev_hash: Uint8Array | null;
  hash: Uint8Array | null;
}

const toRecord = (r: AuditRow): AuditRecord => ({
  id: Number(r.id),
  at: new Date(r.at),
  event: r.event,
  actor: r.actor,
  source: r.source,
  subject: r.subject,
  outcome: r.outcome,
  details: typeof r.details === 'string' ? (JSON.parse(r.details) as Record<string, unknown>) : r.details,
  sealSeq: r.seal_seq === null ? null : Number(r.seal_seq),
  prevHash: r.prev_hash ? toBuffer(r.prev_hash) : null,
  hash: r.hash ? toBuffer(r.hash) : null,
});

/** One sealer at a time across replicas (pg_advisory_xact_lock, released at commit). */
const AUDIT_SEAL_LOCK = 0x61756474; // "audt"
/** Rows hashed between two turns of the event loop (about 1 ms of work). */
const HASH_SLICE = 50;

export function knexAuditRepository(k: Knex | Knex.Transaction): AuditRepository {
  const inTx = <T>(fn: (trx: Knex.Transaction) => Promise<T>) =>
    k.isTransaction ? fn(k as Knex.Transaction) : k.transaction(fn);
  return {
    append: (e) =>
      db(async () => {
        await k('audit_log').insert({
          at: e.at,
          event: e.event,
          actor: e.actor,
          source: e.source,
          subject: e.subject,
          outcome: e.outcome,
          details: JSON.stringify(e.details),
        });
      }),
    seal: (limit, hashOf) =>
      db(() =>
        inTx(async (trx) => {
          await trx.raw('select pg_advisory_xact_lock(?)', [AUDIT_SEAL_LOCK]);
          const head = (await trx('audit_log')
            .select('seal_seq', 'hash')
            .whereNotNull('seal_seq')
            .orderBy('seal_seq', 'desc')
            .first()) as Pick<AuditRow, 'seal_seq' | 'hash'> | undefined;
          const rows = (await trx('audit_log')
            .select('id', 'at', 'event', 'actor', 'source', 'subject', 'outcome', 'details', 'seal_seq')
            .whereNull('seal_seq')
            .orderBy('id')
            .limit(limit)) as AuditRow[];
          if (rows.length === 0) return 0;
          let seq = head ? Number(head.seal_seq) : 0;
          let prev = head?.hash ? toBuffer(head.hash) : null;
          const sealed: { id: number; seq: number; prev: string | null; hash: string }[] = [];
          for (const [i, row] of rows.entries()) {
            // Hashing is the sealer's CPU work on a serving replica's event loop: requests run between slices.
            if (i > 0 && i % HASH_SLICE === 0) await new Promise<void>((resolve) => setImmediate(resolve));
            seq += 1;
            const hash = hashOf({ ...toRecord(row), sealSeq: seq }, prev);
            sealed.push({
              id: Number(row.id),
              seq,
              prev: prev?.toString('hex') ?? null,
              hash: hash.toString('hex'),
            });
            prev = hash;
          }
          // One parameter for the whole batch: a statement with four per row made knex and pg
          // rewrite and serialize thousands of placeholders on the event loop.
          await trx.raw(
            `update audit_log a set seal_seq = v.seq, prev_hash = decode(v.prev, 'hex'), hash = decode(v.hash, 'hex')
             from jsonb_to_recordset(?::jsonb) as v(id bigint, seq bigint, prev text, hash text)
             where a.id = v.id`,
            [JSON.stringify(sealed)],
          );
          return rows.length;
        }),
      ),
    list: (f) =>
      db(async () => {
        const q = k('audit_log')
          .orderBy('id', 'desc')
          .limit(Math.min(f.limit ?? 100, 10_000));
        if (f.actor) q.where('actor', f.actor);
        if (f.subject) q.where('subject', f.subject);
        if (f.event) q.where('event', f.event);
        if (f.since) q.where('at', '>=', f.since);
        if (f.until) q.where('at', '<', f.until);
        return ((await q) as AuditRow[]).map(toRecord);
      }),
    // One range scan of (at, id), or of the (event|actor|subject, at, id) index of a filter.
    page: (f, p) =>
      db(async () => {
        const q = k('audit_log')
          .select('*', k.raw(`${timeKeySql('at')} as page_key_at`))
          .orderBy([
            { column: 'at', order: 'desc' },
            { column: 'id', order: 'desc' },
          ])
          .limit(p.limit + 1);
        if (f.actor) q.where('actor', f.actor);
        if (f.subject) q.where('subject', f.subject);
        if (f.event) q.where('event', f.event);
        if (f.since) q.where('at', '>=', f.since);
        if (f.until) q.where('at', '<', f.until);
        if (p.after)
          q.whereRaw('(at, id) < (?::timestamptz, ?::bigint)', [String(p.after[0]), Number(p.after[1])]);
        const rows = (await q) as (AuditRow & { page_key_at: string })[];
        return pageOf(rows, p.limit, toRecord, (r) => [r.page_key_at, Number(r.id)]);
      }),
    sealedAfter: (after, limit) =>
      db(async () =>
        (
          (await k('audit_log').where('seal_seq', '>', after).orderBy('seal_seq').limit(limit)) as AuditRow[]
        ).map(toRecord),
      ),
    head: () =>
      db(async () => {
        const row = (await k('audit_log').whereNotNull('seal_seq').orderBy('seal_seq', 'desc').first()) as
          | AuditRow
          | undefined;
        return row ? toRecord(row) : null;
      }),
    pruneCut: (before, limit) =>
      db(async () => {
        // The oldest `limit` sealed rows by the unique seal_seq index, and the head by the same
        // index backwards: two index scans, whatever the length of the log.
        const r = (await k.raw(
          `with firsts as (
             select seal_seq, at from audit_log where seal_seq is not null order by seal_seq limit ?
           ), head as (
             select max(seal_seq) as seq from audit_log
           )
           select (select min(seal_seq) from firsts) as first,
                  (select max(seal_seq) from firsts) as last,
                  (select min(seal_seq) from firsts where at >= ? or seal_seq >= (select seq from head)) as stop`,
          [limit, before],
        )) as {
          rows: {
            first: string | number | null;
            last: string | number | null;
            stop: string | number | null;
          }[];
        };
        const row = r.rows[0]!;
        if (row.first === null || row.last === null) return null;
        const first = Number(row.first);
        const through = row.stop === null ? Number(row.last) : Number(row.stop) - 1;
        return through < first ? null : { first, through, complete: row.stop !== null };
      }),
    deleteSealedThrough: (through, limit) =>
      db(async () => {
        const r = (await k.raw(
          `with gone as (
             delete from audit_log
             where id in (
               select id from audit_log where seal_seq is not null and seal_seq <= ?
               order by seal_seq limit ?
             )
             returning 1
           )
           select count(*)::int as n from gone`,
          [through, limit],
        )) as { rows: { n: number }[] };
        return Number(r.rows[0]!.n);
      }),
    countUnsealed: () =>
      db(async () => {
        const row = (await k('audit_log').whereNull('seal_seq').count('* as n').first()) as
          | { n: string | number }
          | undefined;
        return Number(row?.n ?? 0);
      }),
  };
}
