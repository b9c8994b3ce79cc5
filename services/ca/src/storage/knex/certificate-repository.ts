import type { Knex } from 'knex';
import type { CertificateRecord, CertificateRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';

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

export function knexCertificateRepository(k: Knex | Knex.Transaction): CertificateRepository {
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
