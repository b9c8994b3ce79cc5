import { invalidToken, parseJoinToken, secretMatches } from '../join-token';
import type { Attestor } from './attestor';

/**
 * join_token: the token must parse, name our root's pin, exist, match its secret (constant time),
 * be unexpired and have a use left. Every failure is the same 401 ERR_TOKEN_INVALID, so a caller
 * cannot tell an unknown token from an expired or spent one.
 */
export const joinTokenAttestor: Attestor = {
  method: 'join_token',
  async verify(deps, payload) {
    const t = parseJoinToken(payload.token);
    if (t.pin !== deps.pin) throw invalidToken();
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
