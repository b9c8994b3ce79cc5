import type { Knex } from 'knex';
import type { JwtKeyRecord, JwtKeyRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';
import { type KeyColumns, keyColumns, wrappedKeyOf } from './shared-columns';

interface JwtKeyRow extends KeyColumns {
  kid: string;
  ca_id: string;
  spki: Uint8Array;
  created_at: Date;
  retired_at: Date | null;
}

const toJwtKey = (r: JwtKeyRow): JwtKeyRecord => ({
  kid: r.kid,
  caId: r.ca_id,
  spki: toBuffer(r.spki),
  wrappedKey: wrappedKeyOf(r),
  createdAt: new Date(r.created_at),
  retiredAt: r.retired_at === null ? null : new Date(r.retired_at),
});

export function knexJwtKeyRepository(k: Knex | Knex.Transaction): JwtKeyRepository {
  return {
    list: () =>
      db(async () =>
        (await k<JwtKeyRow>('jwt_keys').orderBy([{ column: 'created_at' }, { column: 'kid' }])).map(toJwtKey),
      ),
    // The primary key (kid) and the unique ca_id make a second key for one CA an ERR_CONFLICT, also
    // when two replicas insert at once.
    insert: (key) =>
      db(async () => {
        await k('jwt_keys').insert({
          kid: key.kid,
          ca_id: key.caId,
          spki: key.spki,
          ...keyColumns(key.wrappedKey),
          created_at: key.createdAt,
          retired_at: key.retiredAt,
        });
      }),
    // `returning` rather than the affected-row count: knex-pglite returns a raw result for UPDATE.
    retireOthers: (kid, at) =>
      db(
        async () =>
          (
            await k('jwt_keys')
              .whereNot({ kid })
              .whereNull('retired_at')
              .update({ retired_at: at })
              .returning('kid')
          ).length,
      ),
  };
}
