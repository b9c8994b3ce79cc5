import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Linux clock ticks per second for /proc/<pid>/stat (sysconf(_SC_CLK_TCK)). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** A process and its descendants (cluster workers), from /proc/<pid>/task/<tid>/children. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length && out.length < 64; i++) {
    const p = out[i]!;
    try {
      const children = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
      if (children) out.push(...children.split(/\s+/).map(Number));
    } catch {
      // The process ended meanwhile.
    }
  }
  return out;
}

/** utime+stime of one process in milliseconds (fields 14 and 15 of /proc/<pid>/stat). */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** A /proc/<pid>/status field in kB (VmRSS, VmHWM). */
export function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export const treeCpuMs = (pid: number): number => processTree(pid).reduce((s, p) => s + cpuMs(p), 0);

/** stime alone (field 15): the kernel's share, mostly loopback TCP and file writes here. */
export function systemCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]) * 1000) / CLK_TCK;
  } catch {
    return 0;
  }
}

export const treeSystemCpuMs = (pid: number): number =>
  processTree(pid).reduce((s, p) => s + systemCpuMs(p), 0);

/**
 * Watches a server's memory: the sum of VmRSS over the process tree, sampled every 250 ms, and the
 * sum of VmHWM (each process's own peak; their sum bounds the peak of the sum from above).
 */
export class RssWatch {
  peakRssKb = 0;
  readonly #hwm = new Map<number, number>();
  readonly #timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.#timer = setInterval(() => this.sample(), 250);
    this.#timer.unref();
    this.sample();
  }

  sample(): void {
    let rss = 0;
    for (const p of processTree(this.pid)) {
      rss += statusKb(p, 'VmRSS');
      const hwm = statusKb(p, 'VmHWM');
      if (hwm) this.#hwm.set(p, Math.max(this.#hwm.get(p) ?? 0, hwm));
    }
    this.peakRssKb = Math.max(this.peakRssKb, rss);
  }

  /** Sum over every process seen of its own peak. */
  get hwmSumKb(): number {
    let s = 0;
    for (const v of this.#hwm.values()) s += v;
    return s;
  }

  stop(): void {
    this.sample();
    clearInterval(this.#timer);
  }
}

/** A free TCP port on 127.0.0.1 (bind to 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export function commandExists(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && existsSync(`${d}/${cmd}`));
}

/** Resolves with the first stdout line matching `re`, or rejects on exit or after `timeoutMs`. */
export function waitForLine(
  child: ChildProcess,
  re: RegExp,
  timeoutMs: number,
  what: string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const done = (fn: () => void) => {
      clearTimeout(timer);
      child.stdout?.off('data', onOut);
      child.off('exit', onExit);
      fn();
    };
    const onOut = (d: Buffer) => {
      out += d.toString();
      const m = re.exec(out);
      if (m) done(() => resolve(m[1] ?? m[0]));
    };
    const onExit = (code: number | null) =>
      done(() => reject(new Error(`${what} exited (${code}) before it was ready: ${err.slice(-800)}`)));
    child.stdout?.on('data', onOut);
    child.stderr?.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000);
    });
    child.once('exit', onExit);
    const timer = setTimeout(
      () => done(() => reject(new Error(`${what} not ready after ${timeoutMs} ms: ${err.slice(-800)}`))),
      timeoutMs,
    );
  });
}

/** Keeps reading a child's output so that a full pipe never blocks it; keeps the tail for errors. */
export function drain(child: ChildProcess): () => string {
  let tail = '';
  const keep = (d: Buffer) => {
    tail = (tail + d.toString()).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => tail;
}

/** Cleanup that must run even when the benchmark is interrupted (servers, databases). */
const cleanups = new Set<() => Promise<void> | void>();

/** Registers a cleanup; returns a function that unregisters it once it ran normally. */
export function onInterrupt(fn: () => Promise<void> | void): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** On SIGINT/SIGTERM: stop every server this benchmark started, drop its databases, exit 130. */
export function installInterruptHandler(): void {
  let running = false;
  const handler = (signal: NodeJS.Signals) => {
    if (running) return;
    running = true;
    process.stderr.write(`bench: ${signal}: stopping servers and dropping benchmark databases\n`);
    const all = [...cleanups].map((fn) =>
      Promise.resolve()
        .then(fn)
        .catch(() => undefined),
    );
    const timer = setTimeout(() => process.exit(130), 20_000);
    void Promise.all(all).then(() => {
      clearTimeout(timer);
      process.exit(130);
    });
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export function stop(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Runs a command to completion and returns its wall time in ms (it must exit 0). */
export function timedRun(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  return new Promise<{ ms: number; stdout: Buffer }>((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-2000);
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (code === 0) resolve({ ms, stdout: Buffer.concat(out) });
      else reject(new Error(`${cmd} ${args[0]} exited ${code}: ${err}`));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The monotonic clock in ms, comparable across processes on one machine (CLOCK_MONOTONIC). */
export const monoMs = (): number => Number(process.hrtime.bigint()) / 1e6;
