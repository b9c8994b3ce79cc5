import { AgentError } from './agent-error';
import { checkIssued, type NewNodeIdentity, type NodeAttestor, tokenAttestor } from './bootstrap';
import { CaClientError, type NodeCaApi } from './ca-client';
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../../common/src/csr';
import type { NodeIdentityStorage, StoredNodeIdentity } from './node-identity-store';
import { parseCertificates } from './pem';
import { backoffDelay, nextRefreshAt, rotationState } from './rotation-strategy';

/**
 * The node identity rotator (after SPIRE's pkg/agent/svid/rotator.go and smallstep's ca/renew.go).
 * `runOnce()` does what is due now; `run()` repeats it at the server's refresh_at until stopped.
 *
 *   no identity        → attest (a join token's pinned bootstrap, or the TPM), or refuse without
 *                        a way to attest
 *   valid              → nothing until refresh_at
 *   due                → renew over mTLS with a new key
 *   expired            → re-attest the same way, or refuse: an expired certificate cannot renew
 *
 * The previous certificate is never removed before its successor is verified and stored
 * (STYLE §9), and no refusal deletes anything: a node that still holds a valid certificate keeps
 * it, even when the CA refuses to renew it.
 */

export interface NodeIdentitySummary {
  nodeId: string;
  serial: string;
  spiffeId: string;
  expiresAt: Date;
  /** When this rotator will renew: the server's refresh_at, clamped (rotation-strategy.ts). */
  refreshAt: Date;
}

export type RotationAction = 'attested' | 'renewed' | 're-attested' | 'none';

export interface RunOnceResult {
  action: RotationAction;
  identity: NodeIdentitySummary;
}

export type RotatorEvent =
  | { type: 'attested' | 'renewed' | 're-attested'; identity: NodeIdentitySummary }
  | { type: 'retry'; error: Error & { code?: string }; attempt: number; delayMs: number }
  | { type: 'waiting'; until: Date };

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Unref'd: a rotator alone never keeps its host process alive (the CLI passes ref'd timers). */
export const unrefTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface RotatorOptions {
  clock: { now(): Date };
  client: NodeCaApi;
  store: NodeIdentityStorage;
  /** In [0, 1); jitter for backoff and for a refresh time the server did not give. */
  random?: () => number;
  /** A join token: needed for the first attestation and after expiry; ignored otherwise. */
  token?: string;
  /**
   * How to attest instead of a token (the TPM: tpm/tpm-attestor.ts), for the first attestation and
   * after expiry. Takes precedence over `token`.
   */
  attestor?: NodeAttestor;
  timers?: Timers;
  onEvent?: (event: RotatorEvent) => void;
  /**
   * The longest single sleep of run(). Timers do not count time a machine spends suspended, so
   * the clock is looked at again at least this often. Default one hour.
   */
  maxSleepMs?: number;
}

/** Refusals that retrying cannot fix: run() stops on them. */
const TERMINAL = new Set([
  'ERR_TOKEN_REQUIRED',
  'ERR_TOKEN_INVALID',
  'ERR_PIN_MISMATCH',
  'ERR_PIN_REQUIRED',
  // The CA does not admit this TPM (unknown, or not enrolled): an admin must act first.
  'ERR_ATTESTATION_FAILED',
  // tpm2-tools is not installed, or the TCTI reaches no TPM: the host must be fixed first.
  'ERR_TPM_TOOLS_MISSING',
  'ERR_TPM_UNAVAILABLE',
  'ERR_CERT_EXPIRED',
  'ERR_CERT_SUPERSEDED',
  'ERR_CERT_REVOKED',
  'ERR_NODE_REVOKED',
  'ERR_IDENTITY_CORRUPT',
  // The agent directory, or a directory on the way to it, can be changed by another user.
  'ERR_UNSAFE_PATH',
]);

export function isTerminal(e: unknown): boolean {
  return (e instanceof AgentError || e instanceof CaClientError) && TERMINAL.has(e.code);
}

/** Renewal refusals, worded for the operator of the node. */
const RENEW_REFUSALS: Record<string, string> = {
  ERR_CERT_SUPERSEDED:
    'the CA refused to renew: the node certificate was replaced by one this agent does not have (another agent on this directory, or a lost answer); a new token is needed',
  ERR_CERT_REVOKED: 'the CA refused to renew: the node certificate has been revoked',
  ERR_NODE_REVOKED: 'the CA refused to renew: this node has been revoked',
  ERR_CERT_EXPIRED: 'the CA says the node certificate has expired: a new token is needed',
};

const MIN_SLEEP_MS = 1000;

export class NodeRotator {
  readonly #o: Required<Omit<RotatorOptions, 'token' | 'attestor' | 'onEvent'>> &
    Pick<RotatorOptions, 'onEvent'>;
  readonly #attestor?: NodeAttestor;
  /** A refresh time computed locally is kept per serial, so that its jitter does not move. */
  #plan?: { serial: string; at: Date };

