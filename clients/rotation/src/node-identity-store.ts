import { existsSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from './agent-error';
import { fsyncDir, writeFileAtomic } from './atomic-file';
import type { NewNodeIdentity } from './bootstrap';
import { nodeIdOf } from './ca-client';
import { isKeyForCertificate, parseCertificates } from './pem';

/**
 * The agent's files (CONTRACT "Command line", `baton agent`):
 *
 *   DIR/bundle.pem         trust bundle (roots)
 *   DIR/node/cert.pem      leaf + intermediate
 *   DIR/node/key.pem       the node key, mode 0600
 *   DIR/node/state.json    serial, node_id, spiffe_id, expires_at, refresh_at: a restart resumes
 *
 * Crash safety. Each file is replaced atomically (write, fsync, rename, fsync dir), but a key and
 * its certificate are two files, and no rename moves two files at once. So a new identity is first
 * staged complete beside the current one, and only then renamed into place:
 *
 *   1. bundle.pem                                    (roots; a superset across a CA rotation)
 *   2. node/state.json.new, node/key.pem.new, node/cert.pem.new   (each written atomically)
 *   3. rename key.pem.new → key.pem, cert.pem.new → cert.pem, state.json.new → state.json
 *   4. fsync node/
 *
 * Until step 3 the previous pair is untouched under the usual names. From the end of step 2 the
 * new pair, and its state before it, are complete on disk under one name or the other. Whatever subset of the step-3 renames a crash (or a
 * power loss, which may persist renames in any order) leaves behind, `load()` looks at every
 * certificate × key candidate, keeps the pairs whose public keys match, takes the newest, and
 * finishes the renames. A reader of cert.pem/key.pem only sees a new key with the old certificate
 * for the instant between two renames.
 *
 * Known issue: a crash after the CA issued a renewal but before step 2 completes loses the new
 * certificate, and the CA has already marked the old one superseded: the node then needs a new
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
  /** The server's refresh_at; undefined when state.json did not survive (a crash between writes). */
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

const NEW = '.new';

/** The file operations save() and load() make; tests inject failures to simulate a crash. */
export interface StoreFileOps {
  writeFileAtomic(path: string, data: string, mode: number): void;
  rename(from: string, to: string): void;
  fsyncDir(dir: string): void;
}

const realFileOps: StoreFileOps = { writeFileAtomic, rename: renameSync, fsyncDir };

export class NodeIdentityStore implements NodeIdentityStorage {
  readonly paths: { bundle: string; nodeDir: string; cert: string; key: string; state: string };
  readonly #io: StoreFileOps;

  constructor(
    readonly dir: string,
    io: StoreFileOps = realFileOps,
  ) {
    this.#io = io;
    const nodeDir = join(dir, 'node');
    this.paths = {
      bundle: join(dir, 'bundle.pem'),
      nodeDir,
      cert: join(nodeDir, 'cert.pem'),
      key: join(nodeDir, 'key.pem'),
      state: join(nodeDir, 'state.json'),
    };
  }

  save(identity: NewNodeIdentity): void {
    const p = this.paths;
    const state: StateFile = {
      serial: identity.serial,
      node_id: identity.nodeId,
      spiffe_id: identity.spiffeId,
      expires_at: identity.expiresAt.toISOString(),
      refresh_at: identity.refreshAt.toISOString(),
    };
    this.#io.writeFileAtomic(p.bundle, identity.bundlePem, 0o644);
    this.#io.writeFileAtomic(p.state + NEW, `${JSON.stringify(state, null, 2)}\n`, 0o644);
    this.#io.writeFileAtomic(p.key + NEW, identity.keyPem, 0o600);
    this.#io.writeFileAtomic(p.cert + NEW, identity.certificateChainPem, 0o644);
    this.#commit();
  }

  load(): StoredNodeIdentity | undefined {
    const p = this.paths;
    const certs = [p.cert, p.cert + NEW].flatMap((path) => candidate(path));
    if (certs.length === 0) return undefined;
    const keys = [p.key, p.key + NEW].flatMap((path) => candidate(path));
    const pairs = certs.flatMap((c) =>
      keys
        .filter((k) => isKeyForCertificate(c.text, k.text))
        .map((k) => ({ cert: c, key: k, leaf: leafOf(c.text) })),
    );
    const best = pairs.filter((x) => x.leaf !== undefined).sort((a, b) => newer(b, a))[0];
    if (!best) {
      throw new AgentError(
        'ERR_IDENTITY_CORRUPT',
        `${p.nodeDir} holds no certificate matching its key: remove it and attest with a new token`,
      );
    }
    if (!existsSync(p.bundle))
      throw new AgentError(
        'ERR_IDENTITY_CORRUPT',
        `${p.bundle} is missing: remove ${p.nodeDir} and attest again`,
      );
    const leaf = best.leaf!;
    const serial = normalizeSerial(leaf.serialNumber);
    const found = [p.state, p.state + NEW]
      .flatMap((path) => candidate(path))
      .map((c) => ({ path: c.path, state: parseState(c.text) }))
      .find((c) => c.state?.serial === serial);
    const state = found?.state;
    this.#repair(best.cert.path, best.key.path, found?.path);
    const spiffeId = state?.spiffe_id ?? uriSan(leaf.subjectAltName);
    return {
      keyPem: best.key.text,
      certificateChainPem: best.cert.text,
      bundlePem: readFileSync(p.bundle, 'utf8'),
      serial,
      nodeId: state?.node_id ?? nodeIdOf(spiffeId),
      spiffeId,
      notBefore: new Date(leaf.validFrom),
      notAfter: new Date(leaf.validTo),
      refreshAt: state ? new Date(state.refresh_at) : undefined,
    };
  }

  /** Step 3 and 4 of save(): every staged file takes its place. */
  #commit(): void {
    const p = this.paths;
    for (const path of [p.key, p.cert, p.state]) this.#io.rename(path + NEW, path);
    this.#io.fsyncDir(p.nodeDir);
  }

  /**
   * After a crash: the chosen files take the usual names, and staged files of a pair that lost
   * are removed (never a usual-name file: the worst case is keeping an old, superseded pair).
   */
  #repair(certPath: string, keyPath: string, statePath: string | undefined): void {
    const p = this.paths;
    let changed = false;
    for (const [target, chosen] of [
      [p.key, keyPath],
      [p.cert, certPath],
      [p.state, statePath],
    ] as const) {
      if (chosen === target + NEW) {
        this.#io.rename(chosen, target);
        changed = true;
      } else if (existsSync(target + NEW)) {
        unlinkSync(target + NEW);
        changed = true;
      }
    }
    if (changed) this.#io.fsyncDir(p.nodeDir);
  }
}

