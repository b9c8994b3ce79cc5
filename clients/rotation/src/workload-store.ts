import {
  chmodSync,
  chownSync,
  closeSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { AgentError } from './agent-error';
import { fsyncDir } from './atomic-file';
import { isKeyForCertificate, parseCertificates } from './pem';

/**
 * The workload SVIDs of the agent (CONTRACT "Command line", `baton agent`):
 *
 *   DIR/workloads/<name>                  symlink → .<name>.<serial>
 *   DIR/workloads/.<name>.<serial>/       one generation, never modified once linked:
 *       cert.pem    leaf + intermediate
 *       key.pem     the workload key, mode 0600
 *       bundle.pem  trust bundle (roots)
 *       state.json  serial, spiffe_id, dns_names, owner, expires_at, refresh_at, previous
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

export interface StoredWorkload extends NewWorkload {
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
  /** The generation this one replaced: kept for readers until the next swap. */
  previous: string | null;
}

/** The file operations save() makes; tests inject failures to simulate a crash at each one. */
export interface WorkloadFileOps {
  mkdir(path: string): void;
  /** A new file, owned by `owner` when given, fsynced. */
  writeFile(path: string, data: string, mode: number, owner?: FileOwner): void;
  chown(path: string, owner: FileOwner): void;
  fsyncDir(dir: string): void;
  symlink(target: string, path: string): void;
  rename(from: string, to: string): void;
  remove(path: string): void;
}

export const realWorkloadFileOps: WorkloadFileOps = {
  mkdir: (path) => {
    mkdirSync(path);
    chmodSync(path, 0o755);
  },
  writeFile: writeFileDurable,
  chown: (path, o) => chownSync(path, o.uid, o.gid),
  fsyncDir,
  symlink: (target, path) => symlinkSync(target, path),
  rename: renameSync,
  remove: (path) => rmSync(path, { recursive: true, force: true }),
};

