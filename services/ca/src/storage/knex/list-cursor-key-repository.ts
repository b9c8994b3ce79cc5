import type { Knex } from 'knex';
import type { ListCursorKeyRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';

/**
 * The one row of `list_cursor_key` (made by its migration). Read first, so that a list read writes
 * nothing while the row exists. Without it, INSERT … ON CONFLICT DO NOTHING and then a second read:
 * in READ COMMITTED an insert that lost to a concurrent one does not see the winner's row in its
 * own statement's snapshot, but the next statement (a new snapshot) does.
 */
export function knexListCursorKeyRepository(k: Knex | Knex.Transaction): ListCursorKeyRepository {
  const read = async (): Promise<Buffer | null> => {
    const row = (await k('list_cursor_key').select('key').where({ id: 1 }).first()) as
      | { key: Uint8Array }
      | undefined;
    return row ? toBuffer(row.key) : null;
  };
  return {
    getOrCreate: (candidate, at) =>
      db(async () => {
        const stored = await read();
        if (stored) return stored;
        await k('list_cursor_key')
          .insert({ id: 1, key: candidate, created_at: at })
          .onConflict('id')
          .ignore();
        const made = await read();
        if (!made) throw new Error('list_cursor_key: no row after insert');
        return made;
      }),
  };
}
