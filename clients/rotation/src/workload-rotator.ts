import { AgentError } from './agent-error';
import type { AgentCaApi, NodeCredential, WorkloadEntry } from './agent-api';
import { CaClientError } from './ca-client';
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../../common/src/csr';
import { chainProblem, isKeyForCertificate, parseCertificates } from './pem';
import { backoffDelay, nextRefreshAt } from './rotation-strategy';
import {
  type FileOwner,
  sameOwner,
  type StoredWorkload,
  WORKLOAD_NAME_RE,
  type WorkloadStore,
} from './workload-store';

/**
 * The workload SVIDs of the entries parented to this node (CONTRACT `baton agent`: "fetch the
 * workload SVIDs of the entries parented to this node"). One pass, `reconcile()`:
 *
 *   entry without files          → issue (a new key, a CSR, POST /v1/workload-svids)
 *   files past refresh_at        → issue again, with a new key
 *   entry changed, or revoked    → issue again (its SPIFFE ID, DNS names or owner differ; the
 *                                  feed listed its serial)
 *   files without an entry       → remove them
 *
 * A failure of one entry is reported and retried with backoff without holding up the others.
 * Refusals that mean the node's own certificate is no longer good (revoked, expired, superseded)
 * end the pass: every other entry would meet the same refusal.
 */

export type WorkloadAction = 'issued' | 'renewed' | 'removed' | 'failed';

export interface WorkloadResult {
  name: string;
  action: WorkloadAction;
  spiffeId?: string;
  serial?: string;
  expiresAt?: Date;
  refreshAt?: Date;
  /** Why a renewal came before refresh_at, when it did. */
  reason?: string;
  error?: Error & { code?: string };
  /** When a failed entry is tried again (by run(); runOnce() tries every time). */
  retryAt?: Date;
}

export interface ReconcileResult {
  /** The entries parented to this node, as listed for this pass. */
  entries: WorkloadEntry[];
  /** What was done or failed; workloads with nothing due are not listed. */
  results: WorkloadResult[];
  /** The earliest refresh or retry of the workloads, undefined when there are none. */
  nextAt?: Date;
}

export interface WorkloadRotatorOptions {
  clock: { now(): Date };
  client: Pick<AgentCaApi, 'listEntries' | 'issueWorkloadSvid'>;
  store: WorkloadStore;
  random?: () => number;
  /** Files are given to the entry's unix:uid only when this returns 0. Default process.getuid. */
  getuid?: () => number | undefined;
  onEvent?: (result: WorkloadResult) => void;
  /**
   * Keep each SVID's chain and key in memory (the Workload API serves them): an entry whose files
   * predate this process is then issued again once, so that the socket and the files hold the same
   * SVID. The files are never read back: they may belong to the workload (CONTRACT `unix:uid`).
   */
  keepMaterial?: boolean;
}

/** An SVID as issued, held in memory for the Workload API (keepMaterial). */
export interface HeldMaterial {
  name: string;
  spiffeId: string;
  serial: string;
  certificateChainPem: string;
  keyPem: string;
  notAfter: Date;
}

/** Refusals about the node's certificate rather than one entry: the pass stops on them. */
export const NODE_CREDENTIAL_REFUSALS = new Set([
  'ERR_NODE_REVOKED',
  'ERR_CERT_REVOKED',
  'ERR_CERT_EXPIRED',
  'ERR_CERT_SUPERSEDED',
  'ERR_NOT_AUTHENTICATED',
]);

export const isNodeCredentialRefusal = (e: unknown): boolean =>
  e instanceof CaClientError && NODE_CREDENTIAL_REFUSALS.has(e.code);

export class WorkloadRotator {
  readonly #o: Required<Omit<WorkloadRotatorOptions, 'onEvent'>> & Pick<WorkloadRotatorOptions, 'onEvent'>;
  /** keepMaterial: the SVIDs issued by this process, by entry name. */
  readonly #material = new Map<string, HeldMaterial>();
  /** Per entry name: the failed attempts in a row and when to try again (ms since the epoch). */
  readonly #retries = new Map<string, { attempt: number; at: number }>();

