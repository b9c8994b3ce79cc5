import { lstatSync, readdirSync, readlinkSync, renameSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from './agent-error';
import { fsyncDir } from '../../../common/src/atomic-file';
import { parseCertificates } from './pem';
import {
  assertPrivateDirectory,
  createFile,
  ensurePrivateDirectory,
  isOwnDirectory,
  makeDirectory,
  readOwnTextOrUndefined,
  removeDirectory,
  unlinkName,
} from './safe-fs';

/**
 * The workload SVIDs of the agent (CONTRACT "Command line", `baton agent`):
 *
 *   DIR/workloads/                        the agent's (0755): no one else adds or removes a name
 *   DIR/workloads/<name>                  symlink → .<name>.<serial>
 *   DIR/workloads/.<name>.<serial>/       one generation, the agent's directory (0755, or 0750
 *                                         with the entry's group), never modified once linked:
 *       cert.pem    leaf + intermediate      ┐ owned by the entry's unix:uid (and unix:gid)
 *       key.pem     the workload key, 0600    │ when the agent runs as root: given through the
 *       bundle.pem  trust bundle (roots)      ┘ descriptor when created, never chowned by path
 *       state.json  the agent's own (serial, spiffe_id, dns_names, owner, validity, previous)
 *
 * Privilege boundary (STYLE §18; issue 14): the agent runs as root beside its workloads. A
 * workload owns its files but no directory the agent works in, so it cannot add, remove, rename or
 * swap a name where the agent reads, links or deletes. The agent reads only its own state.json,
 * through safe-fs (O_NOFOLLOW | O_NONBLOCK, fstat: a regular file of its own, bounded), never the
 * workload's files; it removes a generation by unlinking the files it wrote, then rmdir.
 *
 * Earlier agents gave the generation directory itself to the workload. Such a directory is never
 * read (load() finds no usable state in it and the entry is issued anew, into an agent-owned
 * directory), and it is removed through safe-fs's removeDirectory: taken over through a
 * descriptor first, so its former owner can no longer change its names, then unlinked by name;
 * whatever its owner had added is moved whole to DIR/.quarantine for the operator, never deleted.
 *
 * Atomic swap (the scheme of Kubernetes' AtomicWriter for secret volumes). A key and its
 * certificate are two files and no rename moves two files at once, so the pair lives in a
 * directory of its own, and what changes is one symlink:
 *
 *   1. mkdir .<name>.<serial>/, write its four files (owner and mode set before the data, each
 *      fsynced), fsync the directory, then fsync DIR/workloads/ (its entry is durable before a link
 *      names it)
 *   2. symlink .<name>.<serial>.link → .<name>.<serial>
 *   3. rename .<name>.<serial>.link → <name>   (rename(2) replaces the old link atomically)
 *   4. fsync DIR/workloads/
 *   5. remove the generations of <name> other than the new one and the one it replaced
 *
 * A crash before 3 leaves <name> on the old generation and an orphan that the next run removes; a
 * power loss around 3 persists either link, each to a complete, fsynced generation, because
 * nothing is removed before 4. Path resolution of `workloads/<name>/cert.pem` is atomic, so
 * every open sees one generation. A reader that opens cert.pem and key.pem separately can still
 * straddle a swap; a reader that resolves the directory once (realpath, or an O_DIRECTORY fd and
 * openat) and reads both files from it always gets a pair, because a generation is never
 * rewritten and the previous one is kept until the next rotation. Readers that reopen by name
 * should check the pair and read again on a mismatch (as clients/identity does).
 *
 * Generation names are unambiguous: entry names never start with a dot and serials are hex,
 * so `.<name>.<serial>` is split at its last dot.
 */

/** The entry name rule of the CA (services/ca domain/entries.ts), checked again before any path use. */
export const WORKLOAD_NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;

const GENERATION_RE = /^\.(.+)\.([0-9a-f]+)$/;
const LINK_SUFFIX = '.link';

/** The owner of a workload's files; -1 leaves that id unchanged (chown(2)). */
export interface FileOwner {
  uid: number;
  gid: number;
}

export interface NewWorkload {
  name: string;
  spiffeId: string;
  serial: string;
  /** Leaf + intermediate, PEM. */
  certificateChainPem: string;
  keyPem: string;
  bundlePem: string;
  dnsNames: string[];
  expiresAt: Date;
  refreshAt: Date;
  /** Set when the agent runs as root and the entry names a unix:uid. */
  owner?: FileOwner;
}

/** What load() knows of the current generation: all from the agent's own state.json. */
export interface StoredWorkload {
  name: string;
  spiffeId: string;
  serial: string;
  dnsNames: string[];
  expiresAt: Date;
  refreshAt: Date;
  owner?: FileOwner;
  /** The generation directory the link resolves to. */
  dir: string;
  notBefore: Date;
  notAfter: Date;
}

interface StateFile {
  name: string;
  serial: string;
  spiffe_id: string;
  dns_names: string[];
  owner: FileOwner | null;
  expires_at: string;
  refresh_at: string;
  not_before: string;
  not_after: string;
  /** The generation this one replaced: kept for readers until the next swap. */
  previous: string | null;
}

/** The files of a generation: removal unlinks exactly these, then the directory. */
const GENERATION_FILES = ['key.pem', 'cert.pem', 'bundle.pem', 'state.json'] as const;
/** state.json is a few hundred bytes; anything near this is not one the agent wrote. */
const MAX_STATE_BYTES = 64 * 1024;

/** The file operations save() makes; tests inject failures to simulate a crash at each one. */
export interface WorkloadFileOps {
  /** A new directory of the agent's, with that mode, and that group when given. */
  mkdir(path: string, mode: number, gid?: number): void;
  /** A new file, owned by `owner` when given, fsynced. */
  writeFile(path: string, data: string, mode: number, owner?: FileOwner): void;
  fsyncDir(dir: string): void;
  symlink(target: string, path: string): void;
  rename(from: string, to: string): void;
  /** Removes a link or file by name (never what a link points to). */
  unlink(path: string): void;
  /** Removes a generation directory by the names the agent writes in it (safe-fs removeDirectory). */
  removeDir(path: string, names: readonly string[], quarantine: string): void;
}

export const realWorkloadFileOps: WorkloadFileOps = {
  mkdir: makeDirectory,
  writeFile: createFile,
  fsyncDir,
  symlink: (target, path) => symlinkSync(target, path),
  rename: renameSync,
  unlink: unlinkName,
  removeDir: (path, names, quarantine) => void removeDirectory(path, names, quarantine),
};

export class WorkloadStore {
  readonly root: string;
  /** Where generations holding files the agent did not write are moved (safe-fs removeDirectory). */
  readonly quarantine: string;
  readonly #io: WorkloadFileOps;

  constructor(
    readonly agentDir: string,
    io: WorkloadFileOps = realWorkloadFileOps,
  ) {
    this.root = join(agentDir, 'workloads');
    this.quarantine = join(agentDir, '.quarantine');
    this.#io = io;
  }

  /** The names that have a workload link now. */
  names(): string[] {
    return this.#list().filter((n) => WORKLOAD_NAME_RE.test(n) && this.#isLink(n));
  }

  /**
   * DIR/workloads must be the agent's, reached through directories no one else can change
   * (safe-fs assertPrivateDirectory): every name below it is then the agent's to interpret.
   * Throws UnsafePathError otherwise; false when it does not exist yet (save() makes it).
   */
  #rootIsPrivate(): boolean {
    if (!lstatOrUndefined(this.root)) return false;
    assertPrivateDirectory(this.root);
    return true;
  }

  /**
   * The current generation of `name`, or undefined when there is none or it is unusable (a link
   * the agent did not make, a directory that is not the agent's, a state.json that is not the
   * agent's or does not describe that generation, a missing file): the caller issues anew.
   */
  load(name: string): StoredWorkload | undefined {
    checkName(name);
    if (!this.#rootIsPrivate()) return undefined;
    const gen = this.#target(name);
    if (!gen) return undefined;
    const dir = join(this.root, gen);
    const state = this.#stateOf(gen);
    if (!state || state.name !== name || `.${name}.${state.serial}` !== gen) return undefined;
    // The workload's files are its own and never read; that they are still there is enough.
    if (!GENERATION_FILES.every((f) => lstatOrUndefined(join(dir, f))?.isFile())) return undefined;
    return {
      name,
      dir,
      spiffeId: state.spiffe_id,
      serial: state.serial,
      dnsNames: state.dns_names,
      expiresAt: new Date(state.expires_at),
      refreshAt: new Date(state.refresh_at),
      owner: state.owner ?? undefined,
      notBefore: new Date(state.not_before),
      notAfter: new Date(state.not_after),
    };
  }

  /** Swaps in a new generation for `w.name` (steps 1–5 above). */
  save(w: NewWorkload): void {
    checkName(w.name);
    if (!/^[0-9a-f]+$/.test(w.serial)) throw new AgentError('ERR_BAD_RESPONSE', 'the CA sent a bad serial');
    ensurePrivateDirectory(this.root, 0o755);
    const linkPath = join(this.root, w.name);
    const stat = lstatOrUndefined(linkPath);
    if (stat && !stat.isSymbolicLink())
      throw new AgentError(
        'ERR_WORKLOAD_DIR',
        `${linkPath} exists and is not the agent's link: move it away to let the agent manage it`,
      );
    const previous = this.#target(w.name);
    const gen = `.${w.name}.${w.serial}`;
    const dir = join(this.root, gen);
    if (gen === previous)
      throw new AgentError('ERR_BAD_RESPONSE', 'the CA sent the serial of the current certificate');
    const leaf = parseCertificates(w.certificateChainPem)[0];
    if (!leaf) throw new AgentError('ERR_BAD_RESPONSE', 'the CA sent no certificate');
    // A leftover of a crash with this very serial: never linked, so safe to start over.
    this.#removeGeneration(gen);
    const kept = previous ? this.#stateOf(previous) : undefined;
    const state: StateFile = {
      name: w.name,
      serial: w.serial,
      spiffe_id: w.spiffeId,
      dns_names: w.dnsNames,
      owner: w.owner ?? null,
      expires_at: w.expiresAt.toISOString(),
      refresh_at: w.refreshAt.toISOString(),
      not_before: new Date(leaf.validFrom).toISOString(),
      not_after: new Date(leaf.validTo).toISOString(),
      // Kept for readers only when it is one of the agent's generations, and for the same owner:
      // a new owner must not keep reading the key of the old one.
      previous: previous && kept && sameOwner(kept.owner ?? undefined, w.owner) ? previous : null,
    };
    const group = w.owner && w.owner.gid >= 0 ? w.owner.gid : undefined;
    this.#io.mkdir(dir, group === undefined ? 0o755 : 0o750, group);
    this.#io.writeFile(join(dir, 'key.pem'), w.keyPem, 0o600, w.owner);
    this.#io.writeFile(join(dir, 'cert.pem'), w.certificateChainPem, 0o644, w.owner);
    this.#io.writeFile(join(dir, 'bundle.pem'), w.bundlePem, 0o644, w.owner);
    this.#io.writeFile(join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`, 0o644);
    this.#io.fsyncDir(dir);
    // The generation's own entry is durable before any link can point at it.
    this.#io.fsyncDir(this.root);
    const tmpLink = join(this.root, `${gen}${LINK_SUFFIX}`);
    this.#io.unlink(tmpLink);
    this.#io.symlink(gen, tmpLink);
    this.#io.rename(tmpLink, linkPath);
    this.#io.fsyncDir(this.root);
    this.#collect(w.name, new Set([gen, ...(state.previous ? [state.previous] : [])]));
  }

  /** Removes the link of `name` first (readers then see no identity), then its generations. */
  remove(name: string): void {
    checkName(name);
    if (!this.#rootIsPrivate()) return;
    const linkPath = join(this.root, name);
    if (lstatOrUndefined(linkPath)?.isSymbolicLink()) {
      this.#io.unlink(linkPath);
      this.#io.fsyncDir(this.root);
    }
    this.#collect(name, new Set());
  }

  /**
   * Removes what crashes left behind: temporary links, and generations that are neither the
   * current one of a linked name nor the previous one it keeps for readers.
   */
  collectGarbage(): void {
    if (!this.#rootIsPrivate()) return;
    const keep = new Set<string>();
    for (const name of this.names()) {
      const gen = this.#target(name);
      if (!gen) continue;
      keep.add(gen);
      const previous = this.#stateOf(gen)?.previous;
      if (previous) keep.add(previous);
    }
    for (const entry of this.#list()) {
      if (!entry.startsWith('.')) continue;
      if (entry.endsWith(LINK_SUFFIX)) this.#io.unlink(join(this.root, entry));
      else if (GENERATION_RE.test(entry) && !keep.has(entry)) this.#removeGeneration(entry);
    }
  }

  #collect(name: string, keep: Set<string>): void {
    for (const entry of this.#list()) {
      const isLink = entry.endsWith(LINK_SUFFIX);
      const m = GENERATION_RE.exec(isLink ? entry.slice(0, -LINK_SUFFIX.length) : entry);
      if (m?.[1] !== name || keep.has(entry)) continue;
      if (isLink) this.#io.unlink(join(this.root, entry));
      else this.#removeGeneration(entry);
    }
  }

  #removeGeneration(gen: string): void {
    this.#io.removeDir(join(this.root, gen), GENERATION_FILES, this.quarantine);
  }

  /** The generation `name` links to, when the link is one the agent makes. */
  #target(name: string): string | undefined {
    let target: string;
    try {
      target = readlinkSync(join(this.root, name));
    } catch {
      return undefined;
    }
    const m = GENERATION_RE.exec(target);
    return m && m[1] === name ? target : undefined;
  }

  /**
   * The state of a generation, from the agent's own directory and file only: a generation
   * directory of an earlier layout (the workload's) or a state.json the agent did not write is
   * no state at all.
   */
  #stateOf(gen: string): StateFile | undefined {
    const dir = join(this.root, gen);
    if (!isOwnDirectory(dir)) return undefined;
    const text = readOwnTextOrUndefined(join(dir, 'state.json'), { maxBytes: MAX_STATE_BYTES });
    return text === undefined ? undefined : parseState(text);
  }

  #isLink(name: string): boolean {
    return lstatOrUndefined(join(this.root, name))?.isSymbolicLink() ?? false;
  }

  #list(): string[] {
    try {
      return readdirSync(this.root);
    } catch {
      return [];
    }
  }
}

