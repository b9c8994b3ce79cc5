import type { Knex } from 'knex';
import type { NodeRecord, NodeRepository } from '../../domain/ports';
import { db } from './db-errors';

interface NodeRow {
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

const toNode = (r: NodeRow): NodeRecord => ({
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
      db(() =>
        one(
          k('nodes as n')
            .select('n.*')
            .join('certificates as c', 'c.node_id', 'n.id')
            .where({ 'c.serial': serial, 'c.kind': 'node' }),
        ),
      ),
    lockById: (id) => db(() => one(k('nodes').where({ id }).forUpdate())),
    list: () => db(async () => ((await k('nodes').orderBy('created_at')) as NodeRow[]).map(toNode)),
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
    recordAttestation: (id, at, method) =>
      db(
        async () =>
          void (await k('nodes').where({ id }).update({ last_attested_at: at, attestation_method: method })),
      ),
    markRevoked: (id, at, reason) =>
      db(
        async () =>
          void (await k('nodes')
            .where({ id })
            .update({ status: 'revoked', revoked_at: at, revocation_reason: reason })),
      ),
    recordSeen: (id, at) =>
      db(async () => void (await k('nodes').where({ id }).update({ last_seen_at: at }))),
  };
}
