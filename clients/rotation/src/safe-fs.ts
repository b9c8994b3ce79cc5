import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  realpathSync,
  renameSync,
  rmdirSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { AgentError } from './agent-error';

/**
 * File operations for a root agent that shares a machine with less privileged workloads (STYLE
 * §18; OpenSSH safe_path(), systemd chase()). The agent's directory and everything it reads are its
 * own: assertPrivateDirectory() checks that no other user can add, remove or rename a name on the
 * way to it. Even so, nothing here trusts a path to name what it named a moment ago:
 *
 * - reads open with O_NOFOLLOW | O_NONBLOCK and check with fstat that the file is regular, owned
 *   by whom it should be and not larger than the caller allows, then read at most that much: a
 *   planted symlink, FIFO, directory or huge file is refused at once instead of followed,
 *   waited on or read into memory;
 * - new files open with O_CREAT | O_EXCL | O_NOFOLLOW, and their owner and mode are set through
 *   the descriptor (fchown, fchmod), never by path;
 * - directories are removed by unlinking the names the agent wrote, then rmdir: never a recursive
 *   delete, which reads a directory and then deletes by path, so that whoever can write it can
 *   swap a subdirectory for a symlink in between and have the rest deleted wherever they like.
 */

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_DIRECTORY } = constants;

/** The effective ids of this process (the owner of what the agent writes for itself). */
export function processIds(): { uid: number; gid: number } {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}

export class UnsafePathError extends AgentError {
  constructor(message: string) {
    super('ERR_UNSAFE_PATH', message);
  }
}

export interface ReadLimits {
  /** Larger files are refused, unread. */
  maxBytes: number;
  /** The uid that must own the file; default: this process's effective uid. */
  ownerUid?: number;
}

/**
 * The content of a regular file, or undefined when there is no file at `path`. Refuses (throws
 * UnsafePathError) a symlink, anything that is not a regular file, a file of another owner and
 * one over `maxBytes`. Never blocks: a FIFO opens at once under O_NONBLOCK and is then refused.
 */
export function readOwnFile(path: string, limits: ReadLimits): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'ELOOP') throw new UnsafePathError(`${path} is a symbolic link: not read`);
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UnsafePathError(`${path} is not a regular file: not read`);
    const owner = limits.ownerUid ?? processIds().uid;
    if (st.uid !== owner)
      throw new UnsafePathError(`${path} is owned by uid ${st.uid}, not ${owner}: not read`);
    if (st.size > limits.maxBytes)
      throw new UnsafePathError(`${path} is larger than ${limits.maxBytes} bytes: not read`);
    // Sized by fstat, one byte over so that growth since is seen; never past the bound.
    const chunks: Buffer[] = [];
    let total = 0;
    let room = st.size + 1;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(room, limits.maxBytes + 1 - total));
      const got = readSync(fd, buf, 0, buf.length, null);
      if (got === 0) break;
      total += got;
      if (total > limits.maxBytes)
        throw new UnsafePathError(`${path} is larger than ${limits.maxBytes} bytes: not read`);
      chunks.push(buf.subarray(0, got));
      room = 64 * 1024;
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
  } finally {
    closeSync(fd);
  }
}

/** readOwnFile as UTF-8 text, undefined when missing or refused (for caches that can be rebuilt). */
export function readOwnTextOrUndefined(path: string, limits: ReadLimits): string | undefined {
  try {
    return readOwnFile(path, limits)?.toString('utf8');
  } catch (e) {
    if (e instanceof UnsafePathError) return undefined;
    throw e;
  }
}

/**
 * A new file (never an existing name, never through a symlink): owner and exact mode (not the
 * umask's) set through the descriptor before the data is written, then fsync.
 */
