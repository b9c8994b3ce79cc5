import type { Knex } from 'knex';
import type {
  AttestationGuard,
  AttestationOutcome,
  AuditEvent,
  CertificateRecord,
  EvidenceSpend,
} from '../../domain/ports';
import { runPrepared } from './prepared-statement';
import { auditValues, certificateValues } from './recorded-row-values';

/**
 * An attestation in one statement (IssuanceRepository.recordAttestation): what the general path
 * did in a transaction of about ten round trips (BEGIN, spend the token or nonce, lock the node,
 * insert or update it, supersede, insert the certificate, the audit row, COMMIT), as one prepared
 * statement, one round trip and one commit. The token's row lock, which serializes the uses of a
 * multi-use token, is then held for one statement instead of the whole transaction.
 *
 * Order of locks: the node row first (`prior`, FOR UPDATE: the order of a node revocation, which
 * locks the node and then spends the tokens bound to it), then the evidence's row (`evidence`, FOR
 * UPDATE; its condition on `node_ok` is a one-time filter, evaluated before the scan). Under READ
 * COMMITTED a row lock waits for a concurrent writer and then reads the row's latest version
 * (EvalPlanQual), so of N concurrent uses of a 1-use token exactly one finds `uses_left > 0`,
 * whichever replica sent it; the losers write nothing.
 *
 * The node must be as the certificate was built for it (`node_ok`):
 * - existing: active, the role and lifetime the certificate carries, and unchanged since this
 *   statement's snapshot: `xmin` (the transaction that wrote the row version, PostgreSQL §5.6
 *   System Columns) of the locked version equal to the snapshot's. Every writer of a node
 *   certificate (attestation, renewal) updates the node row in the same transaction, so an equal
 *   version means the snapshot sees all of the node's certificates, and `superseded` misses none.
 *   A row version is the optimistic-concurrency token Npgsql's Entity Framework provider uses too.
 * - new: absent from the snapshot; if another attestation inserts it meanwhile, the insert meets
 *   it (ON CONFLICT) and does nothing, and the caller builds again for the node as it now is.
 *
 * Every write hangs off the one before it (`from evidence`, `from node`, `from spent`, `from
 * cert`), so a refused guard writes nothing, and a failing insert (a key already certified, a
 * serial taken) fails the whole statement. Named per evidence kind (`baton_attest_token`,
 * `baton_attest_nonce`), planned once per connection.
 */
const statementText = (evidence: string, spend: string) => `
with snap as (
  select xmin as version from nodes where id = ?
), prior as materialized (
  select status, role, cert_ttl_ms, xmin as version from nodes where id = ? for update
), node_ok as materialized (
  select case when ?::boolean
    then exists (
      select 1 from prior p join snap s on s.version = p.version
      where p.status = 'active' and p.role = ?::text and p.cert_ttl_ms is not distinct from ?::bigint)
    else not exists (select 1 from snap)
  end as ok
), evidence as materialized (
  ${evidence}
), node as (
  insert into nodes (id, role, status, attestation_method, cert_ttl_ms, created_at, last_attested_at, last_seen_at)
  select ?, ?, 'active', ?, ?::bigint, ?::timestamptz, ?::timestamptz, ?::timestamptz from evidence
  on conflict (id) do update
    set last_attested_at = excluded.last_attested_at, attestation_method = excluded.attestation_method
    where ?::boolean
  returning id
), spent as (
  ${spend}
), superseded as (
  update certificates set status = 'superseded' from spent
  where certificates.node_id = ? and certificates.kind = 'node' and certificates.status = 'valid'
  returning certificates.serial
), cert as (
  insert into certificates
    (serial, ca_id, kind, spiffe_id, node_id, issued_via, not_before, not_after, key_fingerprint, der, status, created_at)
  select ?, ?, ?, ?, ?, null, ?::timestamptz, ?::timestamptz, ?, ?::bytea, 'valid', ?::timestamptz from spent
  returning serial
), audit as (
  insert into audit_log (at, event, actor, source, subject, outcome, details)
  select ?::timestamptz, ?, ?, ?, ?, ?, ?::jsonb from cert
)
select (select count(*)::int from cert) as recorded,
       (select count(*)::int from evidence) as spendable,
       (select ok from node_ok) as node_ok,
       (select status from prior) as status,
       (select role from prior) as role`;

/** The evidence's CTEs and their bindings: lock the row if it can be spent, then spend it. */
interface EvidenceSql {
  name: string;
  text: string;
  lock(now: Date): Knex.RawBinding[];
  spend(now: Date): Knex.RawBinding[];
}

const TOKEN: Omit<EvidenceSql, 'lock' | 'spend'> = {
  name: 'attest_token',
  text: statementText(
    `select id from join_tokens
  where id = ? and uses_left > 0 and expires_at > ?::timestamptz and (select ok from node_ok)
  for update`,
    `update join_tokens set uses_left = uses_left - 1 from node where join_tokens.id = ?
  returning join_tokens.id`,
  ),
};

const NONCE: Omit<EvidenceSql, 'lock' | 'spend'> = {
  name: 'attest_nonce',
  text: statementText(
    `select nonce from attestation_nonces
  where nonce = ? and method = ? and used_at is null and expires_at > ?::timestamptz and (select ok from node_ok)
  for update`,
    `update attestation_nonces set used_at = ?::timestamptz from node where attestation_nonces.nonce = ?
  returning attestation_nonces.nonce`,
  ),
};

function evidenceSql(s: EvidenceSpend): EvidenceSql {
  if (s.kind === 'token') return { ...TOKEN, lock: (now) => [s.tokenId, now], spend: () => [s.tokenId] };
  return { ...NONCE, lock: (now) => [s.nonce, s.method, now], spend: (now) => [now, s.nonce] };
}

interface Verdict {
  recorded: number;
  spendable: number;
  node_ok: boolean;
  status: string | null;
  role: string | null;
}

/** Runs the statement; the outcome, in the order the general path checked (node, then evidence). */
export async function recordAttestation(
  k: Knex | Knex.Transaction,
  r: CertificateRecord,
  a: AuditEvent,
  g: AttestationGuard,
): Promise<AttestationOutcome> {
  const e = evidenceSql(g.spend);
  const n = g.node;
  const [v] = await runPrepared<Verdict>(k, e.name, e.text, [
    n.id,
    n.id,
    n.existing,
    n.role,
    n.certTtlMs,
    ...e.lock(g.now),
    n.id,
    n.role,
    g.method,
    n.certTtlMs,
    g.now,
    g.now,
    g.now,
    n.existing,
    ...e.spend(g.now),
    n.id,
    ...certificateValues(r),
    ...auditValues(a),
  ]);
  if (!v) throw new Error('the attestation statement returned no row');
  if (Number(v.recorded) === 1) return 'recorded';
  if (!v.node_ok) {
    if (v.status === 'revoked') return 'node-revoked';
    if (v.role !== null && v.role !== n.role) return 'node-role';
    return 'node-changed';
  }
  if (Number(v.spendable) === 0) return 'evidence-spent';
  // The evidence was locked and the node absent from the snapshot, but another attestation
  // inserted it meanwhile: the insert did nothing.
  return 'node-changed';
}
