import { AgentError } from './agent-error';
import type {
  AgentCaApi,
  JwtSvid,
  JwtSvidRequest,
  NodeCredential,
  RevocationEvent,
  WorkloadEntry,
} from './agent-api';
import { AgentState } from './agent-state';
import type { NodeAttestor } from './bootstrap';
import { CaClientError } from './ca-client';
import { type CrlResult, CrlStore } from './crl-store';
import { JwtSvidCache } from './jwt-svid-cache';
import { NodeIdentityStore, type StoredNodeIdentity } from './node-identity-store';
import { backoffDelay } from './rotation-strategy';
import {
  isTerminal,
  NodeRotator,
  type RotatorEvent,
  type RunOnceResult,
  type Timers,
  unrefTimers,
} from './rotator';
import { RevocationFollower } from './revocation-follower';
import { ensurePrivateDirectory, readOwnTextOrUndefined } from './safe-fs';
import { type WorkloadResult, WorkloadRotator } from './workload-rotator';
import { WorkloadStore } from './workload-store';
import { chainProblem } from './pem';
import { trustStorePem } from '../../../common/src/trust-store';
import {
  certificatesDer,
  crlsDer,
  HeldSvidCache,
  servedEntries,
  trustDomainIdOf,
} from './workload-api/view-parts';
import type { WorkloadApiState } from './workload-api/workload-api-state';

/**
 * The whole node agent (CONTRACT `baton agent`): the node identity (NodeRotator), the workload
 * SVIDs of its entries (WorkloadRotator), DIR/crl.pem (CrlStore) and, in the daemon, the
 * revocation feed (RevocationFollower).
 *
 * `runOnce()` does what is due now: node first (nothing else works without it), then the
 * workloads, then the CRLs. `run()` repeats it at the earliest of the node's refresh time, a
 * workload's refresh or retry time and the sync interval (new and deleted entries, re-signed
 * CRLs), and follows the revocation feed meanwhile: a revocation refreshes crl.pem at once,
 * re-issues a workload whose serial it names, and stops the agent when it names this node.
 *
 * `fetchJwtSvid()` serves JWT-SVIDs of the entries to callers in the same process (the Workload
 * API) through a JwtSvidCache: minted on demand over the node's credential, kept until half-life.
 * A pass that finds an entry gone or changed drops that SPIFFE ID's tokens; a new node certificate
 * (renewed, re-attested) or a fatal refusal of the node drops them all.
 */

export type AgentEvent =
  | RotatorEvent
  | { type: 'workload'; result: WorkloadResult }
  | { type: 'crl'; result: CrlResult }
  | {
      type: 'error';
      scope: 'workloads' | 'crl' | 'revocations' | 'jwt-bundle' | 'bundle';
      error: Error & { code?: string };
      retryInMs?: number;
    }
  | { type: 'revoked'; event: RevocationEvent };

export interface AgentRunResult {
  /** The node step; undefined when it failed (nodeError) and a previous identity was used. */
  node?: RunOnceResult;
  nodeError?: Error & { code?: string };
  /** Only what was done or failed. */
  workloads: WorkloadResult[];
  /** The entries could not be listed, or the CA refused the node certificate. */
  workloadsError?: Error & { code?: string };
  crl: CrlResult | { action: 'failed'; error: Error & { code?: string } };
  /** The earliest workload refresh or retry. */
  nextWorkloadAt?: Date;
}

