import type { Knex } from 'knex';
import type {
  AuditEvent,
  CertificateRecord,
  IssuanceRepository,
  JwtMintGuard,
  WorkloadGuard,
} from '../../domain/ports';
import { recordAttestation } from './attestation-statement';
import { db } from './db-errors';
import { runPrepared } from './prepared-statement';
import { auditValues, certificateValues } from './recorded-row-values';

/**
 * The hot path of workload issuance: guard, certificate row and audit row commit together or not
 * at all, in one statement, instead of the eight round trips of the general path (authenticate,
 * read the node, read the entry, BEGIN, lock, insert, audit, COMMIT).
 *
 * Group commit: requests that arrive while earlier statements are in flight are recorded together,
 * one statement (one commit) for the lot. Each answer still waits for the commit of its own row:
 * recorded before returned. The guard is evaluated per row, so one refused row does not refuse its
 * neighbours; an error (a unique violation: key reuse, a serial collision) fails the whole
 * statement, and then every row of that batch is recorded again on its own, so each request gets
 * its own outcome.
 *
 * `for share of n`: a node revocation takes the node row FOR UPDATE, so it waits for this insert
 * to commit and then revokes the new certificate with the others it finds (issued_via), or it
 * commits first and PostgreSQL re-evaluates `n.status = 'active'` on the new row version (READ
 * COMMITTED, EvalPlanQual) and nothing is inserted. FOR SHARE rather than FOR UPDATE: issuances for
 * one node do not queue behind each other. The entry must match every column the certificate was
 * built from (entries are never updated in place, but one may be deleted and recreated by name).
 */
const COLUMNS =
  '(i, node_id, peer_serial, peer_der, at_now, e_name, e_spiffe_id, e_dns_names, e_ttl_ms, e_created_at,' +
  ' serial, ca_id, kind, spiffe_id, cert_node_id, not_before, not_after, key_fingerprint, der, created_at,' +
  ' a_at, a_event, a_actor, a_source, a_subject, a_outcome, a_details)';
/** The first row carries the types; VALUES takes the others from it. */
const TYPED_ROW =
  '(?::int, ?::text, ?::text, ?::bytea, ?::timestamptz, ?::text, ?::text, ?::jsonb, ?::bigint, ?::timestamptz,' +
  ' ?::text, ?::text, ?::text, ?::text, ?::text, ?::timestamptz, ?::timestamptz, ?::text, ?::bytea, ?::timestamptz,' +
  ' ?::timestamptz, ?::text, ?::text, ?::text, ?::text, ?::text, ?::jsonb)';
const ROW = `(${Array.from({ length: 27 }, () => '?').join(', ')})`;

/**
 * Both statements are named, so each connection parses and plans them once (a PostgreSQL prepared
 * statement, one per batch size) instead of on every execution: for a batch of 16 rows, planning
 * the 416-parameter statement cost PostgreSQL about 2 ms of CPU, executing it 0.3 ms. The text of
 * a name never changes (the pg driver refuses that), and the result types do not depend on the
 * tables' columns, so a later migration only makes PostgreSQL plan again. PGlite ignores the name.
 * runPrepared names them `baton_workload_<rows>` and `baton_renewal`. The text for a batch of
 * `rows` is made once per size.
 */
const statements = new Map<number, string>();
const statement = (rows: number): string => {
  let text = statements.get(rows);
  if (text === undefined) {
    text = statementText(rows);
    statements.set(rows, text);
  }
  return text;
};

const statementText = (rows: number) => `
with req ${COLUMNS} as (
  values ${[TYPED_ROW, ...Array.from({ length: rows - 1 }, () => ROW)].join(', ')}
), guard as (
  select r.*, n.id as issued_via from req r
  join nodes n on n.id = r.node_id
  join certificates c on c.node_id = n.id
  where n.status = 'active'
    and c.serial = r.peer_serial and c.der = r.peer_der and c.kind = 'node' and c.status = 'valid' and c.not_after > r.at_now
    and exists (
      select 1 from entries e
      where e.name = r.e_name and e.parent_node_id = n.id and e.spiffe_id = r.e_spiffe_id
        and e.dns_names = r.e_dns_names and e.ttl_ms is not distinct from r.e_ttl_ms
        and e.created_at = r.e_created_at
    )
  for share of n
), cert as (
  insert into certificates
    (serial, ca_id, kind, spiffe_id, node_id, issued_via, not_before, not_after, key_fingerprint, der, status, created_at)
  select serial, ca_id, kind, spiffe_id, cert_node_id, issued_via, not_before, not_after, key_fingerprint, der, 'valid', created_at
  from guard
  returning serial
), audit as (
  insert into audit_log (at, event, actor, source, subject, outcome, details)
  select g.a_at, g.a_event, g.a_actor, g.a_source, g.a_subject, g.a_outcome, g.a_details
  from guard g join cert on cert.serial = g.serial
  order by g.i
)
select serial from cert`;

