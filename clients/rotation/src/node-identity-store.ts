import type { X509Certificate } from 'node:crypto';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from './agent-error';
import { writeFileAtomic } from '../../../common/src/atomic-file';
import type { NewNodeIdentity } from './bootstrap';
import { nodeIdOf } from './ca-client';
import { isKeyForCertificate, parseCertificates } from './pem';
import { assertPrivateDirectory, ensurePrivateDirectory, readOwnTextOrUndefined } from './safe-fs';
import { realWorkloadFileOps, type WorkloadFileOps } from './workload-store';

/**
 * The agent's node identity (CONTRACT "Command line", `baton agent`):
 *
 *   DIR/bundle.pem             trust bundle (roots)
 *   DIR/node                   symlink → .node.<serial>
 *   DIR/.node.<serial>/        one generation, never modified once linked:
 *       cert.pem               leaf + intermediate
 *       key.pem                the node key, mode 0600
 *       state.json             serial, node_id, spiffe_id, expires_at, refresh_at: a restart resumes
 *
 * The contract's paths DIR/node/{cert.pem,key.pem,state.json} resolve through the link.
 *
 * Atomic swap: the AtomicWriter scheme of workload-store.ts (Kubernetes' secret volumes). A key and
 * its certificate are two files and no rename moves two files at once, so the pair lives in a
 * directory of its own and what changes is one symlink:
 *
 *   1. bundle.pem, replaced atomically (roots; a superset across a CA rotation)
 *   2. mkdir .node.<serial>/ (after removing a leftover of a crashed attempt with that serial),
 *      write state.json, key.pem, cert.pem (mode set before the data, each fsynced), fsync it,
 *      fsync DIR (the generation's entry is durable before a link names it)
 *   3. symlink .node.<serial>.link → .node.<serial>
 *   4. rename .node.<serial>.link → node   (rename(2) replaces the old link atomically)
 *   5. fsync DIR
 *   6. remove the generations other than the new one and the one it replaced
 *
 * A crash before 4 leaves `node` on the old, complete generation. The CA has superseded that
 * certificate once it issued the new one, so load() adopts an orphan generation whose certificate
 * and key match and that is newer (notBefore, then notAfter) than the linked one, and finishes
 * steps 3–6. Orphans that are not complete (a crash in step 2 before cert.pem, or a power loss that
 * garbled files not yet fsynced) are removed, and so are temporary links. A power loss around 4
 * persists either link, each to a complete, fsynced generation, because nothing is removed before
 * 5. The linked generation itself is never removed or repaired by load(): a linked pair that does
 * not match is reported, and the operator decides.
 *
 * Readers: path resolution through `node` is atomic, so each open sees one generation. A reader
 * that resolves DIR/node once (realpath) and reads both files from there always gets a pair,
 * because the generation it resolved is kept until the next rotation; one that opens
 * node/cert.pem and node/key.pem by name can straddle a swap and should check the pair and read
 * again (as clients/identity does).
 *
 * Earlier versions wrote DIR/node as a plain directory, with `*.new` files staged beside the
 * current ones. load() still reads it (the newest matching pair of cert.pem/cert.pem.new ×
 * key.pem/key.pem.new), and the next save() migrates it: between 3 and 4 the directory is renamed
 * to DIR/.node.legacy, and it is removed after 5. A crash in between leaves no DIR/node: load()
 * then adopts the new generation, or moves .node.legacy back when there is none.
 *
 * Known issue: a crash after the CA issued a renewal but before step 2 has written the new key and
 * certificate loses the new certificate, and the CA has already marked the old one superseded: the node then needs a new
 * token. The window is a few milliseconds of local writes.
 */

export interface StoredNodeIdentity {
  keyPem: string;
  /** Leaf + intermediate, PEM. */
  certificateChainPem: string;
  bundlePem: string;
  serial: string;
  nodeId: string;
  spiffeId: string;
  notBefore: Date;
  notAfter: Date;
  /** The server's refresh_at; undefined when state.json did not survive. */
  refreshAt?: Date;
}

/** What the rotator needs from storage; NodeIdentityStore is the file one. */
export interface NodeIdentityStorage {
  /** The current identity, undefined when this node never attested. */
  load(): StoredNodeIdentity | undefined;
  save(identity: NewNodeIdentity): void;
}

interface StateFile {
  serial: string;
  node_id: string;
  spiffe_id: string;
  expires_at: string;
  refresh_at: string;
}