export interface NodeAgentOptions {
  /** DIR of CONTRACT `baton agent`. */
  dir: string;
  clock: { now(): Date };
  client: AgentCaApi;
  random?: () => number;
  /** A join token: for the first attestation and after expiry. */
  token?: string;
  /** Another way to attest (the TPM), instead of a token: see RotatorOptions.attestor. */
  attestor?: NodeAttestor;
  timers?: Timers;
  onEvent?: (event: AgentEvent) => void;
  /** See WorkloadRotatorOptions.getuid. */
  getuid?: () => number | undefined;
  /** How often run() lists the entries and looks at the CRLs when nothing else is due. Default 30 s. */
  syncIntervalMs?: number;
  /** The longest single sleep of run() (timers ignore suspend). Default one hour. */
  maxSleepMs?: number;
  /** The `wait` of each revocation long-poll, 0–30 s. Default 30. */
  feedWaitSeconds?: number;
  workloadStore?: WorkloadStore;
  /** How many JWT-SVIDs (SPIFFE ID, audience set, ttl) are kept at most. Default 1000. */
  jwtSvidCacheSize?: number;
  /**
   * What the Workload API socket serves (workload-api/server.ts): the agent publishes its entries,
   * the SVIDs it holds with their keys, the bundle, CRLs and JWT keys there after every pass and
   * every revocation. With it, workload keys are kept in memory (WorkloadRotatorOptions.keepMaterial).
   */
  workloadApi?: WorkloadApiState;
}

const MIN_SLEEP_MS = 1000;

/**
 * The refusals that end the daemon when the entries, workload SVIDs or the feed meet them. Expired
 * and superseded are left to the node step, which re-attests when it has a token and otherwise
 * stops; they can also be a renewal racing a request (the CA supersedes the old certificate before
 * the new one is stored).
 */
const REVOKED = new Set(['ERR_NODE_REVOKED', 'ERR_CERT_REVOKED']);
const isRevocation = (e: unknown): boolean =>
  (e instanceof AgentError || e instanceof CaClientError) && REVOKED.has(e.code);

/** Refusals of the node certificate, worded for the operator of the node. */
const NODE_REFUSALS: Record<string, string> = {
  ERR_NODE_REVOKED: 'this node has been revoked: the CA refuses it; the agent stops renewing',
  ERR_CERT_REVOKED: 'the node certificate has been revoked: the agent stops renewing',
  ERR_CERT_EXPIRED: 'the node certificate has expired: a new token is needed',
  ERR_CERT_SUPERSEDED:
    'the CA refused the node certificate: it was replaced by one this agent does not have; a new token is needed',
};

/** A refusal of the node certificate as an AgentError the operator can act on; others as they are. */
export function explainRefusal(e: unknown): Error & { code?: string } {
  if (e instanceof CaClientError && NODE_REFUSALS[e.code])
    return new AgentError(e.code, NODE_REFUSALS[e.code]!, { cause: e });
  return e instanceof Error ? e : new Error(String(e));
}

export class NodeAgent {
  readonly #o: NodeAgentOptions & { random: () => number; timers: Timers };
  readonly #store: NodeIdentityStore;
  readonly #rotator: NodeRotator;
  readonly #workloads: WorkloadRotator;
  readonly #workloadStore: WorkloadStore;
  readonly #crl: CrlStore;
  readonly #state: AgentState;
  /** Serials the feed reported revoked that a workload may hold: handled by the next pass. */
  readonly #revokedSerials = new Set<string>();
  readonly #jwtSvids: JwtSvidCache;
  /** The SPIFFE IDs of the entries of the last successful listing, each with what its entries say. */
  #entries?: Map<string, string>;
  /** The node certificate the cached JWT-SVIDs were minted with. */
  #nodeSerial?: string;
  /** Workload API: the entries of the last listing, the DER forms, the serials the feed revoked. */
  #entryList?: WorkloadEntry[];
  readonly #heldSvids = new HeldSvidCache();
  readonly #revokedHeld = new Set<string>();
  #crlDer?: { pem: string; der: Buffer[] };
  #jwks?: Buffer;

