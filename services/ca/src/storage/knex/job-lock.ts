import type { Knex } from 'knex';
import type { JobLockName } from '../../domain/ports';

/** pg_advisory_lock keys of the job locks (per database; beside "audt", "batc" and "migr"). */
const JOB_LOCK_KEYS: Record<JobLockName, number> = {
  'certificate-retention': 0x72746e63, // "rtnc"
};

/** A pooled pg connection, as knex hands it out; `__knex__disposed` makes the pool drop it. */
interface PooledConnection {
  __knex__disposed?: unknown;
}

/**
 * Storage.exclusive over knex. On PostgreSQL a session-level advisory lock
 * (`pg_try_advisory_lock`, not the transaction-level kind: a transaction open for the whole run
 * would be ended by idle_in_transaction_session_timeout and would hold back vacuum), taken on a
 * connection set aside for the run and released on it at the end. If the process dies, PostgreSQL
 * ends the session and the lock goes with it; `fn` runs its own short statements on the pool.
 *
 * PGlite is one process on one connection (its data dir is locked to one process,
 * storage/knex/database.ts), so there is no other replica to exclude, and holding its only
 * connection for the run would stop every request: `fn` just runs.
 */
export async function runExclusive<T>(
  knex: Knex,
  name: JobLockName,
  fn: () => Promise<T>,
): Promise<{ value: T } | null> {
  if (knex.client.config.client !== 'pg') return { value: await fn() };
  const key = JOB_LOCK_KEYS[name];
  const conn = (await knex.client.acquireConnection()) as PooledConnection;
  let held = false;
  try {
    const r = (await knex.raw('select pg_try_advisory_lock(?) as ok', [key]).connection(conn)) as {
      rows: { ok: boolean }[];
    };
    held = r.rows[0]?.ok === true;
    if (!held) return null;
    return { value: await fn() };
  } finally {
    if (held) {
      await knex
        .raw('select pg_advisory_unlock(?)', [key])
        .connection(conn)
        .catch((e: unknown) => {
          // A session that may still hold the lock must not go back to the pool: dropped, it ends,
          // and PostgreSQL releases the lock with it.
          conn.__knex__disposed = e ?? 'advisory unlock failed';
        });
    }
    await knex.client.releaseConnection(conn);
  }
}
