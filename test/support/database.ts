import { randomBytes } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';
import { openMemoryDatabase } from '../../services/ca/src/storage/knex/database';
import { describeWith, type Requirement } from './tools';

/**
 * Test databases: PGlite always; PostgreSQL when BATON_TEST_DATABASE_URL is set (as `.ci/run` does).
 * Each PostgreSQL test file gets a fresh, uniquely named database that is dropped afterwards.
 */
export type Backend = 'pglite' | 'postgres';

export const postgresAdminUrl = process.env.BATON_TEST_DATABASE_URL;

export const backends: Backend[] = postgresAdminUrl ? ['pglite', 'postgres'] : ['pglite'];

export interface TestDatabase {
  backend: Backend;
  knex: Knex;
  /** The postgres:// URL (PostgreSQL only), for spawning server processes. */
  url?: string;
  drop(): Promise<void>;
}

export async function createPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  if (!postgresAdminUrl) throw new Error('BATON_TEST_DATABASE_URL is not set');
  const name = `baton_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = knexFactory({ client: 'pg', connection: postgresAdminUrl, pool: { min: 0, max: 1 } });
  await admin.raw(`create database ${name}`);
  const url = new URL(postgresAdminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      await admin.raw(`drop database if exists ${name} with (force)`);
      await admin.destroy();
    },
  };
}

export async function createTestDatabase(backend: Backend): Promise<TestDatabase> {
  if (backend === 'pglite') {
    const knex = openMemoryDatabase();
    return { backend, knex, drop: () => knex.destroy() };
  }
  const pg = await createPostgresDatabase();
  const knex = knexFactory({ client: 'pg', connection: pg.url, pool: { min: 0, max: 10 } });
  return {
    backend,
    knex,
    url: pg.url,
    drop: async () => {
      await knex.destroy();
      await pg.drop();
    },
  };
}

/**
 * The reason in the title of every suite skipped for want of PostgreSQL. `.ci/run` accepts no other
 * skip in its PGlite run (and none at all in its PostgreSQL run): keep the two in step.
 */
export const POSTGRES_SKIP_REASON = 'skipped: set BATON_TEST_DATABASE_URL to run on PostgreSQL';

/** Runs a suite once per available backend; says so when PostgreSQL is skipped. */
export function describeEachBackend(title: string, fn: (backend: Backend) => void): void {
  for (const backend of backends) describe(`${title} [${backend}]`, () => fn(backend));
  if (!postgresAdminUrl) {
    describe.skip(`${title} [postgres] (${POSTGRES_SKIP_REASON})`, () => {
      it('runs on PostgreSQL', () => undefined);
    });
  }
}

/**
 * A suite that needs a PostgreSQL server (several processes on one database). Without
 * BATON_TEST_DATABASE_URL it is one skipped test whose title says so (the suite's body is not run:
 * it may make directories or start servers); `needs` are what it needs besides (describeWith).
 */
export function describePostgres(title: string, fn: () => void, needs: Requirement[] = []): void {
  if (postgresAdminUrl) {
    describeWith(needs, title, fn);
    return;
  }
  describe.skip(`${title} (${POSTGRES_SKIP_REASON})`, () => {
    it('runs on PostgreSQL', () => undefined);
  });
}
