import type { Knex } from 'knex';
import type { NonceRepository, TokenRecord, TokenRepository } from '../../domain/ports';
import { db, toBuffer } from './db-errors';
import { type NodeRow, toNode } from './node-repository';
import { runPrepared } from './prepared-statement';

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

/** The node columns of TOKEN_FOR_ATTESTATION, prefixed: null when the token binds no existing node. */
interface BoundNodeColumns {
  n_id: string | null;
  n_role: NodeRow['role'];
  n_status: NodeRow['status'];
  n_attestation_method: string;
  n_cert_ttl_ms: string | number | null;
  n_created_at: Date;
  n_last_attested_at: Date;
  n_last_seen_at: Date | null;
  n_revoked_at: Date | null;
  n_revocation_reason: number | null;
}

const boundNodeRow = (r: BoundNodeColumns): NodeRow => ({
  id: r.n_id!,
  role: r.n_role,
  status: r.n_status,
  attestation_method: r.n_attestation_method,
  cert_ttl_ms: r.n_cert_ttl_ms,
  created_at: r.n_created_at,
  last_attested_at: r.n_last_attested_at,
  last_seen_at: r.n_last_seen_at,
  revoked_at: r.n_revoked_at,
  revocation_reason: r.n_revocation_reason,
});

/**
 * The first round trip of a join-token attestation: the token and the node its name binds. A named
 * prepared statement with its columns listed (a migration must not change its result type).
 */
const TOKEN_FOR_ATTESTATION = `
select t.id, t.secret_hash, t.role, t.expires_at, t.uses_allowed, t.uses_left, t.node_name, t.node_ttl_ms,
       t.created_by, t.created_at,
       n.id as n_id, n.role as n_role, n.status as n_status, n.attestation_method as n_attestation_method,
       n.cert_ttl_ms as n_cert_ttl_ms, n.created_at as n_created_at, n.last_attested_at as n_last_attested_at,
       n.last_seen_at as n_last_seen_at, n.revoked_at as n_revoked_at, n.revocation_reason as n_revocation_reason
from join_tokens t left join nodes n on n.id = t.node_name
where t.id = ?`;

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
    findForAttestation: (id) =>
      db(async () => {
        const [row] = await runPrepared<TokenRow & BoundNodeColumns>(
          k,
          'token_for_attestation',
          TOKEN_FOR_ATTESTATION,
          [id],
        );
        if (!row) return null;
        return { token: toToken(row), boundNode: row.n_id === null ? null : toNode(boundNodeRow(row)) };
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
    // An expired nonce can never be used again (the attestation statement checks expires_at), so its row is only
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