  constructor(options: NodeAgentOptions) {
    this.#o = { ...options, random: options.random ?? Math.random, timers: options.timers ?? unrefTimers };
    const emit = (e: AgentEvent) => this.#o.onEvent?.(e);
    this.#store = new NodeIdentityStore(options.dir);
    this.#rotator = new NodeRotator({
      clock: options.clock,
      client: options.client,
      store: this.#store,
      random: this.#o.random,
      token: options.token,
      attestor: options.attestor,
      timers: this.#o.timers,
      onEvent: emit,
    });
    this.#workloadStore = options.workloadStore ?? new WorkloadStore(options.dir);
    this.#workloads = new WorkloadRotator({
      clock: options.clock,
      client: options.client,
      store: this.#workloadStore,
      random: this.#o.random,
      getuid: options.getuid,
      onEvent: (result) => emit({ type: 'workload', result }),
      keepMaterial: options.workloadApi !== undefined,
    });
    this.#state = new AgentState(options.dir);
    this.#crl = new CrlStore(options.dir, this.#state);
    this.#jwtSvids = new JwtSvidCache({
      clock: options.clock,
      mint: (request) => this.#mintJwtSvid(request),
      entrySpiffeIds: () => this.#entries,
      maxEntries: options.jwtSvidCacheSize,
    });
  }

  /**
   * A JWT-SVID of one of this node's entries for `audience` (CONTRACT "JWT-SVIDs"), cached until
   * half its lifetime (see JwtSvidCache). Refused here, without asking the CA: a SPIFFE ID that is
   * not an entry's (ERR_NOT_AUTHORIZED), any SPIFFE ID before the first pass listed the entries
   * (ERR_NOT_READY), an empty audience (ERR_BAD_REQUEST). The CA's refusals are CaClientErrors,
   * those of the node certificate worded as explainRefusal does.
   */
  async fetchJwtSvid(spiffeId: string, audience: readonly string[], ttl?: string): Promise<JwtSvid> {
    try {
      return await this.#jwtSvids.get(spiffeId, audience, ttl);
    } catch (e) {
      throw explainRefusal(e);
    }
  }

  #mintJwtSvid(request: JwtSvidRequest): Promise<JwtSvid> {
    const identity = this.#loadQuietly();
    if (!identity)
      return Promise.reject(
        new AgentError('ERR_NOT_READY', 'this node has no identity to mint JWT-SVIDs with'),
      );
    return this.#o.client.mintJwtSvid({ ...credentialOf(identity), ...request });
  }

  /** The entries of a pass: tokens of a SPIFFE ID whose entries went away or changed are dropped. */
  #noteEntries(entries: WorkloadEntry[]): void {
    const byId = new Map<string, string[]>();
    for (const e of entries) {
      const about = JSON.stringify([e.name, [...e.selectors].sort(), [...e.dnsNames].sort(), e.ttlSeconds]);
      byId.set(e.spiffeId, [...(byId.get(e.spiffeId) ?? []), about]);
    }
    const next = new Map([...byId].map(([id, list]) => [id, list.sort().join('\n')]));
    for (const [id, about] of this.#entries ?? []) if (next.get(id) !== about) this.#jwtSvids.invalidate(id);
    this.#entries = next;
  }

  /** A new node certificate: the JWT-SVIDs minted with the previous one are dropped. */
  #noteIdentity(identity: StoredNodeIdentity): void {
    if (this.#nodeSerial !== undefined && this.#nodeSerial !== identity.serial) this.#jwtSvids.invalidate();
    this.#nodeSerial = identity.serial;
  }

  /**
   * Does what is due now. Rejects only when there is no node identity to work with (the first
   * attestation failed, or no token); every later failure is in the result, so that a node
   * whose renewal failed still keeps its workloads and crl.pem up to date.
   */
  async runOnce(): Promise<AgentRunResult> {
    // Everything below works by path in DIR: it must be the agent's alone (safe-fs, issue 14).
    ensurePrivateDirectory(this.#o.dir, 0o755);
    let node: RunOnceResult | undefined;
    let nodeError: (Error & { code?: string }) | undefined;
    try {
      node = await this.#rotator.runOnce();
    } catch (e) {
      if (!(e instanceof Error) || !this.#loadQuietly()) throw e;
      nodeError = e as Error & { code?: string };
    }
    const identity = this.#store.load()!;
    this.#noteIdentity(identity);
    const result: AgentRunResult = { node, nodeError, workloads: [], crl: { action: 'unchanged' } };
    // An expired or revoked node certificate would only collect the same refusal once per entry.
    if (!nodeError || !isTerminal(nodeError)) {
      const revoked = new Set(this.#revokedSerials);
      this.#revokedSerials.clear();
      try {
        const r = await this.#workloads.reconcile(credentialOf(identity), { revokedSerials: revoked });
        this.#noteEntries(r.entries);
        this.#entryList = r.entries;
        result.workloads = r.results;
        result.nextWorkloadAt = r.nextAt;
      } catch (e) {
        for (const s of revoked) this.#revokedSerials.add(s);
        result.workloadsError = explainRefusal(e);
      }
    }
    result.crl = await this.#refreshCrl(identity);
    await this.#refreshBundle(identity);
    await this.#refreshJwtBundle(identity);
    this.#publish();
    return result;
  }

  /**
   * The trust bundle, fetched with every pass (over TLS verified by the bundle held): a root
   * rotation adds a root, its finish drops the old one (CONTRACT "CA custody and rotation"), and
   * a renewal may be hours away. Taken only while the node's own certificate still leads to one of
   * its roots; the Workload API serves it at once, the workloads' files with their next SVID.
   */
  async #refreshBundle(identity: StoredNodeIdentity): Promise<void> {
    const fetch = this.#o.client.fetchBundle;
    if (!fetch) return;
    try {
      const pem = await fetch.call(
        this.#o.client,
        trustStorePem(identity.bundlePem, identity.certificateChainPem),
      );
      if (pem === identity.bundlePem) return;
      const problem = chainProblem(identity.certificateChainPem, pem);
      if (problem)
        throw new AgentError(
          'ERR_BAD_RESPONSE',
          `the new trust bundle does not hold our chain's root: ${problem}`,
        );
      this.#store.replaceBundle(pem);
    } catch (e) {
      this.#passError('bundle', e);
    }
  }

  /** A failure of one part of the pass, reported; it is tried again at the next pass. */
  #passError(scope: 'bundle' | 'jwt-bundle', e: unknown): void {
    this.#o.onEvent?.({
      type: 'error',
      scope,
      error: e instanceof Error ? e : new Error(String(e)),
      retryInMs: this.#o.syncIntervalMs ?? 30_000,
    });
  }

  /** Workload API: the JWT-SVID keys, fetched with every pass (a small document, an ETag'd one). */
  async #refreshJwtBundle(identity: StoredNodeIdentity): Promise<void> {
    const fetch = this.#o.client.fetchJwtBundle;
    if (!this.#o.workloadApi || !fetch) return;
    try {
      const { jwks } = await fetch.call(this.#o.client, { trustBundlePem: identity.bundlePem });
      this.#jwks = Buffer.from(jwks);
    } catch (e) {
      this.#passError('jwt-bundle', e);
    }
  }

  /**
   * Workload API: publishes what the agent holds now. Nothing is read back from the workloads'
   * files (they may be the workload's to write): the SVIDs come from memory, the bundle and CRLs
   * from the agent's own files.
   */
  #publish(revoked?: string): void {
    const api = this.#o.workloadApi;
    if (!api) return;
    if (revoked !== undefined) {
      api.publish({ revoked });
      return;
    }
    const identity = this.#loadQuietly();
    if (!identity) return;
    const crlPem = readOwnTextOrUndefined(this.#crl.path, { maxBytes: 256 * 1024 * 1024 }) ?? '';
    if (this.#crlDer?.pem !== crlPem) this.#crlDer = { pem: crlPem, der: crlsDer(crlPem) };
    for (const serial of this.#revokedHeld)
      if (![...this.#workloads.material.values()].some((m) => m.serial === serial))
        this.#revokedHeld.delete(serial);
    api.publish({
      ready: this.#entryList !== undefined,
      trustDomainId: trustDomainIdOf(identity.spiffeId),
      bundleDer: certificatesDer(identity.bundlePem),
      crls: this.#crlDer.der,
      ...(this.#jwks ? { jwks: this.#jwks } : {}),
      entries: servedEntries(this.#entryList ?? []),
      svids: this.#heldSvids.svids(this.#workloads.material, this.#revokedHeld),
    });
  }

  /**
   * Runs until `stopSignal` settles (see the class comment). Rejects on a refusal that retrying
   * cannot fix: no token for a first attestation, an expired node certificate without a token,
   * and a revoked node, whether the feed or a refusal of the CA tells it.
   */
  async run(stopSignal: Promise<unknown>): Promise<void> {
    const loop = new Loop(this.#o.timers);
    void stopSignal.then(() => loop.stop());
    const syncMs = this.#o.syncIntervalMs ?? 30_000;
    const maxSleepMs = this.#o.maxSleepMs ?? 3600_000;
    let follower: Promise<void> | undefined;
    let attempt = 0;
    let lastTarget = 0;
    try {
      while (!loop.done) {
        const now = () => this.#o.clock.now().getTime();
        const wakeAt: number[] = [now() + syncMs];
        let r: AgentRunResult;
        try {
          r = await this.runOnce();
        } catch (e) {
          if (isTerminal(e) || !(e instanceof Error)) throw e;
          const delayMs = retryDelay(e, attempt, this.#o.random);
          this.#o.onEvent?.({ type: 'retry', error: e, attempt: attempt++, delayMs });
          await loop.sleep(delayMs);
          continue;
        }
        if (r.nodeError) {
          if (isTerminal(r.nodeError)) throw r.nodeError;
          const delayMs = retryDelay(r.nodeError, attempt, this.#o.random);
          this.#o.onEvent?.({ type: 'retry', error: r.nodeError, attempt: attempt++, delayMs });
          wakeAt.push(now() + delayMs);
        } else if (r.node) {
          attempt = 0;
          const target = r.node.identity.refreshAt.getTime();
          wakeAt.push(target);
          if (target !== lastTarget) {
            lastTarget = target;
            this.#o.onEvent?.({ type: 'waiting', until: r.node.identity.refreshAt });
          }
        }
        if (r.workloadsError) {
          if (isRevocation(r.workloadsError)) throw r.workloadsError;
          this.#o.onEvent?.({
            type: 'error',
            scope: 'workloads',
            error: r.workloadsError,
            retryInMs: syncMs,
          });
        }
        if (r.nextWorkloadAt) wakeAt.push(r.nextWorkloadAt.getTime());
        if (r.crl.action === 'failed')
          this.#o.onEvent?.({ type: 'error', scope: 'crl', error: r.crl.error, retryInMs: syncMs });
        follower ??= this.#follow(loop);
        const ms = Math.min(Math.max(Math.min(...wakeAt) - now(), MIN_SLEEP_MS), maxSleepMs);
        await loop.sleep(ms, true);
      }
    } catch (e) {
      loop.fail(e as Error);
    } finally {
      loop.stop();
      await follower;
    }
    if (loop.fatal) {
      // The node is revoked or its certificate refused: its tokens are not served any longer, and
      // the Workload API refuses everyone until the agent is stopped.
      this.#jwtSvids.invalidate();
      this.#publish(loop.fatal.message);
      throw loop.fatal;
    }
  }

  #follow(loop: Loop): Promise<void> {
    const follower = new RevocationFollower({
      client: this.#o.client,
      state: this.#state,
      random: this.#o.random,
      waitSeconds: this.#o.feedWaitSeconds ?? 30,
      credential: () => {
        const identity = this.#loadQuietly();
        return identity && credentialOf(identity);
      },
      sleep: (ms) => loop.sleep(ms),
      signal: loop.signal,
      isDone: () => loop.done,
      onEvents: (events) => this.#onRevocations(events, loop),
      onError: (error, retryInMs) => {
        if (isRevocation(error)) {
          loop.fail(explainRefusal(error));
          return;
        }
        this.#o.onEvent?.({ type: 'error', scope: 'revocations', error: explainRefusal(error), retryInMs });
      },
    });
    return follower.run();
  }

  /** The feed reported `events`: new CRLs now, and the fate of this node and its workloads. */
  async #onRevocations(events: RevocationEvent[], loop: Loop): Promise<void> {
    const identity = this.#loadQuietly();
    if (!identity) return;
    const crl = await this.#refreshCrl(identity);
    if (crl.action === 'failed')
      this.#o.onEvent?.({
        type: 'error',
        scope: 'crl',
        error: crl.error,
        retryInMs: this.#o.syncIntervalMs ?? 30_000,
      });
    // An entry of this node created or deleted: list the entries now, not at the next sync.
    if (events.some((e) => e.kind === 'entry' && e.nodeId === identity.nodeId)) loop.wake();
    const mine = events.find((e) => e.kind === 'node' && e.nodeId === identity.nodeId);
    const ours = events.find((e) => e.serials.includes(identity.serial));
    if (mine || ours) {
      const e = (mine ?? ours)!;
      this.#o.onEvent?.({ type: 'revoked', event: e });
      const what = mine ? 'this node has been revoked' : 'the node certificate has been revoked';
      loop.fail(
        new AgentError(
          mine ? 'ERR_NODE_REVOKED' : 'ERR_CERT_REVOKED',
          `${what} (revocation event ${e.id}, reason ${e.reason}, at ${e.at.toISOString()}): the agent stops renewing`,
        ),
      );
      return;
    }
    const held = new Set(this.#workloadStore.names().map((n) => this.#workloadStore.load(n)?.serial));
    for (const m of this.#workloads.material.values()) held.add(m.serial);
    const hit = events.flatMap((e) => e.serials).filter((s) => held.has(s));
    if (hit.length > 0) {
      for (const s of hit) {
        this.#revokedSerials.add(s);
        this.#revokedHeld.add(s);
      }
      loop.wake();
    }
    this.#publish();
  }

  async #refreshCrl(identity: StoredNodeIdentity): Promise<AgentRunResult['crl']> {
    try {
      const r = await this.#crl.refresh(this.#o.client, identity.bundlePem);
      if (r.action === 'updated') this.#o.onEvent?.({ type: 'crl', result: r });
      return r;
    } catch (e) {
      return { action: 'failed', error: e instanceof Error ? e : new Error(String(e)) };
    }
  }

  #loadQuietly(): StoredNodeIdentity | undefined {
    try {
      return this.#store.load();
    } catch {
      return undefined;
    }
  }
}

function credentialOf(identity: StoredNodeIdentity): NodeCredential {
  return {
    certificateChainPem: identity.certificateChainPem,
    keyPem: identity.keyPem,
    trustBundlePem: identity.bundlePem,
  };
}

function retryDelay(e: Error, attempt: number, random: () => number): number {
  const retryAfter = e instanceof CaClientError ? (e.retryAfterMs ?? 0) : 0;
  return Math.max(backoffDelay(attempt, random), retryAfter, MIN_SLEEP_MS);
}

/**
 * The daemon's shared state: stop (signal or fatal refusal), the abort signal of the long-poll,
 * and sleeps that a stop, or for the main loop a revocation, cuts short.
 */
class Loop {
  done = false;
  fatal?: Error;
  readonly #abort = new AbortController();
  readonly #sleepers = new Set<{ wakeable: boolean; wake(): void }>();
  /** A wake() that came while the main loop was busy: its next sleep returns at once. */
  #woken = false;

  constructor(readonly timers: Timers) {}

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  stop(): void {
    if (this.done) return;
    this.done = true;
    this.#abort.abort();
    for (const s of [...this.#sleepers]) s.wake();
  }

  fail(e: Error): void {
    this.fatal ??= e;
    this.stop();
  }

  /** Wakes the main loop's sleep (not the feed's backoff). */
  wake(): void {
    const sleepers = [...this.#sleepers].filter((s) => s.wakeable);
    if (sleepers.length === 0) this.#woken = true;
    for (const s of sleepers) s.wake();
  }

  sleep(ms: number, wakeable = false): Promise<void> {
    if (this.done) return Promise.resolve();
    if (wakeable && this.#woken) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const sleeper = {
        wakeable,
        wake: () => {
          this.timers.clearTimeout(handle);
          this.#sleepers.delete(sleeper);
          resolve();
        },
      };
      const handle = this.timers.setTimeout(() => sleeper.wake(), ms);
      this.#sleepers.add(sleeper);
    });
  }
}
