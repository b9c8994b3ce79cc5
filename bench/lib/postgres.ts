import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { onInterrupt } from './proc';

/** The local PostgreSQL the benchmark uses (BATON_BENCH_PG_URL overrides; loopback only). */
export const PG_ADMIN_URL = process.env.BATON_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface BenchDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

async function withClient<T>(url: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** A fresh database for one server under test, dropped afterwards. */
export async function createDatabase(prefix: string): Promise<BenchDatabase> {
  const admin = new URL(PG_ADMIN_URL);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(admin.hostname))
    throw new Error('the benchmark only talks to a PostgreSQL on this machine');
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  await withClient(PG_ADMIN_URL, (c) => c.query(`create database ${name}`));
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const drop = () =>
    withClient(PG_ADMIN_URL, (c) => c.query(`drop database if exists ${name} with (force)`)).then(() => {});
  const forget = onInterrupt(drop);
  return {
    name,
    url: url.toString(),
    drop: async () => {
      await drop();
      forget();
    },
  };
}

export function runSql(url: string, sql: string): Promise<unknown> {
  return withClient(url, (c) => c.query(sql));
}

export async function countRows(url: string, table: string): Promise<number> {
  return withClient(url, async (c) =>
    Number((await c.query(`select count(*) as n from ${table}`)).rows[0].n),
  );
}

export async function postgresVersion(): Promise<string> {
  return withClient(PG_ADMIN_URL, async (c) =>
    String((await c.query('show server_version')).rows[0].server_version),
  );
}

/** Whether PostgreSQL answers at all. */
export async function postgresReachable(): Promise<boolean> {
  try {
    await withClient(PG_ADMIN_URL, (c) => c.query('select 1'));
    return true;
  } catch {
    return false;
  }
}
