import type { Knex } from 'knex';

/**
 * Why: revocation (issue 5) and the audit log (issue 6).
 * - revocation_events feed `GET /v1/revocations?since=N` on every replica: ids only grow.
 * - crls keeps every published CRL; CRL numbers come from one sequence, so they only grow and are
 *   unique across replicas (RFC 5280 §5.2.3), and an advisory lock makes one builder at a time.
 * - audit_log rows are appended inside the transaction of the action they record, then sealed
 *   into one hash chain (seal_seq, prev_hash, hash) by one sealer at a time: the chain is total
 *   across replicas without serializing every request on one lock.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('revocation_events', (t) => {
    t.bigIncrements('id').primary();
    t.text('kind').notNullable();
    t.text('node_id').nullable();
    t.jsonb('serials').notNullable();
    t.smallint('reason').notNullable();
    t.text('actor').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check("kind in ('node', 'certificate')", [], 'revocation_events_kind');
  });
  await knex.raw('create sequence crl_number_seq start 1');
  await knex.schema.createTable('crls', (t) => {
    t.text('ca_id').notNullable().references('id').inTable('cas');
    t.bigint('crl_number').notNullable();
    t.timestamp('this_update', { useTz: true }).notNullable();
    t.timestamp('next_update', { useTz: true }).notNullable();
    t.integer('entries').notNullable();
    t.binary('der').notNullable();
    t.primary(['ca_id', 'crl_number']);
    t.unique(['crl_number'], { indexName: 'crls_crl_number_unique' });
  });
  await knex.schema.alterTable('certificates', (t) => {
    t.index(['revoked_at']);
  });
  await knex.schema.createTable('audit_log', (t) => {
    t.bigIncrements('id').primary();
    t.timestamp('at', { useTz: true }).notNullable();
    t.text('event').notNullable();
    t.text('actor').notNullable();
    t.text('source').nullable();
    t.text('subject').nullable();
    t.text('outcome').notNullable();
    t.jsonb('details').notNullable();
    t.bigint('seal_seq').nullable();
    t.binary('prev_hash').nullable();
    t.binary('hash').nullable();
    t.unique(['seal_seq'], { indexName: 'audit_log_seal_seq_unique' });
    t.index(['event', 'at']);
    t.index(['actor', 'at']);
    t.index(['subject', 'at']);
  });
  // Unsealed rows are found by a partial index, so sealing stays cheap on a long log.
  await knex.raw('create index audit_log_unsealed on audit_log (id) where seal_seq is null');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('audit_log');
  await knex.schema.alterTable('certificates', (t) => {
    t.dropIndex(['revoked_at']);
  });
  await knex.schema.dropTable('crls');
  await knex.raw('drop sequence crl_number_seq');
  await knex.schema.dropTable('revocation_events');
}
