import type { Knex } from 'knex';
import { BatonError } from '../../ground/errors';
import type { CaRecord, CaRepository, Installation } from '../../domain/ports';
import { db, toBuffer } from './db-errors';

interface InstallationRow {
  trust_domain: string;
  public_url: string;
  public_http_url: string | null;
  node_ttl_ms: string | number;
  workload_ttl_ms: string | number;
  admin_ttl_ms: string | number;
  created_at: Date;
}

interface CaRow {
  id: string;
  kind: CaRecord['kind'];
  parent_id: string | null;
  certificate_der: Uint8Array;
  not_before: Date;
  not_after: Date;
  active: boolean;
  key_alg: 'A256GCM' | 'none';
  key_kek_id: string;
  key_blob: Uint8Array;
  created_at: Date;
}

const toInstallation = (r: InstallationRow): Installation => ({
  trustDomain: r.trust_domain,
  publicUrl: r.public_url,
  ...(r.public_http_url ? { publicHttpUrl: r.public_http_url } : {}),
  nodeTtlMs: Number(r.node_ttl_ms),
  workloadTtlMs: Number(r.workload_ttl_ms),
  adminTtlMs: Number(r.admin_ttl_ms),
  createdAt: new Date(r.created_at),
});

const toCa = (r: CaRow): CaRecord => ({
  id: r.id,
  kind: r.kind,
  parentId: r.parent_id,
  certificateDer: toBuffer(r.certificate_der),
  notBefore: new Date(r.not_before),
  notAfter: new Date(r.not_after),
  active: r.active,
  wrappedKey: { alg: r.key_alg, kekId: r.key_kek_id, blob: toBuffer(r.key_blob) },
  createdAt: new Date(r.created_at),
});

const fromCa = (c: CaRecord): CaRow => ({
  id: c.id,
  kind: c.kind,
  parent_id: c.parentId,
  certificate_der: c.certificateDer,
  not_before: c.notBefore,
  not_after: c.notAfter,
  active: c.active,
  key_alg: c.wrappedKey.alg,
  key_kek_id: c.wrappedKey.kekId,
  key_blob: c.wrappedKey.blob,
  created_at: c.createdAt,
});

export function knexCaRepository(k: Knex | Knex.Transaction): CaRepository {
  return {
    getInstallation: () =>
      db(async () => {
        const row = await k<InstallationRow>('installation').where('id', 1).first();
        return row ? toInstallation(row) : null;
      }),
    listCas: () => db(async () => (await k<CaRow>('cas').orderBy('created_at')).map(toCa)),
    initialize: (inst, cas) =>
      db(async () => {
        const write = async (trx: Knex.Transaction) => {
          // The single-row primary key makes a concurrent second `ca init` fail here, not later.
          const inserted = await trx('installation')
            .insert({
              id: 1,
              trust_domain: inst.trustDomain,
              public_url: inst.publicUrl,
              public_http_url: inst.publicHttpUrl ?? null,
              node_ttl_ms: inst.nodeTtlMs,
              workload_ttl_ms: inst.workloadTtlMs,
              admin_ttl_ms: inst.adminTtlMs,
              created_at: inst.createdAt,
            })
            .onConflict('id')
            .ignore()
            .returning('id');
          if (inserted.length === 0)
            throw new BatonError('ERR_ALREADY_INITIALIZED', 'the CA is already initialized');
          for (const ca of cas) await trx('cas').insert(fromCa(ca));
        };
        if (k.isTransaction) await write(k as Knex.Transaction);
        else await k.transaction(write);
      }),
    addActiveIntermediate: (ca) =>
      db(async () => {
        const write = async (trx: Knex.Transaction) => {
          await trx('cas').where({ kind: 'intermediate' }).update({ active: false });
          await trx('cas').insert(fromCa({ ...ca, active: true }));
        };
        if (k.isTransaction) await write(k as Knex.Transaction);
        else await k.transaction(write);
      }),
  };
}
