import { spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import knexFactory, { type Knex } from 'knex';
import { baton, type ServerProcess, startServerProcess } from './cli';
import { createPostgresDatabase } from './database';
import { type HttpsOptions, type HttpsResult, https } from './https';
import { type IssuanceBody, type KeyAndCsr, keyAndCsr } from './node-client';
import { tempDir, writeFiles } from './tools';

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

/** Server environment for load tests: see docs/configuration.md of the rate-limit settings. */
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
  const init = baton(['ca', 'init', '--trust-domain', p.trustDomain, ...(p.initArgs ?? [])], env);
  if (init.status !== 0) throw new Error(`ca init failed: ${init.stderr}`);
  const bundle = readFileSync(join(adminDir, 'bundle.pem'), 'utf8');
  const admin = {
    cert: readFileSync(join(adminDir, 'cert.pem'), 'utf8'),
    key: readFileSync(join(adminDir, 'key.pem'), 'utf8'),
  };
  const knex = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 4 } });
  const servers: (ServerProcess | undefined)[] = [];
  const names = new Map<string, string>();
  const starts: number[] = [];
  const startReplica = async (i: number) => {
    const s = await startServerProcess([], env);
    servers[i] = s;
    starts[i] = (starts[i] ?? 0) + 1;
    names.set(s.url, `r${i}${"'".repeat(starts[i]! - 1)}`);
    return s;
  };
  await Promise.all(Array.from({ length: p.replicas }, (_, i) => startReplica(i)));
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
    adminCall: (base, method, path, body) =>
      https(`${base}${path}`, {
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
        ca: bundle,
        ...admin,
      }),
    close: async () => {
      await Promise.all(servers.map((s) => s?.stop()));
      await knex.destroy();
      await drop();
      dir.cleanup();
    },
  };
}

export const certsOf = (chain: string): string[] =>
  chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];

/** The leaf's serial as Baton records it (lowercase hex, whole bytes). */
export function serialOf(pem: string): string {
  const s = new X509Certificate(pem).serialNumber.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
}

export const errorCode = (r: HttpsResult): string | undefined => {
  try {
    return r.json<{ error?: { code?: string } }>().error?.code;
  } catch {
    return undefined;
  }
};

/** A node's credential as its agent would hold it. */
export interface NodeCred {
  nodeId: string;
  cert: string;
  key: string;
  serial: string;
}

/** Something a client received: checked against the certificates table afterwards. */
export interface Received {
  serial: string;
  /** The leaf, DER. */
  der: Buffer;
  kind: 'node' | 'workload';
  replica: string;
}

/**
 * A load generator's bookkeeping: requests per replica and per status, and every certificate a
 * client was handed.
 */
export class Ledger {
  readonly perReplica = new Map<string, number>();
  readonly perStatus = new Map<string, number>();
  readonly received: Received[] = [];
  requests = 0;

  async call(url: string, path: string, opts: HttpsOptions): Promise<HttpsResult> {
    this.requests++;
    this.perReplica.set(url, (this.perReplica.get(url) ?? 0) + 1);
    try {
      const r = await https(`${url}${path}`, opts);
      const key = `${r.status}${r.status >= 400 ? ` ${errorCode(r) ?? ''}` : ''}`.trim();
      this.perStatus.set(key, (this.perStatus.get(key) ?? 0) + 1);
      return r;
    } catch (e) {
      const key = `net ${(e as NodeJS.ErrnoException).code ?? 'error'}`;
      this.perStatus.set(key, (this.perStatus.get(key) ?? 0) + 1);
      throw e;
    }
  }

  /** Records the certificate of a 201 issuance response and returns the body. */
  record(r: HttpsResult, kind: Received['kind'], replica: string): IssuanceBody {
    const body = r.json<IssuanceBody>();
    const leaf = certsOf(body.certificate_chain)[0]!;
    const der = new X509Certificate(leaf).raw;
    if (serialOf(leaf) !== body.serial) throw new Error(`serial mismatch: ${body.serial}`);
    this.received.push({ serial: body.serial, der, kind, replica });
    return body;
  }

  summary(names: Map<string, string>): string {
    const replicas = [...this.perReplica].map(([u, n]) => `${names.get(u) ?? u}=${n}`).join(' ');
    const statuses = [...this.perStatus]
      .sort()
      .map(([s, n]) => `${s}: ${n}`)
      .join(', ');
    return `${this.requests} requests (${replicas}); ${statuses}`;
  }
}

/** Node-side calls of the API with a node credential. */
export const asNode = (
  cred: { cert: string; key: string },
  bundle: string,
  body?: unknown,
): HttpsOptions => ({
  method: body === undefined ? 'GET' : 'POST',
  body: body === undefined ? undefined : JSON.stringify(body),
  ca: bundle,
  cert: cred.cert,
  key: cred.key,
});

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

/** One attestation with a fresh key; the credential when it succeeded. */
export async function attestOnce(
  ledger: Ledger,
  url: string,
  bundle: string,
  token: string,
  key?: KeyAndCsr,
): Promise<{ r: HttpsResult; cred?: NodeCred }> {
  const k = key ?? (await keyAndCsr());
  const r = await ledger.call(url, '/v1/attest', {
    method: 'POST',
    body: JSON.stringify({ method: 'join_token', token, csr: k.csrPem }),
    ca: bundle,
  });
  if (r.status !== 201) return { r };
  const body = ledger.record(r, 'node', url);
  return {
    r,
    cred: { nodeId: body.node_id!, cert: body.certificate_chain, key: k.keyPem, serial: body.serial },
  };
}

