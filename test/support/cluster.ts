import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { baton, type ServerProcess, startServerProcess } from './cli';
import { createPostgresDatabase } from './database';
import { callAs, type HttpsResult } from './https';
import { tempDir } from './tools';

/**
 * Several `baton server` processes on one PostgreSQL database, for the replica and fault suites:
 * rate limits off (these are load tests, not abuse tests), background jobs every second (keyring
 * reloads and CRL refreshes show up quickly), and a direct database connection for the checks.
 */
export interface Cluster {
  env: Record<string, string>;
  dataDir: string;
  adminDir: string;
  /** The trust bundle (roots) PEM. */
  bundle: string;
  admin: { cert: string; key: string };
  /** Running replicas by index; undefined once stopped or killed. */
  servers: (ServerProcess | undefined)[];
  /** URLs of the running replicas. */
  urls(): string[];
  /** Every URL a replica ever had → r0, r1, r1' (restarted) … for the figures. */
  names: Map<string, string>;
  /** Starts (or restarts) replica `i` on a new port. */
  startReplica(i: number): Promise<ServerProcess>;
  /** kill -9 (or another signal) of replica `i`, waiting for the exit. */
  killReplica(i: number, signal?: NodeJS.Signals): Promise<void>;
  /** Direct access to the database, for the checks after a run. */
  knex: Knex;
  adminCall(url: string, method: string, path: string, body?: unknown): Promise<HttpsResult>;
  close(): Promise<void>;
}

/**
 * Server environment for load tests: rate limits and load shedding off (BATON_RATE_LIMITS and
 * BATON_MAX_IN_FLIGHT, services/ca/src/config.ts), background jobs every second.
 */
export const LOAD_TEST_ENV = {
  BATON_BACKGROUND_INTERVAL: '1s',
  BATON_RATE_LIMITS: 'off',
  BATON_MAX_IN_FLIGHT: 'off',
  BATON_LOG_LEVEL: 'error',
} as const;

export async function startCluster(p: {
  replicas: number;
  trustDomain: string;
  /** A private database URL; default: a fresh database on BATON_TEST_DATABASE_URL. */
  databaseUrl?: string;
  serverEnv?: Record<string, string>;
  initArgs?: string[];
}): Promise<Cluster> {
  const dir = tempDir('baton-cluster-');
  const dataDir = join(dir.path, 'data');
  const adminDir = join(dataDir, 'admin');
  let drop: () => Promise<void> = async () => undefined;
  let url = p.databaseUrl;
  if (!url) {
    const pg = await createPostgresDatabase();
    url = pg.url;
    drop = pg.drop;
  }
  const env: Record<string, string> = {
    BATON_DATABASE_URL: url,
    BATON_KEK: randomBytes(32).toString('base64'),
    BATON_DATA_DIR: dataDir,
    ...LOAD_TEST_ENV,
    ...p.serverEnv,
  };
  const knex = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 4 } });
  const servers: (ServerProcess | undefined)[] = [];
  const teardown = async () => {
    await Promise.all(servers.map((s) => s?.stop()));
    await knex.destroy();
    await drop();
    dir.cleanup();
  };
  let bundle: string;
  let admin: { cert: string; key: string };
  try {
    const init = baton(['ca', 'init', '--trust-domain', p.trustDomain, ...(p.initArgs ?? [])], env);
    if (init.status !== 0) throw new Error(`ca init failed: ${init.stderr}`);
    bundle = readFileSync(join(adminDir, 'bundle.pem'), 'utf8');
    admin = {
      cert: readFileSync(join(adminDir, 'cert.pem'), 'utf8'),
      key: readFileSync(join(adminDir, 'key.pem'), 'utf8'),
    };
  } catch (e) {
    await teardown();
    throw e;
  }
  const names = new Map<string, string>();
  const starts: number[] = [];
  const startReplica = async (i: number) => {
    const s = await startServerProcess([], env);
    servers[i] = s;
    starts[i] = (starts[i] ?? 0) + 1;
    names.set(s.url, `r${i}${"'".repeat(starts[i]! - 1)}`);
    return s;
  };
  try {
    await Promise.all(Array.from({ length: p.replicas }, (_, i) => startReplica(i)));
  } catch (e) {
    await teardown();
    throw e;
  }
  return {
    env,
    dataDir,
    adminDir,
    bundle,
    admin,
    servers,
    names,
    urls: () => servers.filter((s): s is ServerProcess => s !== undefined).map((s) => s.url),
    startReplica,
    killReplica: async (i, signal = 'SIGKILL') => {
      const s = servers[i];
      servers[i] = undefined;
      if (s) await s.stop(signal);
    },
    knex,
    adminCall: (base, method, path, body) => callAs({ url: base, bundle }, admin, method, path, body),
    close: teardown,
  };
}

/** The first error-level log lines of every replica, to explain a failed expectation. */
export function serverErrors(c: Pick<Cluster, 'servers'>, max = 5): string {
  return c.servers
    .flatMap((s, i) =>
      (s?.stderr() ?? '')
        .split('\n')
        .filter((l) => l.includes('"level":50'))
        .slice(0, max)
        .map((l) => `r${i}: ${l.slice(0, 600)}`),
    )
    .join('\n');
}

export async function createToken(
  c: Pick<Cluster, 'adminCall'>,
  url: string,
  p: { uses?: number; nodeName?: string; nodeTtl?: string; ttl?: string } = {},
): Promise<{ token: string; id: string }> {
  const r = await c.adminCall(url, 'POST', '/v1/admin/tokens', {
    role: 'worker',
    uses: p.uses ?? 1,
    ...(p.nodeName ? { node_name: p.nodeName } : {}),
    ...(p.nodeTtl ? { node_ttl: p.nodeTtl } : {}),
    ...(p.ttl ? { ttl: p.ttl } : {}),
  });
  if (r.status !== 201) throw new Error(`token create: ${r.status} ${r.body}`);
  return r.json<{ token: string; id: string }>();
}
