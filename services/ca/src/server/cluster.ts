import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { type ListenAddress, urlForListen } from '../config';
import { BatonError } from '../ground/errors';
import { F } from '../log-fields';

/**
 * Multi-core serving with node:cluster: N worker processes share the listening socket (the primary
 * accepts and hands connections out round-robin) and each has its own database pool, keyring and
 * background jobs, exactly like N replicas of one server. Nothing correctness-related lives in a
 * process: token use, serials, revocation and the audit chain are enforced by PostgreSQL, and the
 * revocation feed already polls the shared table for revocations made by other replicas. The
 * embedded PGlite is a single-process database, so it runs one process only.
 *
 * Known limits (per process, as with replicas): rate limits and in-flight shedding count per
 * worker, and /metrics shows the worker that answered.
 */

/** --workers: a count (1 = no cluster, the default) or `auto` (one per available CPU). */
export const MAX_WORKERS = 64;

export function parseWorkers(value: unknown, opts: { databaseUrl?: string }): number {
  if (value === undefined) return 1;
  const text = String(value).trim().toLowerCase();
  const n = text === 'auto' ? availableParallelism() : /^\d{1,3}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 1 && n <= MAX_WORKERS))
    throw new BatonError('ERR_CONFIG_INVALID', `--workers: a number from 1 to ${MAX_WORKERS}, or auto`);
  if (n > 1 && !opts.databaseUrl)
    throw new BatonError(
      'ERR_CONFIG_INVALID',
      '--workers: several processes need PostgreSQL (--database-url); the embedded PGlite serves one process',
    );
  return n;
}

/** True in a process forked by runClusterPrimary: it serves, the primary speaks for it. */
export const isClusterWorker = (): boolean => cluster.isWorker;

/** A worker that keeps dying is a configuration or database problem: stop rather than spin. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;
const STOP_GRACE_MS = 15_000;
const START_TIMEOUT_MS = 60_000;

export interface ClusterParams {
  workers: number;
  listen: ListenAddress;
  log: Logger;
  /** Written once every worker listens: `listening on https://HOST:PORT` and the caller's lines. */
  stdout: NodeJS.WritableStream;
  banner: string[];
  stopSignal: Promise<string>;
}

/**
 * The primary: forks the workers one after another (each runs the same `baton server` command and
 * applies pending migrations; one at a time, because knex refuses a second concurrent migrator
 * rather than waiting for it), prints the address once they all listen, restarts a worker that
 * dies, and on SIGTERM/SIGINT stops them all and returns 0.
 */
export async function runClusterPrimary(p: ClusterParams): Promise<number> {
  let stopping = false;
  const restarts: number[] = [];
  let failed: Error | undefined;
  let wakeFailure: (() => void) | undefined;

  const fork = (): Promise<{ worker: Worker; port: number }> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork();
      const timer = setTimeout(() => {
        worker.process.kill('SIGKILL');
        reject(new BatonError('ERR_INTERNAL', 'a server worker did not start listening in time'));
      }, START_TIMEOUT_MS);
      worker.once('listening', (address) => {
        clearTimeout(timer);
        worker.off('exit', early);
        resolve({ worker, port: address.port });
      });
      const early = (code: number | null) => {
        clearTimeout(timer);
        reject(new BatonError('ERR_INTERNAL', `a server worker exited (${code}) before it listened`));
      };
      worker.once('exit', early);
    });

  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    p.log.error({ pid: worker.process.pid, code, signal }, 'Server worker exited: restarting it');
    const now = Date.now();
    restarts.push(now);
    while (restarts.length && restarts[0]! < now - RESTART_WINDOW_MS) restarts.shift();
    if (restarts.length > MAX_RESTARTS) {
      failed = new BatonError('ERR_INTERNAL', `server workers keep exiting (${restarts.length} in a minute)`);
      wakeFailure?.();
      return;
    }
    fork().catch((e: Error) => {
      failed = e;
      wakeFailure?.();
    });
  });

  const stopAll = async () => {
    stopping = true;
    const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());
    await Promise.all(
      alive.map(
        (w) =>
          new Promise<void>((resolve) => {
            const kill = setTimeout(() => w.process.kill('SIGKILL'), STOP_GRACE_MS);
            w.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            // The worker's own SIGTERM handling closes its server and pool (a clean replica stop).
            w.process.kill('SIGTERM');
          }),
      ),
    );
  };

  let port = p.listen.port;
  try {
    for (let i = 0; i < p.workers; i++) port = (await fork()).port;
  } catch (e) {
    await stopAll();
    throw e;
  }
  const url = urlForListen({ host: p.listen.host, port });
  p.log.info({ [F.url]: url, workers: p.workers }, 'Server workers listening');
  p.stdout.write(`listening on ${url}\n`);
  for (const line of p.banner) p.stdout.write(`${line}\n`);

  const failure = new Promise<'failed'>((resolve) => {
    wakeFailure = () => resolve('failed');
  });
  const outcome = await Promise.race([p.stopSignal, failure]);
  if (outcome !== 'failed') p.log.info({ signal: outcome }, 'Shutting down');
  await stopAll();
  if (failed) throw failed;
  return 0;
}
