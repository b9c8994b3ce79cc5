import type { Knex } from 'knex';
import { BatonError } from '../../ground/errors';
import type { PendingUpstream, UpstreamRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';

interface PendingRow {
  trust_domain: string;
  public_url: string;
  public_http_url: string | null;
  node_ttl_ms: string | number;
  workload_ttl_ms: string | number;
  admin_ttl_ms: string | number;
  ca_id: string;
  key_alg: 'A256GCM' | 'none';
  key_kek_id: string;
  key_blob: Uint8Array;
  spki: Uint8Array;
  csr_der: Uint8Array;
  created_at: Date;
}

const toPending = (r: PendingRow): PendingUpstream => ({
  installation: {
    trustDomain: r.trust_domain,
    publicUrl: r.public_url,
    ...(r.public_http_url ? { publicHttpUrl: r.public_http_url } : {}),
    nodeTtlMs: Number(r.node_ttl_ms),
    workloadTtlMs: Number(r.workload_ttl_ms),
    adminTtlMs: Number(r.admin_ttl_ms),
  },
  caId: r.ca_id,
  wrappedKey: { alg: r.key_alg, kekId: r.key_kek_id, blob: toBuffer(r.key_blob) },
  spki: toBuffer(r.spki),
  csrDer: toBuffer(r.csr_der),
  createdAt: new Date(r.created_at),
});

/** The one `upstream_pending` row (migrations/20261208020000_upstream_ca.ts). */
export function knexUpstreamRepository(k: Knex | Knex.Transaction): UpstreamRepository {
  return {
    getPending: () =>
      db(async () => {
        const row = await k<PendingRow>('upstream_pending').where('id', 1).first();
        return row ? toPending(row) : null;
      }),
    savePending: (p) =>
      db(async () => {
        const i = p.installation;
        // The single-row primary key makes a concurrent second `ca init --upstream-csr` lose here.
        const inserted = await k('upstream_pending')
          .insert({
            id: 1,
            trust_domain: i.trustDomain,
            public_url: i.publicUrl,
            public_http_url: i.publicHttpUrl ?? null,
            node_ttl_ms: i.nodeTtlMs,
            workload_ttl_ms: i.workloadTtlMs,
            admin_ttl_ms: i.adminTtlMs,
            ca_id: p.caId,
            key_alg: p.wrappedKey.alg,
            key_kek_id: p.wrappedKey.kekId,
            key_blob: p.wrappedKey.blob,
            spki: p.spki,
            csr_der: p.csrDer,
            created_at: p.createdAt,
          })
          .onConflict('id')
          .ignore()
          .returning('id');
        if (inserted.length === 0)
          throw new BatonError('ERR_UPSTREAM_PENDING', 'an upstream CA is already pending');
      }),
    deletePending: (caId) =>
      db(
        async () =>
          (await k('upstream_pending').where({ id: 1, ca_id: caId }).delete().returning('id')).length === 1,
      ),
  };
}
