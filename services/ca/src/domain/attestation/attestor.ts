import { BatonError } from '../../ground/errors';
import type { Clock } from '../clock';
import { invalidToken } from '../join-token';
import type { EvidenceSpend, NodeRecord, NodeRole, Repositories } from '../ports';
import type { TokenLookup } from '../token-cache';

export type { EvidenceSpend } from '../ports';

/**
 * What a successful attestation proves: who the node is and what it may be issued.
 * Attestation yields policy, never a certificate (smallstep sign_options; SPIRE node attestors).
 */
export interface IssuancePolicy {
  method: string;
  /** The node id to issue for: bound by the token or derived from the evidence; null: a new id. */
  nodeId: string | null;
  role: NodeRole;
  /** Node certificate lifetime requested by the evidence (token --node-ttl); null: default. */
  certTtlMs: number | null;
  /**
   * What the evidence spends (a token use, a nonce), as data: the one statement that records the
   * certificate spends it (IssuanceRepository.recordAttestation), so that a refused issuance spends
   * nothing and an issued certificate always spent its evidence, in one round trip.
   */
  spend: EvidenceSpend;
  /**
   * The record of node `nodeId` if `verify` read it with the evidence (null: no such node yet), so
   * that the attestation does not read it again; absent: not read.
   */
  node?: NodeRecord | null;
  /** What the audit row of this attestation records about the evidence (never a secret). */
  auditDetails?: Record<string, unknown>;
}

export interface AttestorDeps {
  clock: Clock;
  repos: Repositories;
  /**
   * Base32 SHA-256 of the SPKI of each root in the trust bundle: the current one, and during a root
   * rotation the old one too (tokens made before it keep working until the finish).
   */
  pins: readonly string[];
  /**
   * The DER of the CSR being attested, so that evidence can be bound to the requested key: x509pop
   * signs its hash, and a stolen nonce and signature then cannot be replayed with another key. It
   * is parsed and within the key policy; its own signature is verified after `verify` accepts the
   * evidence and before anything is spent (domain/node-identity.ts), so `verify` must not write.
   */
  csrDer: Buffer;
  /**
   * How the join-token attestor reads a token: a cache the recording statement re-checks
   * (domain/token-cache.ts). Default: `repos.tokens.findForAttestation`.
   */
  tokens?: TokenLookup;
}

/** A server nonce for methods that prove possession (x509pop, tpm); recorded in the database, not in memory. */
export interface AttestationChallenge {
  nonce: string;
  expiresAt: Date;
  /**
   * tpm: TPM2_MakeCredential's output for the node's EK and AK (pki/tpm/make-credential.ts), which
   * only that TPM can activate. Absent for methods whose challenge is the nonce alone.
   */
  credential?: { idObject: Buffer; encryptedSecret: Buffer };
}

/**
 * One attestation method. `E` is its evidence, typed: the HTTP edge reads it from the request
 * (http/attestation-evidence.ts, one reader per method), so an attestor never sees a wire field.
 *
 * A bare `Attestor` (the registry's maps) is one whose evidence type is not known here: the edge
 * narrows it to a `KnownAttestor` of registry.ts, whose method names its evidence type, before it
 * reads any evidence (http/attestation-evidence.ts).
 */
export interface Attestor<E = unknown, C = unknown> {
  readonly method: string;
  /** Checks the evidence; throws BatonError (ERR_TOKEN_INVALID, ERR_ATTESTATION_FAILED …). */
  verify(deps: AttestorDeps, evidence: E): Promise<IssuancePolicy>;
  /**
   * Present on methods that need a fresh server nonce (POST /v1/attest/challenge). `evidence` is
   * what the challenge request brings, read by the edge (x509pop: nothing; tpm: the EK and AK).
   */
  challenge?(deps: Pick<AttestorDeps, 'clock' | 'repos'>, evidence: C): Promise<AttestationChallenge>;
}

/**
 * Evidence the edge read, bound to the attestor that checks it: what an attestation use case takes
 * (the evidence type stays between the reader and its attestor).
 */
export interface PresentedEvidence {
  readonly method: string;
  verify(deps: AttestorDeps): Promise<IssuancePolicy>;
}

export function presentEvidence<E>(attestor: Attestor<E>, evidence: E): PresentedEvidence {
  return { method: attestor.method, verify: (deps) => attestor.verify(deps, evidence) };
}

/**
 * The refusal of evidence that could not be spent when the certificate was to be recorded (spent
 * meanwhile by another request, or expired): a token's is the same 401 as every bad token.
 */
export function unspendableEvidence(spend: EvidenceSpend): BatonError {
  return spend.kind === 'token'
    ? invalidToken()
    : new BatonError(
        'ERR_ATTESTATION_FAILED',
        'the nonce is unknown, expired or already used: request a new challenge',
      );
}

/** A challenge request the edge read, bound to the attestor that answers it (POST /v1/attest/challenge). */
export interface PresentedChallenge {
  readonly method: string;
  challenge(deps: Pick<AttestorDeps, 'clock' | 'repos'>): Promise<AttestationChallenge>;
}

/**
 * Runs `fn` and gives a refusal it throws the audit details `details` (BatonError.auditDetails)
 * unless it has some: an attestor knows what the evidence is about (an EK identifier) before it
 * knows whether the evidence holds, and the refusal's audit row should say it.
 */
export async function withAuditDetails<T>(
  details: Readonly<Record<string, unknown>>,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof BatonError && e.auditDetails === undefined) {
      throw new BatonError(e.code, e.message, { cause: e.cause, auditDetails: details });
    }
    throw e;
  }
}