const NODE = 'node';
const LEGACY = '.node.legacy';
const LINK_SUFFIX = '.link';
/** A generation, and its temporary link; serials are hex, so `.node.legacy` is neither. */
const GENERATION_RE = /^\.node\.[0-9a-f]+$/;
const LINK_RE = /^\.node\.[0-9a-f]+\.link$/;
/** The staged files of the legacy layout. */
const NEW = '.new';
/** The files a generation holds, and those the legacy directory may hold: removal unlinks these. */
const GENERATION_FILES = ['state.json', 'key.pem', 'cert.pem'] as const;
const LEGACY_FILES = GENERATION_FILES.flatMap((f) => [f, f + NEW]);
/** Every file the agent reads here is its own and small: a certificate chain, a key, a bundle of roots. */
const MAX_FILE_BYTES = 1024 * 1024;
const QUARANTINE = '.quarantine';

/** The file operations save() and load() make; tests inject failures to simulate a crash at each. */
export interface NodeFileOps extends WorkloadFileOps {
  /** Replaces a file atomically (common/src/atomic-file.ts): DIR/bundle.pem. */
  writeFileAtomic(path: string, data: string, mode: number): void;
}

export const realNodeFileOps: NodeFileOps = { ...realWorkloadFileOps, writeFileAtomic };

/** A certificate and the key it certifies, with the state.json of that certificate if any. */
interface Pair {
  certPem: string;
  keyPem: string;
  leaf: X509Certificate;
  state?: StateFile;
}

export class NodeIdentityStore implements NodeIdentityStorage {
  /** nodeDir is the link; cert, key and state resolve through it. */
  readonly paths: { bundle: string; nodeDir: string; cert: string; key: string; state: string };
  readonly #io: NodeFileOps;

  constructor(
    readonly dir: string,
    io: NodeFileOps = realNodeFileOps,
  ) {
    this.#io = io;
    const nodeDir = join(dir, NODE);
    this.paths = {
      bundle: join(dir, 'bundle.pem'),
      nodeDir,
      cert: join(nodeDir, 'cert.pem'),
      key: join(nodeDir, 'key.pem'),
      state: join(nodeDir, 'state.json'),
    };
  }

  /** Steps 1–6 above. */
  save(identity: NewNodeIdentity): void {
    if (!/^[0-9a-f]+$/.test(identity.serial))
      throw new AgentError('ERR_BAD_RESPONSE', 'the CA sent a bad serial');
    const state: StateFile = {
      serial: identity.serial,
      node_id: identity.nodeId,
      spiffe_id: identity.spiffeId,
      expires_at: identity.expiresAt.toISOString(),
      refresh_at: identity.refreshAt.toISOString(),
    };
    const replaced = this.#linked();
    const gen = `.node.${identity.serial}`;
    if (gen === replaced)
      throw new AgentError('ERR_BAD_RESPONSE', 'the CA sent the serial of the current certificate');
    ensurePrivateDirectory(this.dir, 0o755);
    this.#io.writeFileAtomic(this.paths.bundle, identity.bundlePem, 0o644);
    const dir = join(this.dir, gen);
    // A leftover of a crash with this very serial: never linked, so safe to start over.
    this.#removeDir(gen, GENERATION_FILES);
    this.#io.mkdir(dir, 0o755);
    this.#io.writeFile(join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`, 0o644);
    this.#io.writeFile(join(dir, 'key.pem'), identity.keyPem, 0o600);
    this.#io.writeFile(join(dir, 'cert.pem'), identity.certificateChainPem, 0o644);
    this.#io.fsyncDir(dir);
    // The generation's own entry in DIR is durable before any link can point at it.
    this.#io.fsyncDir(this.dir);
    this.#link(gen, replaced);
  }

  /**
   * A new trust bundle for the current certificate (a root rotation started or finished), replaced
   * atomically; the caller has checked that the certificate still leads to one of its roots.
   */
  replaceBundle(bundlePem: string): void {
    ensurePrivateDirectory(this.dir, 0o755);
    this.#io.writeFileAtomic(this.paths.bundle, bundlePem, 0o644);
  }