export function sameOwner(a: FileOwner | undefined, b: FileOwner | undefined): boolean {
  return a?.uid === b?.uid && a?.gid === b?.gid;
}

function checkName(name: string): void {
  if (!WORKLOAD_NAME_RE.test(name))
    throw new AgentError('ERR_BAD_RESPONSE', `the CA sent an entry name that is not a safe file name`);
}

function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

const isDate = (v: unknown): v is string => typeof v === 'string' && Number.isFinite(Date.parse(v));
const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= -1;

/** A state.json of this layout, or undefined (an earlier layout's, or not one at all). */
function parseState(text: string): StateFile | undefined {
  let s: Partial<StateFile>;
  try {
    s = JSON.parse(text) as Partial<StateFile>;
  } catch {
    return undefined;
  }
  const ok =
    typeof s === 'object' &&
    s !== null &&
    typeof s.name === 'string' &&
    typeof s.serial === 'string' &&
    typeof s.spiffe_id === 'string' &&
    Array.isArray(s.dns_names) &&
    s.dns_names.every((d) => typeof d === 'string') &&
    (s.owner === null || (typeof s.owner === 'object' && isId(s.owner?.uid) && isId(s.owner?.gid))) &&
    [s.expires_at, s.refresh_at, s.not_before, s.not_after].every(isDate) &&
    (s.previous === null || (typeof s.previous === 'string' && GENERATION_RE.test(s.previous)));
  return ok ? (s as StateFile) : undefined;
}