/** A new file: owner, exact mode (not the umask's), data, fsync. Owner and mode come first. */
function writeFileDurable(path: string, data: string, mode: number, owner?: FileOwner): void {
  const fd = openSync(path, 'wx', mode);
  try {
    if (owner) fchownSync(fd, owner.uid, owner.gid);
    fchmodSync(fd, mode);
    writeSync(fd, Buffer.from(data));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export class WorkloadStore {
  readonly root: string;
  readonly #io: WorkloadFileOps;

  constructor(
    readonly agentDir: string,
    io: WorkloadFileOps = realWorkloadFileOps,
  ) {
    this.root = join(agentDir, 'workloads');
    this.#io = io;
  }

  /** The names that have a workload link now. */
  names(): string[] {
    return this.#list().filter((n) => WORKLOAD_NAME_RE.test(n) && this.#isLink(n));
  }

  /**
   * The current generation of `name`, or undefined when there is none or it is unusable (a link
   * the agent did not make, a missing file, a key that does not match): the caller issues anew.
   */
  load(name: string): StoredWorkload | undefined {
    checkName(name);
    const gen = this.#target(name);
    if (!gen) return undefined;
    const dir = join(this.root, gen);
    try {
      const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StateFile;
      const certificateChainPem = readFileSync(join(dir, 'cert.pem'), 'utf8');
      const keyPem = readFileSync(join(dir, 'key.pem'), 'utf8');
      const bundlePem = readFileSync(join(dir, 'bundle.pem'), 'utf8');
      const leaf = parseCertificates(certificateChainPem)[0];
      if (!leaf || !isKeyForCertificate(certificateChainPem, keyPem)) return undefined;
      const refreshAt = new Date(state.refresh_at);
      if (typeof state.serial !== 'string' || !Number.isFinite(refreshAt.getTime())) return undefined;
      return {
        name,
        dir,
        spiffeId: state.spiffe_id,
        serial: state.serial,
        certificateChainPem,
        keyPem,
        bundlePem,
        dnsNames: Array.isArray(state.dns_names) ? state.dns_names : [],
        expiresAt: new Date(state.expires_at),
        refreshAt,
        owner: state.owner ?? undefined,
        notBefore: new Date(leaf.validFrom),
        notAfter: new Date(leaf.validTo),
      };
    } catch {
      return undefined;
    }
  }

  /** Swaps in a new generation for `w.name` (steps 1–5 above). */
  save(w: NewWorkload): void {
    checkName(w.name);
    if (!/^[0-9a-f]+$/.test(w.serial)) throw new AgentError('ERR_BAD_RESPONSE', 'the CA sent a bad serial');
    mkdirSync(this.root, { recursive: true, mode: 0o755 });
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
    // A leftover of a crash with this very serial: never linked, so safe to start over.
    this.#io.remove(dir);
    const state: StateFile = {
      name: w.name,
      serial: w.serial,
      spiffe_id: w.spiffeId,
      dns_names: w.dnsNames,
      owner: w.owner ?? null,
      expires_at: w.expiresAt.toISOString(),
      refresh_at: w.refreshAt.toISOString(),
      // A new owner must not keep reading the key of the old one: drop the old generation then.
      previous: previous && sameOwner(this.#ownerOf(previous), w.owner) ? previous : null,
    };
    this.#io.mkdir(dir);
    if (w.owner) this.#io.chown(dir, w.owner);
    this.#io.writeFile(join(dir, 'key.pem'), w.keyPem, 0o600, w.owner);
    this.#io.writeFile(join(dir, 'cert.pem'), w.certificateChainPem, 0o644, w.owner);
    this.#io.writeFile(join(dir, 'bundle.pem'), w.bundlePem, 0o644, w.owner);
    this.#io.writeFile(join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`, 0o644, w.owner);
    this.#io.fsyncDir(dir);
    // The generation's own entry is durable before any link can point at it.
    this.#io.fsyncDir(this.root);
    const tmpLink = join(this.root, `${gen}${LINK_SUFFIX}`);
    this.#io.remove(tmpLink);
    this.#io.symlink(gen, tmpLink);
    this.#io.rename(tmpLink, linkPath);
    this.#io.fsyncDir(this.root);
    this.#collect(w.name, new Set([gen, ...(state.previous ? [state.previous] : [])]));
  }

  /** Removes the link of `name` first (readers then see no identity), then its generations. */
  remove(name: string): void {
    checkName(name);
    const linkPath = join(this.root, name);
    if (lstatOrUndefined(linkPath)?.isSymbolicLink()) {
      this.#io.remove(linkPath);
      this.#io.fsyncDir(this.root);
    }
    this.#collect(name, new Set());
  }

  /**
   * Removes what crashes left behind: temporary links, and generations that are neither the
   * current one of a linked name nor the previous one it keeps for readers.
   */
  collectGarbage(): void {
    const keep = new Set<string>();
    for (const name of this.names()) {
      const gen = this.#target(name);
      if (!gen) continue;
      keep.add(gen);
      const previous = this.#previousOf(gen);
      if (previous) keep.add(previous);
    }
    for (const entry of this.#list()) {
      if (!entry.startsWith('.')) continue;
      if (entry.endsWith(LINK_SUFFIX) || (GENERATION_RE.test(entry) && !keep.has(entry)))
        this.#io.remove(join(this.root, entry));
    }
  }

  #collect(name: string, keep: Set<string>): void {
    for (const entry of this.#list()) {
      const m = GENERATION_RE.exec(entry.endsWith(LINK_SUFFIX) ? entry.slice(0, -LINK_SUFFIX.length) : entry);
      if (m?.[1] === name && !keep.has(entry)) this.#io.remove(join(this.root, entry));
    }
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

  #previousOf(gen: string): string | undefined {
    try {
      const p = (JSON.parse(readFileSync(join(this.root, gen, 'state.json'), 'utf8')) as StateFile).previous;
      return typeof p === 'string' && GENERATION_RE.test(p) ? p : undefined;
    } catch {
      return undefined;
    }
  }

  #ownerOf(gen: string): FileOwner | undefined {
    try {
      return (
        (JSON.parse(readFileSync(join(this.root, gen, 'state.json'), 'utf8')) as StateFile).owner ?? undefined
      );
    } catch {
      return undefined;
    }
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