export function createFile(
  path: string,
  data: string | Uint8Array,
  mode: number,
  owner?: { uid: number; gid: number },
): void {
  const fd = openSync(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  try {
    if (owner) fchownSync(fd, owner.uid, owner.gid);
    fchmodSync(fd, mode);
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A new directory of the agent (never an existing name): mode `mode` exactly; with `gid`, that
 * group, so that a workload's files can be kept from other users (0750) while the directory stays
 * the agent's. Set through a descriptor opened with O_NOFOLLOW.
 */
export function makeDirectory(path: string, mode: number, gid?: number): void {
  mkdirSync(path, { mode: 0o700 });
  const fd = openSync(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  try {
    if (gid !== undefined && gid >= 0) fchownSync(fd, processIds().uid, gid);
    fchmodSync(fd, mode);
  } finally {
    closeSync(fd);
  }
}

/** True when `path` is a directory (not a link) owned by this process and writable by no one else. */
export function isOwnDirectory(path: string): boolean {
  try {
    const st = lstatSync(path);
    return st.isDirectory() && st.uid === processIds().uid && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/** Removes a file or a symbolic link (never what it points to); a missing name is no error. */
export function unlinkName(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

export type RemoveOutcome = 'removed' | 'missing' | 'quarantined';

/**
 * Removes a directory the agent made, by the names it wrote in it, then rmdir. The directory's
 * parent must be the agent's own (no one else can rename or replace `path` itself).
 *
 * A directory of an earlier layout may belong to a workload, which could add, remove or swap
 * names in it at any time. It is first taken over through a descriptor opened with O_NOFOLLOW
 * (fchown to the agent, fchmod 0700): from then on no one else can change its names, so the
 * unlinks below act on exactly the names they give. What the agent did not write is not read,
 * followed or deleted: when rmdir finds such leftovers, the directory is moved whole into
 * `quarantine` (the agent's, mode 0700) for the operator, and 'quarantined' is returned.
 */
export function removeDirectory(path: string, names: readonly string[], quarantine: string): RemoveOutcome {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw e;
  }
  if (!st.isDirectory()) {
    unlinkName(path);
    return 'removed';
  }
  takeOver(path);
  for (const name of names) {
    try {
      unlinkSync(join(path, name));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // EISDIR/EPERM: a directory stands at that name; it stays, and so will the parent.
      if (code !== 'ENOENT' && code !== 'EISDIR' && code !== 'EPERM') throw e;
    }
  }
  try {
    rmdirSync(path);
    return 'removed';
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
  }
  ensurePrivateDirectory(quarantine, 0o700);
  renameSync(path, join(quarantine, `${basename(path)}.${Date.now().toString(36)}`));
  return 'quarantined';
}

/** fchown/fchmod a directory to the agent (0700) when anyone else owns it or may write it. */
function takeOver(path: string): void {
  const fd = openSync(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    const me = processIds();
    if (st.uid !== me.uid || (st.mode & 0o022) !== 0) {
      fchownSync(fd, me.uid, me.gid);
      fchmodSync(fd, 0o700);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes `dir` when missing (mode `mode`) and checks that it is a directory of this process that no
 * one else may write, reached through directories that no one else may change: every ancestor is
 * owned by root or this user, and writable by no one else unless it is sticky (/tmp), where
 * others cannot rename or remove what they do not own (OpenSSH's safe_path() rule).
 */
export function ensurePrivateDirectory(dir: string, mode = 0o755): void {
  mkdirSync(dir, { recursive: true, mode });
  assertPrivateDirectory(dir);
}

export function assertPrivateDirectory(dir: string): void {
  const me = processIds().uid;
  const real = realpathSync(dir);
  for (let p = real; ; p = dirname(p)) {
    const st = lstatSync(p);
    const what = p === real ? `the agent directory ${dir}` : `${p}, on the way to ${dir},`;
    if (!st.isDirectory()) throw new UnsafePathError(`${what} is not a directory`);
    if (p === real && st.uid !== me)
      throw new UnsafePathError(`${what} is owned by uid ${st.uid}: it must be the agent's (uid ${me})`);
    if (st.uid !== 0 && st.uid !== me)
      throw new UnsafePathError(`${what} is owned by uid ${st.uid}: only root or the agent may own it`);
    const othersWrite = (st.mode & 0o022) !== 0;
    const sticky = (st.mode & 0o1000) !== 0;
    if (othersWrite && (p === real || !sticky))
      throw new UnsafePathError(
        `${what} is writable by other users (mode ${(st.mode & 0o7777).toString(8)})`,
      );
    if (p === dirname(p)) break;
  }
}
