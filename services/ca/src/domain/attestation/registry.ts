import type { Attestor } from './attestor';
import { type JoinTokenEvidence, joinTokenAttestor } from './join-token-attestor';
import type { X509popEvidence } from './x509pop-attestor';

/**
 * Every attestation method Baton implements and the evidence its attestor verifies. The HTTP edge
 * has one reader per key (http/attestation-evidence.ts, a mapped type over this interface), so a
 * method added here without a reader does not compile.
 */
export interface EvidenceByMethod {
  join_token: JoinTokenEvidence;
  x509pop: X509popEvidence;
}

export type AttestationMethod = keyof EvidenceByMethod;
export type KnownEvidence = EvidenceByMethod[AttestationMethod];

/** An attestor of one of the methods above, its name tied to the type of its evidence. */
export type KnownAttestor = {
  [M in AttestationMethod]: Attestor<EvidenceByMethod[M]> & { readonly method: M };
}[AttestationMethod];

/** The attestation methods a server offers; names are matched exactly (case-sensitive). */
export function defaultAttestors(extra: KnownAttestor[] = []): ReadonlyMap<string, Attestor> {
  return new Map<string, Attestor>([joinTokenAttestor, ...extra].map((a) => [a.method, a]));
}
