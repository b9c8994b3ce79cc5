import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import type { FromLoad, LoadJob, RunResult, ToLoad } from './load-protocol';

const LOAD_JS = join(__dirname, '..', 'load.js');

/** A forked load generator process (bench/load.ts), driven run by run. */
export class Generator {
  readonly #inbox: FromLoad[] = [];
  #wake: (() => void) | undefined;
  #exited = false;
  #stderr = '';

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: FromLoad) => {
      this.#inbox.push(m);
      this.#wake?.();
    });
    child.stderr?.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString()).slice(-4000);
    });
    child.on('exit', () => {
      this.#exited = true;
      this.#wake?.();
    });
  }

  /** Forks a generator, hands it the job and waits until its untimed setup is done. */
  static async start(job: LoadJob): Promise<Generator> {
    const child = fork(LOAD_JS, [], { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    const g = new Generator(child);
    g.#send({ type: 'job', job });
    const m = await g.#next(600_000);
    if (m.type !== 'ready') throw new Error(`load generator: ${m.type === 'error' ? m.message : m.type}`);
    return g;
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** One timed run. */
  async run(startMono?: number, timeoutMs = 600_000): Promise<RunResult> {
    this.#send({ type: 'go', startMono });
    const m = await this.#next(timeoutMs);
    if (m.type !== 'result') throw new Error(`load generator: ${m.type === 'error' ? m.message : m.type}`);
    return m.result;
  }

  async close(): Promise<void> {
    if (this.#exited) return;
    this.#send({ type: 'done' });
    const deadline = Date.now() + 30_000;
    while (!this.#exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (!this.#exited) this.child.kill('SIGKILL');
  }

  #send(m: ToLoad): void {
    if (!this.#exited) this.child.send(m);
  }

  async #next(timeoutMs: number): Promise<FromLoad> {
    const deadline = Date.now() + timeoutMs;
    while (this.#inbox.length === 0) {
      if (this.#exited) throw new Error(`load generator exited: ${this.#stderr.slice(-1000)}`);
      if (Date.now() > deadline) {
        this.child.kill('SIGKILL');
        throw new Error('load generator timed out');
      }
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 1000);
      });
    }
    return this.#inbox.shift()!;
  }
}
