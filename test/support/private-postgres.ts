import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A PostgreSQL cluster of the test's own (initdb + pg_ctl from PostgreSQL 15), for faults that must
 * not touch the shared server: stopping and restarting it mid-load. Trust authentication, TCP on
 * 127.0.0.1 only, the unix socket inside the temporary directory. As root, the binaries run as the
 * `postgres` user (initdb refuses root).
 */
export const PG_BIN = '/usr/lib/postgresql/15/bin';

export const hasPrivatePostgres = (): boolean =>
  existsSync(join(PG_BIN, 'initdb')) && existsSync(join(PG_BIN, 'pg_ctl'));

export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  start(): Promise<void>;
  /** `pg_ctl stop`: fast (disconnects clients, clean shutdown) or immediate (a crash). */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  isRunning(): boolean;
  destroy(): void;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const isRoot = () => process.getuid?.() === 0;

function command(tool: string, args: string[]): [string, string[]] {
  return isRoot()
    ? ['runuser', ['-u', 'postgres', '--', join(PG_BIN, tool), ...args]]
    : [join(PG_BIN, tool), args];
}

function pgTool(tool: string, args: string[], timeoutMs = 60_000): { status: number; out: string } {
  const [cmd, argv] = command(tool, args);
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

/** Like pgTool, without blocking the event loop (the test measures request latencies meanwhile). */
function pgToolAsync(
  tool: string,
  args: string[],
  timeoutMs = 60_000,
): Promise<{ status: number; out: string }> {
  const [cmd, argv] = command(tool, args);
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ status: code ?? -1, out }));
  });
}

export async function createPrivatePostgres(): Promise<PrivatePostgres> {
  const base = mkdtempSync(join(tmpdir(), 'baton-pg-'));
  const data = join(base, 'data');
  if (isRoot()) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    chownSync(base, uid, gid);
  }
  const init = pgTool('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  if (init.status !== 0) {
    rmSync(base, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.out}`);
  }
  const port = await freePort();
  const opts = `-p ${port} -k ${base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60`;
  const log = join(base, 'postgres.log');
  let running = false;
  const pg: PrivatePostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    start: async () => {
      const r = await pgToolAsync('pg_ctl', ['-D', data, '-o', opts, '-l', log, '-w', '-t', '30', 'start']);
      if (r.status !== 0) throw new Error(`pg_ctl start failed: ${r.out}`);
      running = true;
    },
    stop: async (mode = 'fast') => {
      const r = await pgToolAsync('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '30', 'stop']);
      if (r.status !== 0) throw new Error(`pg_ctl stop failed: ${r.out}`);
      running = false;
    },
    isRunning: () => running,
    destroy: () => {
      if (running) pgTool('pg_ctl', ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop']);
      running = false;
      rmSync(base, { recursive: true, force: true });
    },
  };
  try {
    await pg.start();
  } catch (e) {
    pg.destroy();
    throw e;
  }
  return pg;
}
