import type { Knex } from 'knex';
import type { NodeRecord, NodeRepository } from '../../domain/ports';
import { db } from './db-errors';
import { pageOf } from './keyset';
import { runPrepared } from './prepared-statement';

export interface NodeRow {
  id: string;
  role: NodeRecord['role'];
  status: NodeRecord['status'];
  attestation_method: string;
  cert_ttl_ms: string | number | null;
  created_at: Date;
  last_attested_at: Date;
  last_seen_at: Date | null;
  revoked_at: Date | null;
  revocation_reason: number | null;
}

const date = (d: Date | null): Date | null => (d ? new Date(d) : null);

/**
 * The node of a presented certificate: asked once per renewal (a storm asks it for every node at
 * once), so it is a named prepared statement, planned once per connection. Columns are listed,
 * not `n.*`: a prepared statement's result type must not change under it when a migration adds a
 * column to a running replica's table.
 */
const NODE_BY_CERTIFICATE = `
select n.id, n.role, n.status, n.attestation_method, n.cert_ttl_ms, n.created_at, n.last_attested_at,
       n.last_seen_at, n.revoked_at, n.revocation_reason
from nodes n join certificates c on c.node_id = n.id
where c.serial = ? and c.kind = 'node'
limit 1`;

export const toNode = (r: NodeRow): NodeRecord => ({
  id: r.id,
  role: r.role,
  status: r.status,
  attestationMethod: r.attestation_method,
  certTtlMs: r.cert_ttl_ms === null ? null : Number(r.cert_ttl_ms),
  createdAt: new Date(r.created_at),
  lastAttestedAt: new Date(r.last_attested_at),
  lastSeenAt: date(r.last_seen_at),
  revokedAt: date(r.revoked_at),
  revocationReason: r.revocation_reason,
});

export function knexNodeRepository(k: Knex | Knex.Transaction): NodeRepository {
  const one = async (q: Knex.QueryBuilder) => {
    const row = (await q.first()) as NodeRow | undefined;
    return row ? toNode(row) : null;
  };
  return {
    insert: (n) =>
      db(async () => {
        await k('nodes').insert({
          id: n.id,
          role: n.role,
          status: n.status,
          attestation_method: n.attestationMethod,
          cert_ttl_ms: n.certTtlMs,
          created_at: n.createdAt,
          last_attested_at: n.lastAttestedAt,
          last_seen_at: n.lastSeenAt,
          revoked_at: n.revokedAt,
          revocation_reason: n.revocationReason,
        });
      }),
    findById: (id) => db(() => one(k('nodes').where({ id }))),
    findByCertificate: (serial) =>
      db(async () => {
        const [row] = await runPrepared<NodeRow>(k, 'node_by_certificate', NODE_BY_CERTIFICATE, [serial]);
        return row ? toNode(row) : null;
      }),
    lockById: (id) => db(() => one(k('nodes').where({ id }).forUpdate())),
    list: () => db(async () => ((await k('nodes').orderBy('created_at')) as NodeRow[]).map(toNode)),
    // Served by the primary key, or (status, id), (role, id), (status, role, id).
    page: (f, p) =>
      db(async () => {
        const q = k<NodeRow>('nodes')
          .orderBy('id')
          .limit(p.limit + 1);
        if (f.status) q.where('status', f.status);
        if (f.role) q.where('role', f.role);
        if (p.after) q.where('id', '>', String(p.after[0]));
        return pageOf((await q) as NodeRow[], p.limit, toNode, (r) => [r.id]);
      }),
    countActive: (now) =>
      db(async () => {
        const row = (await k('nodes as n')
          .where('n.status', 'active')
          .whereExists(
            k('certificates as c')
              .select(k.raw('1'))
              .whereRaw('c.node_id = n.id')
              .where({ 'c.kind': 'node', 'c.status': 'valid' })
              .where('c.not_after', '>', now),
          )
          .count({ n: '*' })
          .first()) as { n: string | number } | undefined;
        return Number(row?.n ?? 0);
      }),
    markRevoked: (id, at, reason) =>
      db(
        async () =>
          void (await k('nodes')
            .where({ id })
            .update({ status: 'revoked', revoked_at: at, revocation_reason: reason })),
      ),
    reinstate: (id, role) =>
      db(async () => {
        const n = await k('nodes')
          .where({ id, status: 'revoked' })
          .update({ status: 'active', role, revoked_at: null, revocation_reason: null });
        return n === 1;
      }),
    recordSeen: (id, at) =>
      db(async () => void (await k('nodes').where({ id }).update({ last_seen_at: at }))),
  };
}
