import type { Knex } from 'knex';
import type {
  CertificatePageFilter,
  CertificateRecord,
  CertificateRepository,
  PageRequest,
} from '../../domain/ports';
import { db, toBuffer } from './db-errors';
import { pageOf, timeKeySql } from './keyset';

export interface CertificateRow {
  serial: string;
  ca_id: string;
  kind: CertificateRecord['kind'];
  spiffe_id: string;
  node_id: string | null;
  issued_via: string | null;
  not_before: Date;
  not_after: Date;
  key_fingerprint: string;
  der: Uint8Array;
  status: CertificateRecord['status'];
  created_at: Date;
  revoked_at?: Date | null;
  revocation_reason?: number | null;
}

export const toCertificate = (r: CertificateRow): CertificateRecord => ({
  serial: r.serial,
  caId: r.ca_id,
  kind: r.kind,
  spiffeId: r.spiffe_id,
  nodeId: r.node_id,
  issuedVia: r.issued_via,
  notBefore: new Date(r.not_before),
  notAfter: new Date(r.not_after),
  keyFingerprint: r.key_fingerprint,
  der: toBuffer(r.der),
  status: r.status,
  createdAt: new Date(r.created_at),
  revokedAt: r.revoked_at ? new Date(r.revoked_at) : null,
  revocationReason: r.revocation_reason ?? null,
});

const fromCertificate = (c: CertificateRecord): CertificateRow => ({
  serial: c.serial,
  ca_id: c.caId,
  kind: c.kind,
  spiffe_id: c.spiffeId,
  node_id: c.nodeId,
  issued_via: c.issuedVia,
  not_before: c.notBefore,
  not_after: c.notAfter,
  key_fingerprint: c.keyFingerprint,
  der: c.der,
  status: c.status,
  created_at: c.createdAt,
  revoked_at: c.revokedAt ?? null,
  revocation_reason: c.revocationReason ?? null,
});

/** Newest first; serial breaks ties of created_at (unique, so the order is total). */
const NEWEST_FIRST = [
  { column: 'created_at', order: 'desc' },
  { column: 'serial', order: 'desc' },
] as const;

export function knexCertificateRepository(k: Knex | Knex.Transaction): CertificateRepository {
  /**
   * One ordered index range scan of a page (plus one row): (created_at, serial), or the
   * (status|node_id|issued_via, created_at, serial) index of the filter.
   */
  const pageScan = (f: CertificatePageFilter, p: PageRequest, narrow: (q: Knex.QueryBuilder) => void) => {
    const q = k('certificates').select('*', k.raw(`${timeKeySql('created_at')} as page_key_at`));
    narrow(q);
    if (f.status) q.where('status', f.status);
    if (f.expiredAt) q.where('not_after', '<=', f.expiredAt);
    if (f.validAt) q.where('not_after', '>', f.validAt);
    if (p.after)
      q.whereRaw('(created_at, serial) < (?::timestamptz, ?)', [String(p.after[0]), String(p.after[1])]);
    return q.orderBy([...NEWEST_FIRST]).limit(p.limit + 1);
  };
  return {
    insert: (rec) => db(async () => void (await k('certificates').insert(fromCertificate(rec)))),
    findBySerial: (serial) =>
      db(async () => {
        const row = await k<CertificateRow>('certificates').where({ serial }).first();
        return row ? toCertificate(row) : null;
      }),
    lockBySerial: (serial) =>
      db(async () => {
        const row = await k<CertificateRow>('certificates').where({ serial }).forUpdate().first();
        return row ? toCertificate(row) : null;
      }),
    supersedeForNode: (nodeId, kind) =>
      db(async () =>
        k('certificates').where({ node_id: nodeId, kind, status: 'valid' }).update({ status: 'superseded' }),
      ),
    list: (f) =>
      db(async () => {
        const q = k<CertificateRow>('certificates').orderBy('created_at', 'desc');
        if (f.nodeId) q.where((w) => w.where('node_id', f.nodeId!).orWhere('issued_via', f.nodeId!));
        if (f.kind) q.where('kind', f.kind);
        if (f.status) q.where('status', f.status);
        if (f.expiredAt) q.where('not_after', '<=', f.expiredAt);
        if (f.validAt) q.where('not_after', '>', f.validAt);
        q.limit(f.limit ?? 1000);
        return (await q).map(toCertificate);
      }),
    page: (f, p) =>
      db(async () => {
        const nodeId = f.nodeId;
        // `node_id = X OR issued_via = X` cannot be one ordered index scan: it is two, each at most
        // a page long (the second without the rows the first has), merged and cut here.
        const q = nodeId
          ? k
              .select('*')
              .from(
                k.raw('((?) union all (?)) as u', [
                  pageScan(f, p, (b) => b.where('node_id', nodeId)),
                  pageScan(f, p, (b) =>
                    b.where('issued_via', nodeId).whereRaw('node_id is distinct from ?', [nodeId]),
                  ),
                ]),
              )
              .orderBy([...NEWEST_FIRST])
              .limit(p.limit + 1)
          : pageScan(f, p, () => undefined);
        const rows = (await q) as (CertificateRow & { page_key_at: string })[];
        return pageOf(rows, p.limit, toCertificate, (r) => [r.page_key_at, r.serial]);
      }),
    deleteExpired: (expiredBefore, limit) =>
      db(async () => {
        // The inner select is an index range scan on not_after (migration 20261208110000); SKIP
        // LOCKED leaves rows a renewal's supersede or a revocation holds right now to a later batch.
        const r = (await k.raw(
          `with gone as (
             delete from certificates
             where serial in (
               select serial from certificates where not_after < ?
               order by not_after limit ? for update skip locked
             )
             returning 1
           )
           select count(*)::int as n from gone`,
          [expiredBefore, limit],
        )) as { rows: { n: number }[] };
        return Number(r.rows[0]!.n);
      }),
    findByKeyFingerprint: (fp) =>
      db(async () =>
        (await k<CertificateRow>('certificates').where({ key_fingerprint: fp })).map(toCertificate),
      ),
  };
}
