import { EventEmitter } from 'node:events';
import { type FSWatcher, watch as fsWatch } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type IdentityError, isIdentityError } from './errors';
import {
  type IdentityPaths,
  type IdentitySnapshot,
  readIdentityFiles,
  sameFiles,
  verifyIdentity,
} from './load';

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Unref'd: watching an identity never keeps the process alive on its own. */
const unrefTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface IdentityOptions {
  /** Judges certificate validity; default the system clock. */
  clock?: { now(): Date };
  /** Use fs.watch on the directories of the files (default true); polling runs either way. */
  fsWatch?: boolean;
  /**
   * Read the files at least this often (default 5000 ms; 0 turns polling off). fs.watch misses
   * changes on some file systems (NFS, some container volume mounts), so the poll is the fallback.
   */
  pollIntervalMs?: number;
  /** After a change event, wait this long before reading, so cert.pem and key.pem both land. Default 50 ms. */
  settleMs?: number;
  /** First retry after a refused reload (default 200 ms); doubles up to the poll interval. */
  retryMs?: number;
  /** Refused reads of changed files before 'error' is emitted (default 3): a rotation in progress is no error. */
  errorAfterAttempts?: number;
  /**
   * How long the first load keeps retrying (default 5000 ms; 0: once). A service that starts while
   * the agent is writing its files would otherwise fail on a half-written pair.
   */
  startTimeoutMs?: number;
  timers?: Timers;
}

type Resolved = Required<IdentityOptions>;

const DEFAULTS: Resolved = {
  clock: { now: () => new Date() },
  fsWatch: true,
  pollIntervalMs: 5000,
  settleMs: 50,
  retryMs: 200,
  errorAfterAttempts: 3,
  startTimeoutMs: 5000,
  timers: unrefTimers,
};

export interface IdentityEvents {
  rotated: [current: IdentitySnapshot, previous: IdentitySnapshot];
  error: [error: IdentityError];
}

/**
 * A service's own X.509-SVID, read from the files the agent keeps fresh, and replaced when they
 * change. Every candidate is verified before it is used (key matches the leaf, the chain leads to
 * the bundle, the leaf is an SVID, valid now); a refused candidate leaves the current identity in
 * place and is read again shortly, because the agent replaces cert.pem and key.pem one after the
 * other and a reader may see one new file and one old.
 *
 * Events: 'rotated' (current, previous) after a swap; 'error' (IdentityError) when changed files
 * are still refused after `errorAfterAttempts` reads. Unlike a plain EventEmitter, an 'error'
 * without a listener is dropped rather than thrown: a bad file from the agent must not take the
 * service down while its current identity still works.
 */
export class Identity extends EventEmitter<IdentityEvents> {
  readonly paths: Readonly<IdentityPaths>;
  #current: IdentitySnapshot;
  readonly #o: Resolved;
  #watchers: FSWatcher[] = [];
  #watching = false;
  #checkTimer: unknown;
  #pollTimer: unknown;
  #failures = 0;
  #reported: string | undefined;

  private constructor(paths: IdentityPaths, first: IdentitySnapshot, o: Resolved) {
    super();
    this.paths = Object.freeze({ ...paths });
    this.#current = first;
    this.#o = o;
  }

  /** An identity from explicit file paths. Rejects with an IdentityError when they stay unusable. */
  static async fromFiles(paths: IdentityPaths, opts: IdentityOptions = {}): Promise<Identity> {
    const o: Resolved = { ...DEFAULTS, ...opts };
    const attempts = Math.max(1, Math.ceil(o.startTimeoutMs / o.retryMs) + 1);
    for (let i = 1; ; i++) {
      try {
        return new Identity(paths, verifyIdentity(readIdentityFiles(paths), o.clock.now()), o);
      } catch (e) {
        if (i >= attempts || !isIdentityError(e)) throw e;
        // A ref'd timer, unlike the watch timers: a service awaiting its first identity has
        // nothing else keeping it alive yet.
        await sleep(o.retryMs);
      }
    }
  }

