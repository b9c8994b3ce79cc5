import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import { migrationSource } from '../../../../../migrations';
import { BatonError } from '../../ground/errors';

export interface DatabaseConfig {
  /** A postgres:// URL; when absent, the embedded PGlite in `dataDir/pgdata`. */
  databaseUrl?: string;
  dataDir: string;
  /** Pool size for a real PostgreSQL; PGlite is always one connection. */
  poolMax?: number;
}

export type DatabaseKind = 'postgres' | 'pglite';

export function databaseKind(config: DatabaseConfig): DatabaseKind {
  return config.databaseUrl ? 'postgres' : 'pglite';
}

/** Opens the database: one SQL dialect (PostgreSQL) whether embedded or served. */
export function openDatabase(config: DatabaseConfig): Knex {
  if (config.databaseUrl) {
    return knexFactory({
      client: 'pg',
      connection: {
        connectionString: config.databaseUrl,
        // A frozen or unreachable PostgreSQL must not hang requests: bound every statement, the
        // connect, and dead TCP peers; a crashed client must not hold locks in an open transaction.
        statement_timeout: 15_000,
        query_timeout: 20_000,
        idle_in_transaction_session_timeout: 30_000,
        connectionTimeoutMillis: 5_000,
        keepAlive: true,
      } as Knex.PgConnectionConfig,
      pool: { min: 0, max: config.poolMax ?? 10 },
      // Fail fast when PostgreSQL is down: callers answer 503 rather than queueing for minutes.
      acquireConnectionTimeout: 5000,
    });
  }
  const dir = join(config.dataDir, 'pgdata');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const release = lockDataDir(dir);
  const knex = knexFactory({
    client: ClientPgLite,
    dialect: 'postgres',
    connection: { filename: dir },
  } as Knex.Config);
  const destroy = knex.destroy.bind(knex);
  // knex defines destroy() read-only; redefine it so the lock goes with the database.
  Object.defineProperty(knex, 'destroy', {
    configurable: true,
    value: async (...args: Parameters<Knex['destroy']>) => {
      try {
        return await destroy(...args);
      } finally {
        release();
      }
    },
  });
  return knex;
}

const isRunning = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * PGlite is PostgreSQL inside this process, with no lock of its own: a second process on the same
 * data dir keeps its own copy of the pages and one silently overwrites the other (a `baton ca
 * rotate` beside a running server was lost). So one process at a time: `pgdata.lock` (beside
 * `pgdata`: PGlite refuses to create a database in a directory that is not empty) holds
 * the owner's pid, is made with O_EXCL, and is removed at destroy() or exit; a lock left by a
 * process that is gone (or by this pid, reused after a crash) is taken over.
 */
function lockDataDir(dir: string): () => void {
  const path = `${dir}.lock`;
  const mine = `${process.pid}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, mine, { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (pid > 0 && pid !== process.pid && isRunning(pid)) {
        throw new BatonError(
          'ERR_DATABASE_UNAVAILABLE',
          `the embedded database in ${dir} is in use by process ${pid} (stop it first; several processes need PostgreSQL; remove ${path} only if that process is not Baton)`,
        );
      }
      unlinkSync(path);
    }
  }
  const release = () => {
    process.off('exit', release);
    try {
      if (readFileSync(path, 'utf8') === mine) unlinkSync(path);
    } catch {
      // Already gone.
    }
  };
  process.on('exit', release);
  return release;
}

/** An in-memory PGlite (tests). */
export function openMemoryDatabase(): Knex {
  return knexFactory({ client: ClientPgLite, dialect: 'postgres', connection: {} } as Knex.Config);
}

const migrationConfig: Knex.MigratorConfig = { migrationSource, tableName: 'baton_migrations' };

/** pg_advisory_xact_lock key of the migrator ("migr"). */
const MIGRATION_LOCK = 0x6d696772;

/**
 * Applies pending migrations. Replicas that start together on one PostgreSQL take turns: knex
 * creates its own tables without a guard (a second replica failed with "relation
 * baton_migrations already exists") and refuses rather than waits when its lock is taken, so the
 * whole run holds an advisory lock on a connection of its own; the next replica then finds
 * nothing to do. PGlite is one process on one connection and needs no lock.
 */
export async function migrateLatest(db: Knex): Promise<string[]> {
  const run = async () => {
    const [, applied] = (await db.migrate.latest(migrationConfig)) as [number, string[]];
    return applied;
  };
  if (db.client.config.client !== 'pg') return run();
  return db.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(?)', [MIGRATION_LOCK]);
    return run();
  });
}

export async function migrateRollbackAll(db: Knex): Promise<void> {
  await db.migrate.rollback(migrationConfig, true);
}
