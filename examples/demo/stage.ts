import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The demo's stage: what it prints, the `baton` processes it runs, and the cleanup of every process,
 * temporary directory and service, on success, on failure and on SIGINT/SIGTERM alike.
 */

const BIN = join(__dirname, '..', '..', '..', 'bin', 'baton.js');
const started = Date.now();

/** One line of the story: seconds since the start, who, what. */
export function say(who: string, what: string): void {
  const at = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  process.stdout.write(`${at}s ${`[${who}]`.padEnd(18)} ${what}\n`);
}

type Cleanup = () => void | Promise<void>;

/**
 * What to undo, in three phases run one after the other: services (they hold connections to the
 * processes), then processes (stopped together: each may take a moment to shut down), then files.
 */
const PHASES = ['services', 'processes', 'files'] as const;
const cleanups = new Map<(typeof PHASES)[number], Cleanup[]>(PHASES.map((p) => [p, []]));

export function onCleanup(fn: Cleanup, phase: (typeof PHASES)[number] = 'services'): void {
  cleanups.get(phase)!.push(fn);
}

let cleaning: Promise<void> | undefined;

/** Set once cleanup starts: what stopping processes print then is not part of the story. */
export const isCleaningUp = (): boolean => cleaning !== undefined;

/** Undoes everything registered; safe to call more than once. One failure does not stop the rest. */
export function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const phase of PHASES) {
      await Promise.allSettled(cleanups.get(phase)!.map(async (fn) => fn()));
    }
  })();
  return cleaning;
}

let root: string | undefined;

/** The one temporary directory of the run, removed at cleanup; created on first use. */
export function workDir(): string {
  if (!root) {
    const dir = mkdtempSync(join(tmpdir(), 'baton-demo-'));
    root = dir;
    onCleanup(() => rmSync(dir, { recursive: true, force: true }), 'files');
  }
  return root;
}

/** A directory `name` under workDir(). */
export function tempDir(name: string): string {
  const dir = join(workDir(), name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A clean environment for `baton`: none of the caller's BATON_* settings leak in. */
function env(extra: Record<string, string>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BATON_')) out[k] = v;
  return { ...out, BATON_LOG_LEVEL: 'warn', ...extra };
}

export interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs `baton …` to completion. */
export function baton(args: string[], extraEnv: Record<string, string> = {}): Promise<Result> {
  const child = spawn(process.execPath, [BIN, ...args], { env: env(extraEnv) });
  onCleanup(() => void child.kill('SIGKILL'), 'processes');
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) =>
    child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr })),
  );
}

/** Like baton(), and fails with its stderr unless it exits 0. */
export async function batonOk(args: string[], extraEnv: Record<string, string> = {}): Promise<string> {
  const r = await baton(args, extraEnv);
  if (r.status !== 0)
    throw new Error(`baton ${args.slice(0, 2).join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

export interface Daemon {
  child: ChildProcess;
  /** The exit code, once it has exited. */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/**
 * A long-running `baton …` (the server, an agent). Each line it prints goes through `onLine`;
 * cleanup sends SIGTERM and, if it is still there after 3 s, SIGKILL.
 */
export function batonDaemon(
  args: string[],
  extraEnv: Record<string, string>,
  onLine: (line: string, stream: 'stdout' | 'stderr') => void,
): Daemon {
  const child = spawn(process.execPath, [BIN, ...args], { env: env(extraEnv) });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (const stream of ['stdout', 'stderr'] as const) {
    let buf = '';
    child[stream].on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        if (!isCleaningUp()) onLine(buf.slice(0, i), stream);
        buf = buf.slice(i + 1);
      }
    });
  }
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  };
  onCleanup(stop, 'processes');
  return { child, exited, stop };
}

/** Resolves once `done()` holds; rejects after `ms` with `what` in the message. */
export async function waitUntil(what: string, done: () => boolean, ms: number): Promise<void> {
  for (const end = Date.now() + ms; !done(); ) {
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The checks of the story: each prints ✓ or ✗ as it is decided, and the run fails on any ✗. */
export class Checks {
  readonly failed: string[] = [];
  passed = 0;

  ok(what: string): void {
    this.passed++;
    say('check', `✓ ${what}`);
  }

  fail(what: string, why: string): void {
    this.failed.push(what);
    say('check', `✗ ${what}: ${why}`);
  }

  /** Waits for `done` and records the outcome. */
  async within(what: string, done: () => boolean, ms: number): Promise<boolean> {
    try {
      await waitUntil(what, done, ms);
      this.ok(what);
      return true;
    } catch (e) {
      this.fail(what, (e as Error).message);
      return false;
    }
  }

  that(what: string, condition: boolean, why = 'it did not happen'): boolean {
    if (condition) this.ok(what);
    else this.fail(what, why);
    return condition;
  }
}