  constructor(options: RotatorOptions) {
    this.#o = {
      ...options,
      random: options.random ?? Math.random,
      timers: options.timers ?? unrefTimers,
      maxSleepMs: options.maxSleepMs ?? 3600_000,
    };
    this.#attestor =
      options.attestor ?? (options.token ? tokenAttestor(options.client, options.token) : undefined);
  }

  /** Does what is due now: attest, renew, re-attest, or nothing. */
  async runOnce(): Promise<RunOnceResult> {
    const current = this.#o.store.load();
    if (!current) {
      if (!this.#attestor) throw new AgentError('ERR_TOKEN_REQUIRED', 'no node identity yet: pass --token');
      return this.#attest('attested');
    }
    const refreshAt = this.#refreshAt(current);
    const state = rotationState(
      this.#o.clock.now(),
      { notBefore: current.notBefore, notAfter: current.notAfter, refreshAt },
      this.#o.random,
    );
    if (state === 'valid') return { action: 'none', identity: summary(current, refreshAt) };
    if (state === 'expired') {
      if (!this.#attestor)
        throw new AgentError('ERR_CERT_EXPIRED', 'the node certificate has expired: a new token is needed');
      return this.#attest('re-attested');
    }
    return this.#renew(current);
  }

  /**
   * Runs until `stopSignal` settles: runOnce, then sleep until the next refresh time, or after a
   * failure for backoffDelay (at least the server's Retry-After). An operation in progress when
   * the signal comes is finished and stored first. Rejects on a terminal refusal (isTerminal).
   */
  async run(stopSignal: Promise<unknown>): Promise<void> {
    let stopped = false;
    let wake: (() => void) | undefined;
    void stopSignal.then(() => {
      stopped = true;
      wake?.();
    });
    let attempt = 0;
    let lastTarget = 0;
    while (!stopped) {
      let delayMs: number;
      try {
        const { identity } = await this.runOnce();
        attempt = 0;
        delayMs = identity.refreshAt.getTime() - this.#o.clock.now().getTime();
        if (identity.refreshAt.getTime() !== lastTarget) {
          lastTarget = identity.refreshAt.getTime();
          this.#o.onEvent?.({ type: 'waiting', until: identity.refreshAt });
        }
      } catch (e) {
        if (isTerminal(e) || !(e instanceof Error)) throw e;
        const retryAfter = e instanceof CaClientError ? (e.retryAfterMs ?? 0) : 0;
        delayMs = Math.max(backoffDelay(attempt, this.#o.random), retryAfter, MIN_SLEEP_MS);
        this.#o.onEvent?.({ type: 'retry', error: e, attempt, delayMs });
        attempt++;
      }
      if (stopped) break;
      const ms = Math.min(Math.max(delayMs, MIN_SLEEP_MS), this.#o.maxSleepMs);
      await new Promise<void>((resolve) => {
        const handle = this.#o.timers.setTimeout(() => resolve(), ms);
        wake = () => {
          this.#o.timers.clearTimeout(handle);
          resolve();
        };
      });
      wake = undefined;
    }
  }

  async #attest(action: 'attested' | 're-attested'): Promise<RunOnceResult> {
    const identity = await this.#attestor!.attest();
    return this.#store(action, identity);
  }

  async #renew(current: StoredNodeIdentity): Promise<RunOnceResult> {
    const keys = await generateKeyPair();
    const csr = await createCsr(keys);
    let identity: NewNodeIdentity;
    try {
      const issued = await this.#o.client.renew({
        csrPem: csr.pem,
        certificateChainPem: current.certificateChainPem,
        keyPem: current.keyPem,
        trustBundlePem: current.bundlePem,
      });
      identity = { ...issued, keyPem: await exportPrivateKeyPem(keys.privateKey) };
    } catch (e) {
      const code = e instanceof CaClientError ? e.code : undefined;
      // Expired (clock skew with the CA) or superseded: only a new attestation helps. Never after
      // a revocation: a token left in the agent's arguments must not undo an operator's decision
      // (and the CA refuses a revoked node's TPM until it is enrolled again).
      if ((code === 'ERR_CERT_EXPIRED' || code === 'ERR_CERT_SUPERSEDED') && this.#attestor)
        return this.#attest('re-attested');
      if (code && RENEW_REFUSALS[code]) throw new AgentError(code, RENEW_REFUSALS[code], { cause: e });
      throw e;
    }
    checkIssued(identity);
    if (identity.spiffeId !== current.spiffeId)
      throw new AgentError('ERR_BAD_RESPONSE', 'the CA renewed the certificate for another identity');
    return this.#store('renewed', identity);
  }

  #store(action: 'attested' | 'renewed' | 're-attested', identity: NewNodeIdentity): RunOnceResult {
    this.#o.store.save(identity);
    // The certificate is the truth for its validity (expires_at has the record's milliseconds).
    const leaf = parseCertificates(identity.certificateChainPem)[0]!;
    const notBefore = new Date(leaf.validFrom);
    const notAfter = new Date(leaf.validTo);
    const refreshAt = nextRefreshAt({ notBefore, notAfter, refreshAt: identity.refreshAt }, this.#o.random);
    const result = { action, identity: summary({ ...identity, notAfter }, refreshAt) };
    this.#o.onEvent?.({ type: action, identity: result.identity });
    return result;
  }

  #refreshAt(current: StoredNodeIdentity): Date {
    const cert = { notBefore: current.notBefore, notAfter: current.notAfter, refreshAt: current.refreshAt };
    if (current.refreshAt) return nextRefreshAt(cert, this.#o.random);
    if (this.#plan?.serial !== current.serial)
      this.#plan = { serial: current.serial, at: nextRefreshAt(cert, this.#o.random) };
    return this.#plan.at;
  }
}

function summary(
  i: { nodeId: string; serial: string; spiffeId: string; notAfter: Date },
  refreshAt: Date,
): NodeIdentitySummary {
  return { nodeId: i.nodeId, serial: i.serial, spiffeId: i.spiffeId, expiresAt: i.notAfter, refreshAt };
}
