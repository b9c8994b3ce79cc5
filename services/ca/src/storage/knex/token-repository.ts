import type { Knex } from 'knex';
import type { NonceRepository, TokenRecord, TokenRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';

interface TokenRow {
  id: string;
  secret_hash: Uint8Array;
  role: TokenRecord['role'];
  expires_at: Date;
  uses_allowed: number;
  uses_left: number;
  node_name: string | null;
  node_ttl_ms: string | number | null;
  created_by: string;
  created_at: Date;
}

const toToken = (r: TokenRow): TokenRecord => ({
  id: r.id,
  secretHash: toBuffer(r.secret_hash),
  role: r.role,
  expiresAt: new Date(r.expires_at),
  usesAllowed: r.uses_allowed,
  usesLeft: r.uses_left,
  nodeName: r.node_name,
  nodeTtlMs: r.node_ttl_ms === null ? null : Number(r.node_ttl_ms),
  createdBy: r.created_by,
  createdAt: new Date(r.created_at),
});

export function knexTokenRepository(k: Knex | Knex.Transaction): TokenRepository {
  return {
    insert: (t) =>
      db(async () => {
        await k('join_tokens').insert({
          id: t.id,
          secret_hash: t.secretHash,
          role: t.role,
          expires_at: t.expiresAt,
          uses_allowed: t.usesAllowed,
          uses_left: t.usesLeft,
          node_name: t.nodeName,
          node_ttl_ms: t.nodeTtlMs,
          created_by: t.createdBy,
          created_at: t.createdAt,
        });
      }),
    findById: (id) =>
      db(async () => {
        const row = await k<TokenRow>('join_tokens').where({ id }).first();
        return row ? toToken(row) : null;
      }),
    // One conditional UPDATE: PostgreSQL's row lock serializes concurrent decrements, and the
    // re-checked WHERE (uses_left > 0) after the lock makes a 1-use token succeed exactly once.
    consume: (id, now) =>
      db(async () => {
        const rows = (await k('join_tokens')
          .where({ id })
          .andWhere('uses_left', '>', 0)
          .andWhere('expires_at', '>', now)
          .decrement('uses_left', 1)
          .returning('*')) as TokenRow[];
        return rows[0] ? toToken(rows[0]) : null;
      }),
    spendBoundTo: (nodeName) =>
      db(async () =>
        k('join_tokens')
          .where({ node_name: nodeName })
          .andWhere('uses_left', '>', 0)
          .update({ uses_left: 0 }),
      ),
  };
}

export function knexNonceRepository(k: Knex | Knex.Transaction): NonceRepository {
  return {
    insert: (nonce, method, expiresAt) =>
      db(async () => void (await k('attestation_nonces').insert({ nonce, method, expires_at: expiresAt }))),
    use: (nonce, method, now) =>
      db(async () => {
        const n = await k('attestation_nonces')
          .where({ nonce, method })
          .whereNull('used_at')
          .andWhere('expires_at', '>', now)
          .update({ used_at: now });
        return n === 1;
      }),
    // An expired nonce can never be used again (`use` checks expires_at), so its row is only
    // weight; in batches, so that one purge after a flood of challenges holds no long lock.
    // Counted in SQL: knex-pglite answers a DELETE with its raw result, not the affected-row count.
    purgeExpired: (now, limit) =>
      db(async () => {
        const r = (await k.raw(
          `with purged as (
             delete from attestation_nonces
             where nonce in (select nonce from attestation_nonces where expires_at <= ? limit ?)
             returning 1
           )
           select count(*)::int as n from purged`,
          [now, limit],
        )) as { rows: { n: number }[] };
        return Number(r.rows[0]!.n);
      }),
  };
}