  constructor(options: WorkloadRotatorOptions) {
    this.#o = {
      ...options,
      random: options.random ?? Math.random,
      getuid: options.getuid ?? (() => process.getuid?.()),
      keepMaterial: options.keepMaterial ?? false,
    };
  }

  /** The SVIDs this process issued and still holds, by entry name (keepMaterial). */
  get material(): ReadonlyMap<string, HeldMaterial> {
    return this.#material;
  }

  /**
   * One pass over the entries of the node whose credential is `node`. `revokedSerials` are
   * serials the revocation feed reported: a workload holding one is issued again at once.
   * Rejects only when the entries cannot be listed or the node's certificate is refused.
   */
  async reconcile(
    node: NodeCredential,
    opts: { revokedSerials?: ReadonlySet<string> } = {},
  ): Promise<ReconcileResult> {
    const entries = await this.#o.client.listEntries(node);
    const results: WorkloadResult[] = [];
    const report = (r: WorkloadResult) => {
      results.push(r);
      this.#o.onEvent?.(r);
    };
    const wanted = new Set<string>();
    for (const entry of entries) {
      if (!WORKLOAD_NAME_RE.test(entry.name)) {
        report({
          name: entry.name,
          action: 'failed',
          error: new AgentError('ERR_BAD_RESPONSE', 'the entry name is not a safe file name'),
        });
        continue;
      }
      wanted.add(entry.name);
      const retry = this.#retries.get(entry.name);
      if (retry && retry.at > this.#o.clock.now().getTime()) continue;
      try {
        const done = await this.#reconcileEntry(node, entry, opts.revokedSerials);
        this.#retries.delete(entry.name);
        if (done) report(done);
      } catch (e) {
        if (isNodeCredentialRefusal(e)) throw e;
        const attempt = retry ? retry.attempt + 1 : 0;
        const retryAfter = e instanceof CaClientError ? (e.retryAfterMs ?? 0) : 0;
        const delay = Math.max(
          backoffDelay(attempt, this.#o.random, { maxMs: 5 * 60_000 }),
          retryAfter,
          1000,
        );
        const at = this.#o.clock.now().getTime() + delay;
        this.#retries.set(entry.name, { attempt, at });
        report({
          name: entry.name,
          action: 'failed',
          spiffeId: entry.spiffeId,
          error: asError(e),
          retryAt: new Date(at),
        });
      }
    }
    for (const name of this.#o.store.names()) {
      if (wanted.has(name)) continue;
      this.#o.store.remove(name);
      this.#retries.delete(name);
      this.#material.delete(name);
      report({ name, action: 'removed' });
    }
    for (const name of this.#retries.keys()) if (!wanted.has(name)) this.#retries.delete(name);
    for (const name of this.#material.keys()) if (!wanted.has(name)) this.#material.delete(name);
    this.#o.store.collectGarbage();
    return { entries, results, nextAt: this.#nextAt(wanted) };
  }

  async #reconcileEntry(
    node: NodeCredential,
    entry: WorkloadEntry,
    revoked: ReadonlySet<string> | undefined,
  ): Promise<WorkloadResult | undefined> {
    const owner = this.#ownerFor(entry);
    const current = this.#o.store.load(entry.name);
    const reason = current ? this.#renewalReason(current, entry, owner, revoked) : 'new';
    if (!reason) return undefined;
    const keys = await generateKeyPair();
    const csr = await createCsr(keys, { commonName: entry.name });
    const issued = await this.#o.client.issueWorkloadSvid({
      ...node,
      spiffeId: entry.spiffeId,
      csrPem: csr.pem,
    });
    const keyPem = await exportPrivateKeyPem(keys.privateKey);
    // STYLE §9: nothing replaces the current files before it verifies.
    if (!isKeyForCertificate(issued.certificateChainPem, keyPem))
      throw new AgentError('ERR_BAD_RESPONSE', 'the CA returned a certificate for another key');
    const problem = chainProblem(issued.certificateChainPem, issued.bundlePem);
    if (problem)
      throw new AgentError('ERR_BAD_RESPONSE', `the CA returned a bad certificate chain: ${problem}`);
    const leaf = parseCertificates(issued.certificateChainPem)[0]!;
    const uris = (leaf.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:'));
    if (issued.spiffeId !== entry.spiffeId || uris.length !== 1 || uris[0] !== `URI:${entry.spiffeId}`)
      throw new AgentError('ERR_BAD_RESPONSE', 'the CA returned an SVID for another SPIFFE ID');
    this.#o.store.save({
      name: entry.name,
      spiffeId: entry.spiffeId,
      serial: issued.serial.toLowerCase(),
      certificateChainPem: issued.certificateChainPem,
      keyPem,
      bundlePem: issued.bundlePem,
      dnsNames: entry.dnsNames,
      expiresAt: issued.expiresAt,
      refreshAt: issued.refreshAt,
      owner,
    });
    const notBefore = new Date(leaf.validFrom);
    const notAfter = new Date(leaf.validTo);
    if (this.#o.keepMaterial)
      this.#material.set(entry.name, {
        name: entry.name,
        spiffeId: entry.spiffeId,
        serial: issued.serial.toLowerCase(),
        certificateChainPem: issued.certificateChainPem,
        keyPem,
        notAfter,
      });
    return {
      name: entry.name,
      action: current ? 'renewed' : 'issued',
      spiffeId: entry.spiffeId,
      serial: issued.serial.toLowerCase(),
      expiresAt: notAfter,
      refreshAt: nextRefreshAt({ notBefore, notAfter, refreshAt: issued.refreshAt }, this.#o.random),
      ...(current && reason !== 'due' ? { reason } : {}),
    };
  }

  /** Why `current` must be replaced now, or undefined when it is good until its refresh time. */
  #renewalReason(
    current: StoredWorkload,
    entry: WorkloadEntry,
    owner: FileOwner | undefined,
    revoked: ReadonlySet<string> | undefined,
  ): string | undefined {
    if (current.spiffeId !== entry.spiffeId) return 'the SPIFFE ID of the entry changed';
    if ([...current.dnsNames].sort().join() !== [...entry.dnsNames].sort().join())
      return 'the DNS names of the entry changed';
    if (!sameOwner(current.owner, owner)) return 'the owner of the entry changed';
    if (revoked?.has(current.serial)) return 'the certificate was revoked';
    if (this.#o.keepMaterial && this.#material.get(entry.name)?.serial !== current.serial)
      return 'the Workload API needs a key this process holds';
    const now = this.#o.clock.now().getTime();
    return now >= this.#refreshAtOf(current).getTime() ? 'due' : undefined;
  }

  #refreshAtOf(w: StoredWorkload): Date {
    return nextRefreshAt(
      { notBefore: w.notBefore, notAfter: w.notAfter, refreshAt: w.refreshAt },
      this.#o.random,
    );
  }

  #nextAt(names: Set<string>): Date | undefined {
    let next = Number.POSITIVE_INFINITY;
    for (const name of names) {
      const retry = this.#retries.get(name);
      if (retry) next = Math.min(next, retry.at);
      else {
        const w = this.#o.store.load(name);
        if (w) next = Math.min(next, this.#refreshAtOf(w).getTime());
      }
    }
    return Number.isFinite(next) ? new Date(next) : undefined;
  }

  /**
   * CONTRACT: workload files are "owned by the entry's unix:uid when the agent runs as root";
   * the group is the entry's unix:gid, or left as it is. Not root: the agent's own user.
   */
  #ownerFor(entry: WorkloadEntry): FileOwner | undefined {
    if (this.#o.getuid() !== 0) return undefined;
    const id = (key: 'uid' | 'gid') => {
      const s = entry.selectors.find((x) => x.startsWith(`unix:${key}:`));
      const n = s === undefined ? Number.NaN : Number(s.slice(`unix:${key}:`.length));
      return Number.isSafeInteger(n) && n >= 0 && n <= 2 ** 31 - 1 ? n : undefined;
    };
    const uid = id('uid');
    return uid === undefined ? undefined : { uid, gid: id('gid') ?? -1 };
  }
}

function asError(e: unknown): Error & { code?: string } {
  return e instanceof Error ? e : new Error(String(e));
}
