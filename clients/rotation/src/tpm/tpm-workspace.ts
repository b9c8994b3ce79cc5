import { lstatSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../agent-error';
import { processIds, readOwnFile, unlinkName } from '../safe-fs';

/**
 * The files tpm2-tools reads and writes for one TPM exchange (object contexts, the credential, the
 * activated secret), in a fresh directory of mode 0700 made by mkdtemp(3) under a parent no one
 * else can change: the agent's DIR, or the system's sticky temporary directory for
 * `baton agent tpm-id`. No other user can read the secret there or swap a file for a link (STYLE
 * §18). Removed afterwards by the names the tools were given, then rmdir.
 */
export class TpmWorkspace {
  readonly dir: string;
  readonly #names = new Set<string>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** A new workspace in `parent`, checked to be this process's own directory of mode 0700. */
  static create(parent: string): TpmWorkspace {
    const dir = mkdtempSync(join(parent, '.tpm-'));
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== processIds().uid || (st.mode & 0o077) !== 0) {
      rmdirSync(dir);
      throw new AgentError('ERR_UNSAFE_PATH', `${dir} is not a private directory of the agent`);
    }
    return new TpmWorkspace(dir);
  }

  /** The path of `name` here; the name is remembered for remove(). */
  file(name: string): string {
    this.#names.add(name);
    return join(this.dir, name);
  }

  /** A file a tool wrote here: read without following links, at most `maxBytes`. */
  read(name: string, maxBytes = 64 * 1024): Buffer {
    const data = readOwnFile(this.file(name), { maxBytes });
    if (!data) throw new AgentError('ERR_TPM_FAILED', `the TPM tools wrote no ${name}`);
    return data;
  }

  /** Removes `name` now (the activated secret is not left for the end). */
  drop(name: string): void {
    unlinkName(join(this.dir, name));
  }

  /** Removes every file named here, then the directory. */
  remove(): void {
    for (const name of this.#names) unlinkName(join(this.dir, name));
    try {
      rmdirSync(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw e;
      // A tool wrote a file it was not asked for. The directory is 0700 and ours: no other user can
      // have put a link in it, so the recursive delete cannot be steered outside of it.
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