/**
 * One renewal (see IssuanceRepository.recordRenewalGuarded). Not batched: two renewals of one node
 * in one statement would share a snapshot and both find the old certificate valid. Lock order is
 * node, then certificate: the `cur` CTE reads `node`, and the first data-modifying CTE pulls `cur`.
 */
const GUARDED_RENEWAL = `
with node as (
  select id from nodes where id = ? and status = 'active' for update
), cur as (
  select c.serial from certificates c join node on c.node_id = node.id
  where c.serial = ? and c.der = ? and c.kind = 'node' and c.status = 'valid' and c.not_after > ?
  for update of c
), seen as (
  update nodes set last_seen_at = ? from cur where nodes.id = ? returning nodes.id
), superseded as (
  update certificates set status = 'superseded' from cur
  where certificates.node_id = ? and certificates.kind = 'node' and certificates.status = 'valid'
  returning certificates.serial
), cert as (
  insert into certificates
    (serial, ca_id, kind, spiffe_id, node_id, issued_via, not_before, not_after, key_fingerprint, der, status, created_at)
  select ?, ?, ?, ?, ?, null, ?, ?, ?, ?, 'valid', ? from cur
  returning serial
), audit as (
  insert into audit_log (at, event, actor, source, subject, outcome, details)
  select ?, ?, ?, ?, ?, ?, ?::jsonb from cert
)
select (select count(*)::int from cert) as n`;

/**
 * JWT-SVID mints (IssuanceRepository.jwtMintAllowed): the node caller rule and the entry, one read
 * for every request in flight, each row judged on its own; the numbers `i` of the rows that hold.
 * The conditions are the workload guard's, the entry matched by SPIFFE ID alone (a token carries
 * nothing else of it). No lock: nothing is written, and a token is not revocable either way, so a
 * revocation that commits a moment after this read is what it would be a moment after the answer.
 */
const jwtStatements = new Map<number, string>();
const jwtStatement = (rows: number): string => {
  let text = jwtStatements.get(rows);
  if (text === undefined) {
    text = `
with req (i, node_id, peer_serial, peer_der, at_now, spiffe_id) as (
  values ${['(?::int, ?::text, ?::text, ?::bytea, ?::timestamptz, ?::text)', ...Array.from({ length: rows - 1 }, () => '(?, ?, ?, ?, ?, ?)')].join(', ')}
)
select r.i from req r
join nodes n on n.id = r.node_id
join certificates c on c.serial = r.peer_serial
where n.status = 'active'
  and c.node_id = n.id and c.der = r.peer_der and c.kind = 'node' and c.status = 'valid' and c.not_after > r.at_now
  and exists (select 1 from entries e where e.parent_node_id = n.id and e.spiffe_id = r.spiffe_id)`;
    jwtStatements.set(rows, text);
  }
  return text;
};

/** Judges `batch` in one statement; the indexes of the rows that hold. */
async function jwtBatch(k: Knex | Knex.Transaction, batch: readonly JwtMintGuard[]): Promise<Set<number>> {
  const rows = await runPrepared<{ i: number }>(
    k,
    `jwt_mint_${batch.length}`,
    jwtStatement(batch.length),
    batch.flatMap((g, i) => [i, g.nodeId, g.peerSerial, g.peerDer, g.now, g.spiffeId]),
  );
  return new Set(rows.map((r) => Number(r.i)));
}

/** One workload certificate to record: its row, its audit row and what must still hold. */
interface GuardedRow {
  record: CertificateRecord;
  audit: AuditEvent;
  guard: WorkloadGuard;
}

/** A row waiting for the next batch, with the answer to its request. */
interface Pending extends GuardedRow {
  resolve(recorded: boolean): void;
  reject(e: unknown): void;
}

const bindingsOf = (row: GuardedRow, i: number): Knex.RawBinding[] => {
  const { record: r, audit: a, guard: g } = row;
  const e = g.entry;
  return [
    i,
    g.nodeId,
    g.peerSerial,
    g.peerDer,
    g.now,
    e.name,
    e.spiffeId,
    JSON.stringify(e.dnsNames),
    e.ttlMs,
    e.createdAt,
    ...certificateValues(r),
    ...auditValues(a),
  ];
};

