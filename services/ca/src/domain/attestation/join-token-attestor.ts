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
    // One read (none for a multi-use token read moments ago: deps.tokens): the token, and the node
    // its name binds (the leaf's role and lifetime are that node's when it exists), so that the
    // attestation is this read and one statement.
    const found = await (deps.tokens ? deps.tokens(t.id) : deps.repos.tokens.findForAttestation(t.id));
    if (!found || !secretMatches(t.secret, found.token)) throw invalidToken();
    const record = found.token;
    if (record.usesLeft < 1 || record.expiresAt.getTime() <= deps.clock.now().getTime()) throw invalidToken();
    return {
      method: 'join_token',
      nodeId: record.nodeName,
      role: record.role,
      certTtlMs: record.nodeTtlMs,
      auditDetails: { token_id: record.id },
      // Spent by the statement that records the certificate, which re-checks uses and expiry
      // under the token's row lock.
      spend: { kind: 'token', tokenId: record.id },
      ...(record.nodeName === null ? {} : { node: found.boundNode }),
    };
  },
};