interface Candidate {
  path: string;
  text: string;
}

function candidate(path: string): Candidate[] {
  try {
    return [{ path, text: readFileSync(path, 'utf8') }];
  } catch {
    return [];
  }
}

function leafOf(chainPem: string) {
  try {
    return parseCertificates(chainPem)[0];
  } catch {
    return undefined;
  }
}

/**
 * Orders two matching pairs: the certificate that starts later is newer, then the one that lasts
 * longer; at equal times (two issuances in one second) the staged pair is newer, because save()
 * only stages a pair after the current one.
 */
function newer(
  a: { cert: Candidate; key: Candidate; leaf?: { validFrom: string; validTo: string } },
  b: { cert: Candidate; key: Candidate; leaf?: { validFrom: string; validTo: string } },
): number {
  const staged = (x: typeof a) => Number(x.cert.path.endsWith(NEW)) + Number(x.key.path.endsWith(NEW));
  return (
    Date.parse(a.leaf!.validFrom) - Date.parse(b.leaf!.validFrom) ||
    Date.parse(a.leaf!.validTo) - Date.parse(b.leaf!.validTo) ||
    staged(a) - staged(b)
  );
}

function parseState(text: string): StateFile | undefined {
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
function normalizeSerial(hex: string): string {
  const s = hex.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
}