/** Records `batch` in one statement; the set of serials that were inserted. */
async function insertBatch(k: Knex | Knex.Transaction, batch: readonly GuardedRow[]): Promise<Set<string>> {
  const rows = await runPrepared<{ serial: string }>(
    k,
    `workload_${batch.length}`,
    statement(batch.length),
    batch.flatMap(bindingsOf),
  );
  return new Set(rows.map((r) => r.serial));
}

export interface IssuanceBatching {
  /** Statements in flight at once before further requests wait to join the next batch. */
  maxInFlight: number;
  /** Rows per statement at most. */
  maxBatch: number;
}

const DEFAULT_BATCHING: IssuanceBatching = { maxInFlight: 1, maxBatch: 64 };

export function knexIssuanceRepository(
  k: Knex | Knex.Transaction,
  batching: IssuanceBatching = DEFAULT_BATCHING,
): IssuanceRepository {
  const one = async (row: GuardedRow) => (await db(() => insertBatch(k, [row]))).has(row.record.serial);
  const recordRenewalGuarded: IssuanceRepository['recordRenewalGuarded'] = (r, a, g) =>
    db(async () => {
      const rows = await runPrepared<{ n: number }>(k, 'renewal', GUARDED_RENEWAL, [
        g.nodeId,
        g.peerSerial,
        g.peerDer,
        g.now,
        g.now,
        g.nodeId,
        g.nodeId,
        ...certificateValues(r),
        ...auditValues(a),
      ]);
      return Number(rows[0]?.n ?? 0) === 1;
    });
  const attest: IssuanceRepository['recordAttestation'] = (r, a, g) =>
    db(() => recordAttestation(k, r, a, g));
  // Inside a transaction there is nothing to batch with.
  if (k.isTransaction) {
    return {
      recordWorkloadGuarded: (record, audit, guard) => one({ record, audit, guard }),
      recordRenewalGuarded,
      recordAttestation: attest,
      jwtMintAllowed: (guard) => db(async () => (await jwtBatch(k, [guard])).has(0)),
    };
  }
  const queue: Pending[] = [];
  let inFlight = 0;
  const flush = () => {
    while (queue.length > 0 && inFlight < batching.maxInFlight) {
      const batch = queue.splice(0, batching.maxBatch);
      inFlight++;
      void run(batch).finally(() => {
        inFlight--;
        flush();
      });
    }
  };
  const run = async (batch: Pending[]) => {
    try {
      const recorded = await insertBatch(k, batch);
      for (const p of batch) p.resolve(recorded.has(p.record.serial));
    } catch (e) {
      if (batch.length === 1) return batch[0]!.reject(e);
      // Nothing of the batch was written: each row on its own gets its own outcome.
      await Promise.all(batch.map((p) => one(p).then(p.resolve, p.reject)));
    }
  };
  return {
    recordRenewalGuarded,
    recordAttestation: attest,
    jwtMintAllowed: jwtReads(k, batching),
    recordWorkloadGuarded: (record, audit, guard) =>
      db(
        () =>
          new Promise<boolean>((resolve, reject) => {
            queue.push({ record, audit, guard, resolve, reject });
            flush();
          }),
      ),
  };
}

/**
 * The reads of jwtMintAllowed, grouped as workload certificates are: the guards that arrive while
 * statements are in flight go together in the next one. When a statement fails (a value PostgreSQL
 * refuses), each guard of its batch is read again on its own, one after the other within the
 * batch's in-flight slot, so one node's bad request never fails its neighbours' and costs at most
 * one batch's worth of statements.
 */
function jwtReads(k: Knex, batching: IssuanceBatching): IssuanceRepository['jwtMintAllowed'] {
  const queue: { guard: JwtMintGuard; resolve(ok: boolean): void; reject(e: unknown): void }[] = [];
  let inFlight = 0;
  const flush = () => {
    while (queue.length > 0 && inFlight < batching.maxInFlight) {
      const batch = queue.splice(0, batching.maxBatch);
      inFlight++;
      void jwtBatch(
        k,
        batch.map((p) => p.guard),
      )
        .then(
          (held) => {
            for (const [i, p] of batch.entries()) p.resolve(held.has(i));
          },
          async (e: unknown) => {
            if (batch.length === 1) return batch[0]!.reject(e);
            // One at a time and inside this batch's in-flight slot: a request that fails its batch
            // on purpose must not turn into a burst of statements that takes every pooled connection.
            for (const p of batch) {
              await jwtBatch(k, [p.guard]).then((held) => p.resolve(held.has(0)), p.reject);
            }
          },
        )
        .finally(() => {
          inFlight--;
          flush();
        });
    }
  };
  return (guard) =>
    db(
      () =>
        new Promise<boolean>((resolve, reject) => {
          queue.push({ guard, resolve, reject });
          flush();
        }),
    );
}
