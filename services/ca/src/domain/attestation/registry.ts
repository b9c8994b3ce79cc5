import type { Attestor } from './attestor';
import { type JoinTokenEvidence, joinTokenAttestor } from './join-token-attestor';
import { type TpmChallengeEvidence, type TpmEvidence, tpmAttestor } from './tpm-attestor';
import type { X509popEvidence } from './x509pop-attestor';

/**
 * Every attestation method Baton implements and the evidence its attestor verifies. The HTTP edge
 * has one reader per key (http/attestation-evidence.ts, a mapped type over this interface), so a
 * method added here without a reader does not compile.
 */
export interface EvidenceByMethod {
  join_token: JoinTokenEvidence;
  tpm: TpmEvidence;
  x509pop: X509popEvidence;
}

/**
 * What each method's challenge request brings (POST /v1/attest/challenge), read by the edge's
 * challenge readers: `undefined` for a method whose challenge is a bare nonce (x509pop) or that
 * takes none (join_token: its attestor has no `challenge`).
 */
export interface ChallengeEvidenceByMethod {
  join_token: undefined;
  tpm: TpmChallengeEvidence;
  x509pop: undefined;
}

export type AttestationMethod = keyof EvidenceByMethod;
export type KnownEvidence = EvidenceByMethod[AttestationMethod];

/** An attestor of one of the methods above, its name tied to the type of its evidence. */
export type KnownAttestor = {
  [M in AttestationMethod]: Attestor<EvidenceByMethod[M], ChallengeEvidenceByMethod[M]> & {
    readonly method: M;
  };
}[AttestationMethod];

/**
 * The attestation methods a server offers; names are matched exactly (case-sensitive). join_token
 * and tpm always (what admits a TPM is in the database: enrollments and manufacturer CAs), x509pop
 * when configured.
 */
export function defaultAttestors(extra: KnownAttestor[] = []): ReadonlyMap<string, Attestor> {
  return new Map<string, Attestor>(
    [joinTokenAttestor, tpmAttestor, ...extra].map((a) => [a.method, a as Attestor]),
  );
}
