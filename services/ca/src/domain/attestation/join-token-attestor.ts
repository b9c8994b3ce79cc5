import { invalidToken, type ParsedToken, secretMatches } from '../join-token';
import type { Attestor } from './attestor';

/** The evidence of a join_token attestation: a token that parsed (parseJoinToken). */
export interface JoinTokenEvidence {
  readonly token: ParsedToken;
}

/**
 * join_token: the token must parse (the edge's parseJoinToken), name a root of the bundle, exist, match
 * its secret (constant time), be unexpired and have a use left. Every failure is the same 401
 * ERR_TOKEN_INVALID, so a caller cannot tell an unknown token from an expired or spent one.
 */
export const joinTokenAttestor: Attestor<JoinTokenEvidence> & { readonly method: 'join_token' } = {
  method: 'join_token',
  async verify(deps, { token: t }) {
    if (!deps.pins.includes(t.pin)) throw invalidToken();
    const record = await deps.repos.tokens.findById(t.id);
    if (!record || !secretMatches(t.secret, record)) throw invalidToken();
    if (record.usesLeft < 1 || record.expiresAt.getTime() <= deps.clock.now().getTime()) throw invalidToken();
    return {
      method: 'join_token',
      nodeId: record.nodeName,
      role: record.role,
      certTtlMs: record.nodeTtlMs,
      auditDetails: { token_id: record.id },
      commit: async (tx) => {
        // The atomic spend: re-checks uses and expiry under the row lock.
        if (!(await tx.tokens.consume(record.id, deps.clock.now()))) throw invalidToken();
      },
    };
  },
};
