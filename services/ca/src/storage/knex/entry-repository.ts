import type { Knex } from 'knex';
import type { EntryRecord, EntryRepository, Selector } from '../../domain/ports';
import { db } from './db-errors';
import { pageOf } from './keyset';

interface EntryRow {
  name: string;
  spiffe_id: string;
  parent_node_id: string;
  selectors: Selector[] | string;
  dns_names: string[] | string;
  allow_wildcard_dns: boolean;
  ttl_ms: string | number | null;
  hint: string | null;
  created_by: string;
  created_at: Date;
}

/** jsonb comes back parsed from pg and PGlite alike; a string is parsed defensively. */
const json = <T>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);

const toEntry = (r: EntryRow): EntryRecord => ({
  name: r.name,
  spiffeId: r.spiffe_id,
  parentNodeId: r.parent_node_id,
  selectors: json(r.selectors),
  dnsNames: json(r.dns_names),
  allowWildcardDns: r.allow_wildcard_dns,
  ttlMs: r.ttl_ms === null ? null : Number(r.ttl_ms),
  ...(r.hint ? { hint: r.hint } : {}),
  createdBy: r.created_by,
  createdAt: new Date(r.created_at),
});

export function knexEntryRepository(k: Knex | Knex.Transaction): EntryRepository {
  return {
    insert: (e) =>
      db(async () => {
        await k('entries').insert({
          name: e.name,
          spiffe_id: e.spiffeId,
          parent_node_id: e.parentNodeId,
          selectors: JSON.stringify(e.selectors),
          dns_names: JSON.stringify(e.dnsNames),
          allow_wildcard_dns: e.allowWildcardDns,
          ttl_ms: e.ttlMs,
          hint: e.hint ?? null,
          created_by: e.createdBy,
          created_at: e.createdAt,
        });
      }),
    findByName: (name) =>
      db(async () => {
        const row = await k<EntryRow>('entries').where({ name }).first();
        return row ? toEntry(row) : null;
      }),
    list: (f = {}) =>
      db(async () => {
        const q = k<EntryRow>('entries').orderBy('name');
        if (f.parentNodeId) q.where('parent_node_id', f.parentNodeId);
        return (await q).map(toEntry);
      }),
    // The primary key serves it.
    page: (p) =>
      db(async () => {
        const q = k<EntryRow>('entries')
          .orderBy('name')
          .limit(p.limit + 1);
        if (p.after) q.where('name', '>', String(p.after[0]));
        return pageOf((await q) as EntryRow[], p.limit, toEntry, (r) => [r.name]);
      }),
    findForNode: (parentNodeId, spiffeId) =>
      db(async () => {
        const row = await k<EntryRow>('entries')
          .where({ parent_node_id: parentNodeId, spiffe_id: spiffeId })
          .first();
        return row ? toEntry(row) : null;
      }),
    // `returning` rather than the affected-row count: knex-pglite returns a raw result for DELETE.
    delete: (name) =>
      db(async () => (await k('entries').where({ name }).delete().returning('name')).length > 0),
  };
}
