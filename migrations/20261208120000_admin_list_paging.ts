import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';

/**
 * Why: issue 20 (fleet scale), every admin list pages by keyset: `WHERE key > cursor ORDER BY key
 * LIMIT n+1`, never OFFSET (which reads and throws away every row before the page). Each list's
 * order, with each filter the API takes, needs an index whose leading columns are the filter's
 * and whose next columns are the order, so that a page is an index range scan of n+1 entries
 * whatever the table's size:
 * - nodes by id (the primary key); `status`, `role` and both together get their own.
 * - certificates newest first, (created_at, serial): serial makes the order total. `status`, and
 *   `node` (node_id = X or issued_via = X, read as two ordered scans) get their own; the composite
 *   node_id and issued_via indexes serve every equality lookup the old single-column ones served
 *   (a strict `=` implies the partial indexes' NOT NULL), so those are dropped: certificates is
 *   the table issuance writes, and each index is work on every insert.
 * - entries by name (the primary key).
 * - audit_log newest first, (at, id): `since`/`until` are then a range of the same index, and
 *   `event`, `actor`, `subject` replace their (x, at) indexes by (x, at, id).
 * - list_cursor_key: the HMAC key of page cursors (domain/list-cursor.ts), 256 random bits made
 *   here. It must be the same on every replica (a cursor one replica made is opened by another),
 *   so it lives in the database that all replicas share, never in one process's memory only; made
 *   here rather than by the first list read, so that a read writes nothing (an auditor's least of
 *   all). If the row is ever deleted, the next list read makes a new one (and older cursors are
 *   refused, as after any key change).
 *
 * Building the indexes takes a lock on the three tables for as long as it runs (seconds per
 * million rows): run this migration in a quiet moment on a large installation (CHANGELOG).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('nodes', (t) => {
    t.index(['status', 'id'], 'nodes_status_id');
    t.index(['role', 'id'], 'nodes_role_id');
    t.index(['status', 'role', 'id'], 'nodes_status_role_id');
  });
  await knex.schema.alterTable('certificates', (t) => {
    t.index(['created_at', 'serial'], 'certificates_created_serial');
    t.index(['status', 'created_at', 'serial'], 'certificates_status_created_serial');
    t.dropIndex(['node_id']);
    t.dropIndex(['issued_via']);
  });
  // Partial: a workload certificate has no node_id and a node certificate no issued_via, so each
  // insert skips one of the two, and each index holds only the rows it can find.
  await knex.raw(
    'create index certificates_node_created_serial on certificates (node_id, created_at, serial) where node_id is not null',
  );
  await knex.raw(
    'create index certificates_via_created_serial on certificates (issued_via, created_at, serial) where issued_via is not null',
  );
  await knex.schema.alterTable('audit_log', (t) => {
    t.index(['at', 'id'], 'audit_log_at_id');
    t.index(['event', 'at', 'id'], 'audit_log_event_at_id');
    t.index(['actor', 'at', 'id'], 'audit_log_actor_at_id');
    t.index(['subject', 'at', 'id'], 'audit_log_subject_at_id');
    t.dropIndex(['event', 'at']);
    t.dropIndex(['actor', 'at']);
    t.dropIndex(['subject', 'at']);
  });
  await knex.schema.createTable('list_cursor_key', (t) => {
    t.smallint('id').primary().defaultTo(1);
    t.binary('key').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check('id = 1', [], 'list_cursor_key_single_row');
  });
  await knex('list_cursor_key').insert({ id: 1, key: randomBytes(32), created_at: new Date() });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('list_cursor_key');
  await knex.schema.alterTable('audit_log', (t) => {
    t.index(['event', 'at']);
    t.index(['actor', 'at']);
    t.index(['subject', 'at']);
    t.dropIndex([], 'audit_log_at_id');
    t.dropIndex([], 'audit_log_event_at_id');
    t.dropIndex([], 'audit_log_actor_at_id');
    t.dropIndex([], 'audit_log_subject_at_id');
  });
  await knex.schema.alterTable('certificates', (t) => {
    t.index(['node_id']);
    t.index(['issued_via']);
    t.dropIndex([], 'certificates_created_serial');
    t.dropIndex([], 'certificates_status_created_serial');
    t.dropIndex([], 'certificates_node_created_serial');
    t.dropIndex([], 'certificates_via_created_serial');
  });
  await knex.schema.alterTable('nodes', (t) => {
    t.dropIndex([], 'nodes_status_id');
    t.dropIndex([], 'nodes_role_id');
    t.dropIndex([], 'nodes_status_role_id');
  });
}