export async function renewOnce(
  ledger: Ledger,
  url: string,
  bundle: string,
  cred: NodeCred,
  key?: KeyAndCsr,
): Promise<{ r: HttpsResult; cred?: NodeCred }> {
  const k = key ?? (await keyAndCsr());
  const r = await ledger.call(url, '/v1/renew', asNode(cred, bundle, { csr: k.csrPem }));
  if (r.status !== 201) return { r };
  const body = ledger.record(r, 'node', url);
  return {
    r,
    cred: { nodeId: cred.nodeId, cert: body.certificate_chain, key: k.keyPem, serial: body.serial },
  };
}

export async function mintOnce(
  ledger: Ledger,
  url: string,
  bundle: string,
  cred: NodeCred,
  spiffeId: string,
  key?: KeyAndCsr,
): Promise<{ r: HttpsResult; serial?: string }> {
  const k = key ?? (await keyAndCsr());
  const r = await ledger.call(
    url,
    '/v1/workload-svids',
    asNode(cred, bundle, { spiffe_id: spiffeId, csr: k.csrPem }),
  );
  if (r.status !== 201) return { r };
  return { r, serial: ledger.record(r, 'workload', url).serial };
}

/** `openssl ocsp -url URL/v1/ocsp` for a leaf: good, revoked or unknown (or the raw output). */
export async function ocspStatus(
  url: string,
  chainPem: string,
  bundle: string,
  dir: string,
): Promise<string> {
  const [leaf, inter] = certsOf(chainPem);
  const tag = randomBytes(4).toString('hex');
  const f = writeFiles(dir, {
    [`leaf-${tag}.pem`]: leaf!,
    [`inter-${tag}.pem`]: inter!,
    [`trust-${tag}.pem`]: bundle + inter!,
  });
  const r = await runTool('openssl', [
    'ocsp',
    '-issuer',
    f[`inter-${tag}.pem`]!,
    '-cert',
    f[`leaf-${tag}.pem`]!,
    '-url',
    `${url}/v1/ocsp`,
    '-CAfile',
    f[`trust-${tag}.pem`]!,
    '-timeout',
    '10',
  ]);
  if (!/Response verify OK/.test(r.out)) return r.out;
  return /: (good|revoked|unknown)/.exec(r.out)?.[1] ?? r.out;
}

/** The serials a DER CRL lists, and its CRL Number (openssl crl -text). */
export async function crlContents(der: Buffer, dir: string): Promise<{ serials: string[]; number: bigint }> {
  const path = join(dir, `crl-${randomBytes(4).toString('hex')}.der`);
  writeFileSync(path, der);
  const r = await runTool('openssl', ['crl', '-inform', 'DER', '-noout', '-text', '-in', path]);
  const serials = [...r.out.matchAll(/Serial Number: ([0-9A-Fa-f]+)/g)].map((m) => {
    const s = m[1]!.toLowerCase();
    return s.length % 2 ? `0${s}` : s;
  });
  const num = /X509v3 CRL Number: *\n\s*(\d+)/.exec(r.out)?.[1];
  if (num === undefined) throw new Error(`no CRL number in: ${r.out}`);
  return { serials, number: BigInt(num) };
}

/** Runs `tasks` with at most `limit` at once. */
export async function pool<T>(limit: number, tasks: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++;
        out[i] = await tasks[i]!();
      }
    }),
  );
  return out;
}

/** Runs a tool without stdin (openssl may exit before reading it) and collects its output. */
export function runTool(
  cmd: string,
  args: string[],
  timeoutMs = 20_000,
): Promise<{ status: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ status: code ?? -1, out }));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface FailoverResult<T> {
  /** The last answer, when some replica answered (a 503 only if every try got one). */
  last?: T;
  /** Tries that ended in a network error or a 503 and moved to another replica. */
  failovers: number;
  /** A network error hit a request that may have been processed: its response was lost. */
  ambiguous: boolean;
}

/**
 * What a client with several CA addresses does: try one replica, and on a network error or a 503
 * try the next, a bounded number of times within a deadline.
 */
export async function withFailover<T extends { r: HttpsResult }>(
  urls: () => string[],
  start: number,
  attempt: (url: string) => Promise<T>,
  opts: { tries?: number; deadlineMs?: number } = {},
): Promise<FailoverResult<T>> {
  const tries = opts.tries ?? 6;
  const deadline = performance.now() + (opts.deadlineMs ?? 15_000);
  let failovers = 0;
  let ambiguous = false;
  let last: T | undefined;
  for (let k = 0; k < tries && performance.now() < deadline; k++) {
    const list = urls();
    if (list.length === 0) break;
    const url = list[(start + k) % list.length]!;
    try {
      last = await attempt(url);
      if (last.r.status !== 503) return { last, failovers, ambiguous };
    } catch (e) {
      // ECONNREFUSED never reached a server; any other network error may have been processed.
      if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED') ambiguous = true;
    }
    failovers++;
    await sleep(20 * (k + 1));
  }
  return { last, failovers, ambiguous };
}
