import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import { migrationSource } from '../../../../../migrations';

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
      connection: config.databaseUrl,
      pool: { min: 0, max: config.poolMax ?? 10 },
      // Fail fast when PostgreSQL is down: callers answer 503 rather than queueing for minutes.
      acquireConnectionTimeout: 5000,
    });
  }
  const dir = join(config.dataDir, 'pgdata');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return knexFactory({
    client: ClientPgLite,
    dialect: 'postgres',
    connection: { filename: dir },
  } as Knex.Config);
}

/** An in-memory PGlite (tests). */
export function openMemoryDatabase(): Knex {
  return knexFactory({ client: ClientPgLite, dialect: 'postgres', connection: {} } as Knex.Config);
}

const migrationConfig: Knex.MigratorConfig = { migrationSource, tableName: 'baton_migrations' };

/** Applies pending migrations. knex's lock table keeps concurrent replicas from racing. */
export async function migrateLatest(db: Knex): Promise<string[]> {
  const [, applied] = (await db.migrate.latest(migrationConfig)) as [number, string[]];
  return applied;
}

export async function migrateRollbackAll(db: Knex): Promise<void> {
  await db.migrate.rollback(migrationConfig, true);
}