  load(): StoredNodeIdentity | undefined {
    const p = this.paths;
    if (kindOf(this.dir) === 'missing') return undefined;
    assertPrivateDirectory(this.dir);
    const kind = kindOf(p.nodeDir);
    let linked: string | undefined;
    let current: Pair | undefined;
    if (kind === 'link') {
      linked = this.#linked();
      if (!linked)
        throw corrupt(`${p.nodeDir} is a link the agent did not make: remove it and attest with a new token`);
      current = readGeneration(join(this.dir, linked));
      if (!current)
        throw corrupt(
          `${p.nodeDir} (→ ${linked}) holds no certificate matching its key: remove it and attest with a new token`,
        );
      // A crash between the link of a migration and the removal of the directory it replaced.
      if (kindOf(join(this.dir, LEGACY)) !== 'missing') this.#removeDir(LEGACY, LEGACY_FILES);
    } else if (kind === 'dir') {
      current = readLegacy(p.nodeDir);
    } else if (kind === 'missing') {
      // A crash in the middle of a migration (see the header comment).
      if (kindOf(join(this.dir, LEGACY)) === 'dir') current = readLegacy(join(this.dir, LEGACY));
    } else {
      throw corrupt(`${p.nodeDir} is neither a directory nor a link: remove it and attest with a new token`);
    }

    let adopt: (Pair & { gen: string }) | undefined;
    for (const entry of this.#list()) {
      const path = join(this.dir, entry);
      // A temporary link of a save that did not finish (a finished one renamed it).
      if (LINK_RE.test(entry)) this.#io.unlink(path);
      if (!GENERATION_RE.test(entry) || entry === linked) continue;
      const pair = readGeneration(path);
      if (!pair) this.#removeDir(entry, GENERATION_FILES);
      else if ((!current || compareAge(pair, current) > 0) && (!adopt || compareAge(pair, adopt) > 0))
        adopt = { ...pair, gen: entry };
    }
    if (adopt) {
      this.#link(adopt.gen, linked);
      current = adopt;
    } else if (kind === 'missing' && current) {
      this.#io.rename(join(this.dir, LEGACY), p.nodeDir);
      this.#io.fsyncDir(this.dir);
    }
    if (!current) return undefined;

    const bundlePem = readOrUndefined(p.bundle);
    if (bundlePem === undefined)
      throw corrupt(`${p.bundle} is missing or not the agent's: remove ${p.nodeDir} and attest again`);
    const { leaf, state } = current;
    const spiffeId = state?.spiffe_id ?? uriSan(leaf.subjectAltName);
    return {
      keyPem: current.keyPem,
      certificateChainPem: current.certPem,
      bundlePem,
      serial: serialOf(leaf),
      nodeId: state?.node_id ?? nodeIdOf(spiffeId),
      spiffeId,
      notBefore: new Date(leaf.validFrom),
      notAfter: new Date(leaf.validTo),
      refreshAt: state ? new Date(state.refresh_at) : undefined,
    };
  }

  /**
   * Steps 3–6: points DIR/node at `gen`, a complete and fsynced generation. A legacy directory in
   * the way is moved aside first and removed once the link is durable.
   */
  #link(gen: string, replaced: string | undefined): void {
    const p = this.paths;
    const tmpLink = join(this.dir, `${gen}${LINK_SUFFIX}`);
    const legacy = join(this.dir, LEGACY);
    this.#io.unlink(tmpLink);
    this.#io.symlink(gen, tmpLink);
    const migrating = kindOf(p.nodeDir) === 'dir';
    if (migrating) {
      this.#removeDir(LEGACY, LEGACY_FILES);
      this.#io.rename(p.nodeDir, legacy);
    }
    this.#io.rename(tmpLink, p.nodeDir);
    this.#io.fsyncDir(this.dir);
    if (migrating || kindOf(legacy) !== 'missing') this.#removeDir(LEGACY, LEGACY_FILES);
    const keep = new Set([gen, ...(replaced ? [replaced] : [])]);
    for (const entry of this.#list()) {
      if (keep.has(entry)) continue;
      if (LINK_RE.test(entry)) this.#io.unlink(join(this.dir, entry));
      else if (GENERATION_RE.test(entry)) this.#removeDir(entry, GENERATION_FILES);
    }
  }

  /** Removes a directory of DIR by the names the agent writes in it, never recursively (safe-fs). */
  #removeDir(name: string, files: readonly string[]): void {
    this.#io.removeDir(join(this.dir, name), files, join(this.dir, QUARANTINE));
  }

  /** The generation DIR/node links to, when the link is one the agent makes. */
  #linked(): string | undefined {
    try {
      const target = readlinkSync(this.paths.nodeDir);
      return GENERATION_RE.test(target) ? target : undefined;
    } catch {
      return undefined;
    }
  }

  #list(): string[] {
    try {
      return readdirSync(this.dir);
    } catch {
      return [];
    }
  }
}

