import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { base32 } from '../pki/base32';
import type { Clock } from './clock';
import { BatonError } from '../ground/errors';
import { type AuditContext, auditEvent } from './audit';
import type { NodeRole, Storage, TokenRecord, TokenRepository } from './ports';

/**
 * CONTRACT "Join tokens": `BATON1-<pin>-<id>.<secret>`. The pin (base32 SHA-256 of the root's
 * SubjectPublicKeyInfo) lets a new node check the CA before it sends anything, as SwarmKit's
 * join tokens do; the id finds the record; the 256-bit secret is stored only as its SHA-256.
 */
export const TOKEN_PREFIX = 'BATON1';
const TOKEN_RE = /^BATON1-([a-z2-7]{52})-([0-9a-f]{16})\.([a-z2-7]{52})$/;

export interface ParsedToken {
  pin: string;
  id: string;
  secret: string;
}

/** A token that does not even parse is refused like any other bad token (401, not saying why). */
export function parseJoinToken(token: string): ParsedToken {
  const m = TOKEN_RE.exec(token);
  if (!m) throw invalidToken();
  return { pin: m[1]!, id: m[2]!, secret: m[3]! };
}

export const invalidToken = (): BatonError => new BatonError('ERR_TOKEN_INVALID', 'invalid join token');

export const hashSecret = (secret: string): Buffer => createHash('sha256').update(secret, 'utf8').digest();

/** Constant-time comparison of the presented secret with the stored hash. */
export function secretMatches(secret: string, record: Pick<TokenRecord, 'secretHash'>): boolean {
  const h = hashSecret(secret);
  return h.length === record.secretHash.length && timingSafeEqual(h, record.secretHash);
}

export interface CreateTokenParams {
  role: NodeRole;
  ttlMs: number;
  uses: number;
  nodeName?: string | null;
  nodeTtlMs?: number | null;
  createdBy: string;
  pin: string;
}

export const NODE_NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;

export async function createJoinToken(
  deps: { clock: Clock; tokens: TokenRepository },
  p: CreateTokenParams,
): Promise<{ token: string; record: TokenRecord }> {
  if (!Number.isInteger(p.uses) || p.uses < 1 || p.uses > 10_000) {
    throw new BatonError('ERR_BAD_REQUEST', 'a token has from 1 to 10000 uses (an integer)');
  }
  if (p.nodeName != null && !NODE_NAME_RE.test(p.nodeName)) {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      'node name: lowercase letters, digits, ".", "-", "_" (at most 63)',
    );
  }
  if (p.nodeName != null && p.uses !== 1) {
    throw new BatonError('ERR_BAD_REQUEST', 'a token bound to a node name has exactly one use');
  }
  const now = deps.clock.now();
  const id = randomBytes(8).toString('hex');
  const secret = base32(randomBytes(32));
  const record: TokenRecord = {
    id,
    secretHash: hashSecret(secret),
    role: p.role,
    expiresAt: new Date(now.getTime() + p.ttlMs),
    usesAllowed: p.uses,
    usesLeft: p.uses,
    nodeName: p.nodeName ?? null,
    nodeTtlMs: p.nodeTtlMs ?? null,
    createdBy: p.createdBy,
    createdAt: now,
  };
  await deps.tokens.insert(record);
  return { token: `${TOKEN_PREFIX}-${p.pin}-${id}.${secret}`, record };
}

/** Creates a token and its audit row in one transaction (the secret is never in the audit row). */
export async function issueJoinToken(
  deps: { clock: Clock; storage: Storage },
  p: CreateTokenParams,
  audit: AuditContext,
): Promise<{ token: string; record: TokenRecord }> {
  return deps.storage.transaction(async (tx) => {
    const created = await createJoinToken({ clock: deps.clock, tokens: tx.tokens }, p);
    const r = created.record;
    await tx.audit.append(
      auditEvent(audit, deps.clock.now(), 'token.created', `token/${r.id}`, 'success', {
        role: r.role,
        uses: r.usesAllowed,
        expires_at: r.expiresAt.toISOString(),
        node_name: r.nodeName,
      }),
    );
    return created;
  });
}