  /** DIR/{cert.pem,key.pem,bundle.pem}: a workload directory of the agent, or any such directory. */
  static fromDirectory(dir: string, opts?: IdentityOptions): Promise<Identity> {
    return Identity.fromFiles(
      { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), bundle: join(dir, 'bundle.pem') },
      opts,
    );
  }

  /** The node identity the agent keeps in AGENT_DIR/node/{cert.pem,key.pem} with AGENT_DIR/bundle.pem. */
  static fromAgentNode(agentDir: string, opts?: IdentityOptions): Promise<Identity> {
    return Identity.fromFiles(
      {
        cert: join(agentDir, 'node', 'cert.pem'),
        key: join(agentDir, 'node', 'key.pem'),
        bundle: join(agentDir, 'bundle.pem'),
      },
      opts,
    );
  }

  /** The workload identity of entry `name`: AGENT_DIR/workloads/<name>/. */
  static fromAgentWorkload(agentDir: string, name: string, opts?: IdentityOptions): Promise<Identity> {
    return Identity.fromDirectory(join(agentDir, 'workloads', name), opts);
  }

  /** The identity in use now. Read it at the moment of use: a rotation replaces it. */
  current(): IdentitySnapshot {
    return this.#current;
  }

  /**
   * Reads the files now and swaps them in if they changed and verify. Returns true when it
   * rotated, false when nothing changed; throws an IdentityError when the new files are refused
   * (the current identity stays).
   */
  reload(): boolean {
    const files = readIdentityFiles(this.paths);
    if (sameFiles(this.#current, files)) return false;
    const next = verifyIdentity(files, this.#o.clock.now());
    const previous = this.#current;
    this.#current = next;
    this.emit('rotated', next, previous);
    return true;
  }

  /** Starts noticing rotations: fs.watch on the files' directories plus the poll. Idempotent. */
  watch(): this {
    if (this.#watching) return this;
    this.#watching = true;
    if (this.#o.fsWatch) this.#startFsWatch();
    this.#schedulePoll();
    // The files may have changed between the load and now: look once right away.
    this.#scheduleCheck(0, false);
    return this;
  }

  /** Stops watching. The current identity stays readable. */
  close(): void {
    this.#watching = false;
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
    this.#o.timers.clearTimeout(this.#checkTimer);
    this.#o.timers.clearTimeout(this.#pollTimer);
    this.#checkTimer = undefined;
    this.#pollTimer = undefined;
  }

  #startFsWatch(): void {
    const names = new Map<string, Set<string>>();
    const add = (dir: string, name: string) => names.set(dir, (names.get(dir) ?? new Set()).add(name));
    for (const p of [this.paths.cert, this.paths.key, this.paths.bundle]) {
      add(dirname(p), basename(p));
      // The agent swaps DIR/node and DIR/workloads/<name> as symlinks to generation directories:
      // a watch on the directory follows the link to the old generation, which never changes, so
      // the rename of the link is watched in the parent.
      add(dirname(dirname(p)), basename(dirname(p)));
    }
    for (const [dir, files] of names) {
      try {
        const w = fsWatch(dir, { persistent: false }, (_event, filename) => {
          // A rename onto cert.pem reports 'cert.pem'; the temporary file's events are noise.
          if (filename && !files.has(filename.toString())) return;
          this.#scheduleCheck(this.#o.settleMs, true);
        });
        // A vanished directory or an exhausted inotify budget: the poll still covers it.
        w.on('error', () => w.close());
        this.#watchers.push(w);
      } catch {
        // fs.watch is unavailable here (ENOENT, ENOSPC on inotify watches): poll only.
      }
    }
  }

  #schedulePoll(): void {
    if (!this.#watching || this.#o.pollIntervalMs <= 0) return;
    this.#pollTimer = this.#o.timers.setTimeout(() => {
      this.#check();
      this.#schedulePoll();
    }, this.#o.pollIntervalMs);
  }

  /** One pending check at a time; a change event restarts the settle delay (a debounce). */
  #scheduleCheck(ms: number, restart: boolean): void {
    if (!this.#watching) return;
    if (this.#checkTimer !== undefined) {
      if (!restart) return;
      this.#o.timers.clearTimeout(this.#checkTimer);
    }
    this.#checkTimer = this.#o.timers.setTimeout(() => {
      this.#checkTimer = undefined;
      this.#check();
    }, ms);
  }

  #check(): void {
    if (!this.#watching) return;
    try {
      this.reload();
      this.#failures = 0;
      this.#reported = undefined;
    } catch (err) {
      // Anything else was thrown by a 'rotated' listener, after the swap: not a refusal.
      if (!isIdentityError(err)) throw err;
      this.#failures++;
      if (this.#failures >= this.#o.errorAfterAttempts) this.#report(err);
      const cap = this.#o.pollIntervalMs > 0 ? this.#o.pollIntervalMs : 5000;
      this.#scheduleCheck(Math.min(this.#o.retryMs * 2 ** (this.#failures - 1), cap), false);
    }
  }

  /** Each distinct refusal is reported once, not on every retry. */
  #report(err: IdentityError): void {
    const key = `${err.code}:${err.message}`;
    if (key === this.#reported) return;
    this.#reported = key;
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}