/** The pair of a generation, or undefined when a file is missing or garbled or the key does not match. */
function readGeneration(dir: string): Pair | undefined {
  const certPem = readOrUndefined(join(dir, 'cert.pem'));
  const keyPem = readOrUndefined(join(dir, 'key.pem'));
  if (certPem === undefined || keyPem === undefined) return undefined;
  const leaf = leafOf(certPem);
  if (!leaf || !isKeyForCertificate(certPem, keyPem)) return undefined;
  return { certPem, keyPem, leaf, state: stateOf(leaf, [join(dir, 'state.json')]) };
}

/**
 * The pair in a directory of the legacy layout: the newest matching pair of cert.pem/cert.pem.new ×
 * key.pem/key.pem.new (a crash between that layout's renames left either name), at equal times the
 * staged one, because that layout staged a pair only after the current one. Undefined when there is
 * no certificate at all.
 */
function readLegacy(dir: string): Pair | undefined {
  const read = (name: string) =>
    [name, name + NEW].flatMap((f) => {
      const text = readOrUndefined(join(dir, f));
      return text === undefined ? [] : [{ text, staged: Number(f.endsWith(NEW)) }];
    });
  const certs = read('cert.pem');
  if (certs.length === 0) return undefined;
  const keys = read('key.pem');
  const best = certs
    .flatMap((c) => {
      const leaf = leafOf(c.text);
      return leaf
        ? keys
            .filter((k) => isKeyForCertificate(c.text, k.text))
            .map((k) => ({ certPem: c.text, keyPem: k.text, leaf, staged: c.staged + k.staged }))
        : [];
    })
    .sort((a, b) => compareAge(b, a) || b.staged - a.staged)[0];
  if (!best)
    throw corrupt(`${dir} holds no certificate matching its key: remove it and attest with a new token`);
  const { certPem, keyPem, leaf } = best;
  return {
    certPem,
    keyPem,
    leaf,
    state: stateOf(leaf, [join(dir, 'state.json'), join(dir, `state.json${NEW}`)]),
  };
}

/** Positive when `a` is newer: it starts later, or at the same time and ends later. */
function compareAge(a: { leaf: X509Certificate }, b: { leaf: X509Certificate }): number {
  return (
    Date.parse(a.leaf.validFrom) - Date.parse(b.leaf.validFrom) ||
    Date.parse(a.leaf.validTo) - Date.parse(b.leaf.validTo)
  );
}

/** The first of `paths` that holds the state of this very certificate. */
function stateOf(leaf: X509Certificate, paths: string[]): StateFile | undefined {
  const serial = serialOf(leaf);
  return paths.map((path) => parseState(readOrUndefined(path))).find((s) => s?.serial === serial);
}

function kindOf(path: string): 'link' | 'dir' | 'missing' | 'other' {
  try {
    const s = lstatSync(path);
    return s.isSymbolicLink() ? 'link' : s.isDirectory() ? 'dir' : 'other';
  } catch {
    return 'missing';
  }
}

function corrupt(message: string): AgentError {
  return new AgentError('ERR_IDENTITY_CORRUPT', message);
}

/** An agent file (O_NOFOLLOW, non-blocking, its own, bounded: safe-fs), or undefined. */
function readOrUndefined(path: string): string | undefined {
  return readOwnTextOrUndefined(path, { maxBytes: MAX_FILE_BYTES });
}

function leafOf(chainPem: string): X509Certificate | undefined {
  try {
    return parseCertificates(chainPem)[0];
  } catch {
    return undefined;
  }
}

function parseState(text: string | undefined): StateFile | undefined {
  if (text === undefined) return undefined;
  try {
    const s = JSON.parse(text) as Partial<StateFile>;
    if (typeof s.serial !== 'string' || typeof s.refresh_at !== 'string') return undefined;
    if (!Number.isFinite(Date.parse(s.refresh_at))) return undefined;
    return s as StateFile;
  } catch {
    return undefined;
  }
}

function uriSan(subjectAltName: string | undefined): string {
  const uri = (subjectAltName ?? '').split(', ').find((n) => n.startsWith('URI:'));
  return uri ? uri.slice(4) : '';
}

/** OpenSSL prints the serial in uppercase hex; Baton writes whole bytes in lowercase. */
function serialOf(leaf: X509Certificate): string {
  const s = leaf.serialNumber.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
}
