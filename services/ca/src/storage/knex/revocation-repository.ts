import type { Knex } from 'knex';
import type { CrlRecord, CrlRepository, RevocationEvent, RevocationRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';

interface EventRow {
  id: string | number;
  kind: RevocationEvent['kind'];
  node_id: string | null;
  serials: string[] | string;
  reason: number;
  actor: string;
  created_at: Date;
}

const toEvent = (r: EventRow): RevocationEvent => ({
  id: Number(r.id),
  kind: r.kind,
  nodeId: r.node_id,
  serials: typeof r.serials === 'string' ? (JSON.parse(r.serials) as string[]) : r.serials,
  reason: r.reason,
  actor: r.actor,
  createdAt: new Date(r.created_at),
});

export function knexRevocationRepository(k: Knex | Knex.Transaction): RevocationRepository {
  return {
    revokeCertificates: (target, at, reason) =>
      db(async () => {
        const q = k('certificates')
          .whereIn('status', ['valid', 'superseded'])
          .andWhere('not_after', '>', at)
          .update({ status: 'revoked', revoked_at: at, revocation_reason: reason })
          .returning('serial');
        if ('serial' in target) q.where('serial', target.serial);
        else q.where((w) => w.where('node_id', target.nodeId).orWhere('issued_via', target.nodeId));
        return ((await q) as { serial: string }[]).map((r) => r.serial);
      }),
    appendEvent: (e) =>
      db(async () => {
        const [row] = (await k('revocation_events')
          .insert({
            kind: e.kind,
            node_id: e.nodeId,
            serials: JSON.stringify(e.serials),
            reason: e.reason,
            actor: e.actor,
            created_at: e.createdAt,
          })
          .returning('*')) as EventRow[];
        return toEvent(row!);
      }),
    eventsSince: (id, limit) =>
      db(async () =>
        ((await k('revocation_events').where('id', '>', id).orderBy('id').limit(limit)) as EventRow[]).map(
          toEvent,
        ),
      ),
    lastEventId: () =>
      db(async () => {
        const row = (await k('revocation_events').max('id as max').first()) as
          | { max: string | number | null }
          | undefined;
        return Number(row?.max ?? 0);
      }),
    revokedForCa: (caId, now) =>
      db(async () => {
        const rows = (await k('certificates')
          .select('serial', 'revoked_at', 'revocation_reason')
          .where({ ca_id: caId, status: 'revoked' })
          .andWhere('not_after', '>', now)
          .orderBy('serial')) as { serial: string; revoked_at: Date; revocation_reason: number | null }[];
        return rows.map((r) => ({
          serial: r.serial,
          revokedAt: new Date(r.revoked_at),
          reason: r.revocation_reason ?? 0,
        }));
      }),
  };
}

interface CrlRow {
  ca_id: string;
  crl_number: string | number;
  this_update: Date;
  next_update: Date;
  entries: number;
  der: Uint8Array;
}

/** A fixed advisory-lock key for "the CRL builder" (pg_advisory_xact_lock, released at commit). */
const CRL_BUILDER_LOCK = 0x62617463; // "batc"

export function knexCrlRepository(k: Knex | Knex.Transaction): CrlRepository {
  return {
    latest: (caId) =>
      db(async () => {
        const row = (await k('crls').where({ ca_id: caId }).orderBy('crl_number', 'desc').first()) as
          | CrlRow
          | undefined;
        return row
          ? {
              caId: row.ca_id,
              crlNumber: BigInt(row.crl_number),
              thisUpdate: new Date(row.this_update),
              nextUpdate: new Date(row.next_update),
              entries: row.entries,
              der: toBuffer(row.der),
            }
          : null;
      }),
    lockBuilder: () =>
      db(async () => void (await k.raw('select pg_advisory_xact_lock(?)', [CRL_BUILDER_LOCK]))),
    nextNumber: () =>
      db(async () => {
        const r = (await k.raw("select nextval('crl_number_seq') as n")) as {
          rows: { n: string | number }[];
        };
        return BigInt(r.rows[0]!.n);
      }),
    insert: (c: CrlRecord) =>
      db(async () => {
        await k('crls').insert({
          ca_id: c.caId,
          crl_number: c.crlNumber.toString(),
          this_update: c.thisUpdate,
          next_update: c.nextUpdate,
          entries: c.entries,
          der: c.der,
        });
      }),
  };
}
