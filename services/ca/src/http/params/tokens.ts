import { DAY, MINUTE } from '../../domain/duration';
import type { CreateTokenParams } from '../../domain/join-token';
import { NODE_ROLES } from '../../domain/ports';
import { MAX_TTL } from '../../ground/ttl';
import { jsonObject, oneOf, optionalDurationMs, optionalInt, optionalString } from '../validate';

/** POST /v1/admin/tokens as the edge reads it; the route adds who creates it and the root pin. */
export type TokenBodyParams = Omit<CreateTokenParams, 'createdBy' | 'pin'>;

/**
 * The body of POST /v1/admin/tokens in this order (the first refusal wins): role, ttl, uses,
 * node_name, node_ttl, each read for its JSON type and bounds; the domain (createJoinToken) then
 * checks the node name and that a bound token has one use.
 */
export function readCreateTokenParams(parsedBody: unknown): TokenBodyParams {
  const b = jsonObject(parsedBody);
  return {
    role: oneOf(b, 'role', NODE_ROLES),
    ttlMs: optionalDurationMs(b, 'ttl', MINUTE, 30 * DAY) ?? 15 * MINUTE,
    uses: optionalInt(b, 'uses', 1, 10_000) ?? 1,
    nodeName: optionalString(b, 'node_name', 63) ?? null,
    nodeTtlMs: optionalDurationMs(b, 'node_ttl', MINUTE, MAX_TTL.node) ?? null,
  };
}
