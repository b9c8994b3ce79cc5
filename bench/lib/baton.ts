import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { json, send, type TlsTarget } from './http';
import { drain, onInterrupt, stop, waitForLine } from './proc';

const BIN = join(__dirname, '..', '..', '..', 'bin', 'baton.js');
export const TRUST_DOMAIN = 'bench.test';

export interface BatonOptions {
  /** A postgres:// URL; unset: the embedded PGlite in the data dir. */
  databaseUrl?: string;
  /** --workers for `baton server` (1: a single process). */
  workers: number;
  logLevel: string;
  /** Extra environment for the server (e.g. to turn rate limits off). */
  env?: Record<string, string>;
  /** Extra `baton server` flags. */
  flags?: string[];
  /** Extra node flags for the server process (e.g. --cpu-prof); cluster workers inherit them. */
  nodeArgs?: string[];
}

export interface BatonServer {
  url: string;
  pid: number;
  dataDir: string;
  /** Trust for clients: the root bundle. */
  bundle: string;
  admin: TlsTarget;
  /** The server's output tail, for errors. */
  output(): string;
  stop(): Promise<void>;
}

/** A clean environment: nothing of the caller's BATON_* leaks into the server under test. */
function serverEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BATON_')) env[k] = v;
  return { ...env, ...extra };
}

/** `baton ca init` in a fresh data dir, then `baton server --listen 127.0.0.1:0`. */
export async function startBaton(o: BatonOptions): Promise<BatonServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'baton-bench-'));
  const env = serverEnv({
    BATON_DATA_DIR: dataDir,
    BATON_LOG_LEVEL: o.logLevel,
    ...(o.databaseUrl
      ? { BATON_DATABASE_URL: o.databaseUrl, BATON_KEK: randomBytes(32).toString('base64') }
      : {}),
    ...o.env,
  });
  const init = spawnSync(process.execPath, [BIN, 'ca', 'init', '--trust-domain', TRUST_DOMAIN], {
    env,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (init.status !== 0) throw new Error(`baton ca init failed: ${init.stderr || init.stdout}`);
  const args = [...(o.nodeArgs ?? []), BIN, 'server', '--listen', '127.0.0.1:0', ...(o.flags ?? [])];
  if (o.workers > 1) args.push('--workers', String(o.workers));
  // The JSON logs (stderr) go to a file, as a service manager would keep them: a pipe that the
  // benchmark reads would make the server's synchronous log writes wait on the benchmark.
  const logFile = join(dataDir, 'server.log');
  const logFd = openSync(logFile, 'a');
  const child: ChildProcess = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', logFd] });
  closeSync(logFd);
  const forget = onInterrupt(async () => {
    await stop(child, 5000);
    rmSync(dataDir, { recursive: true, force: true });
  });
  const logTail = () => {
    try {
      return readFileSync(logFile, 'utf8').slice(-2000);
    } catch {
      return '';
    }
  };
  let url: string;
  try {
    url = await waitForLine(child, /listening on (https:\/\/\S+)/, 60_000, 'baton server');
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${(e as Error).message} ${logTail()}`);
  }
  const stdoutTail = drain(child);
  const output = () => `${stdoutTail()}${logTail()}`;
  const adminDir = join(dataDir, 'admin');
  const bundle = readFileSync(join(adminDir, 'bundle.pem'), 'utf8');
  return {
    url,
    pid: child.pid!,
    dataDir,
    bundle,
    admin: {
      url,
      ca: bundle,
      cert: readFileSync(join(adminDir, 'cert.pem'), 'utf8'),
      key: readFileSync(join(adminDir, 'key.pem'), 'utf8'),
    },
    output,
    stop: async () => {
      await stop(child, 15_000);
      rmSync(dataDir, { recursive: true, force: true });
      forget();
    },
  };
}

const adminCall = async <T>(s: BatonServer, method: string, path: string, body?: unknown): Promise<T> =>
  json<T>(
    await send(s.admin, {
      method,
      path,
      body: body === undefined ? undefined : JSON.stringify(body),
      agent: false,
    }),
    `${method} ${path}`,
  );

/** A worker join token good for `uses` attestations (the API allows at most 10,000 per token). */
export async function createToken(s: BatonServer, uses: number): Promise<string> {
  const r = await adminCall<{ token: string }>(s, 'POST', '/v1/admin/tokens', {
    role: 'worker',
    ttl: '2h',
    uses,
  });
  return r.token;
}

/** A registration entry parented to `nodeId`; returns its SPIFFE ID. */
export async function createEntry(s: BatonServer, name: string, nodeId: string): Promise<string> {
  const spiffeId = `spiffe://${TRUST_DOMAIN}/bench/${name}`;
  await adminCall(s, 'POST', '/v1/admin/entries', {
    name,
    spiffe_id: spiffeId,
    parent: nodeId,
    selectors: ['unix:uid:1000'],
    dns_names: [`${name}.${TRUST_DOMAIN}`],
  });
  return spiffeId;
}
