import type { Knex } from 'knex';
import { BatonError } from '../../ground/errors';
import type { PendingUpstream, UpstreamRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';
import {
  type KeyColumns,
  keyColumns,
  type SettingsColumns,
  settingsColumns,
  settingsOf,
  wrappedKeyOf,
} from './shared-columns';

interface PendingRow extends SettingsColumns, KeyColumns {
  ca_id: string;
  spki: Uint8Array;
  csr_der: Uint8Array;
  created_at: Date;
}

const toPending = (r: PendingRow): PendingUpstream => ({
  installation: settingsOf(r),
  caId: r.ca_id,
  wrappedKey: wrappedKeyOf(r),
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
        // The single-row primary key makes a concurrent second `ca init --upstream-csr` lose here.
        const inserted = await k('upstream_pending')
          .insert({
            id: 1,
            ...settingsColumns(p.installation),
            ca_id: p.caId,
            ...keyColumns(p.wrappedKey),
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
