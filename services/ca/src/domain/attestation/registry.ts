import type { Attestor } from './attestor';
import { joinTokenAttestor } from './join-token-attestor';

/** The attestation methods a server offers; names are matched exactly (case-sensitive). */
export function defaultAttestors(extra: Attestor[] = []): ReadonlyMap<string, Attestor> {
  return new Map([joinTokenAttestor, ...extra].map((a) => [a.method, a]));
}
