import type { Knex } from 'knex';

/**
 * Why: node identity (issue 3). Join tokens keep only a hash of their secret and a use counter
 * that one UPDATE decrements, so concurrent attestations on several replicas spend a 1-use token
 * exactly once. A key may be certified only once across all identities: the unique index makes
 * that hold under concurrency too. Nonces back x509pop challenges without in-process state.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('nodes', (t) => {
    t.text('id').primary();
    t.text('role').notNullable();
    t.text('status').notNullable().defaultTo('active');
    t.text('attestation_method').notNullable();
    t.bigint('cert_ttl_ms').nullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('last_attested_at', { useTz: true }).notNullable();
    t.timestamp('last_seen_at', { useTz: true }).nullable();
    t.timestamp('revoked_at', { useTz: true }).nullable();
    t.smallint('revocation_reason').nullable();
    t.check("role in ('worker', 'manager')", [], 'nodes_role');
    t.check("status in ('active', 'revoked')", [], 'nodes_status');
  });
  await knex.schema.createTable('join_tokens', (t) => {
    t.text('id').primary();
    t.binary('secret_hash').notNullable();
    t.text('role').notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.integer('uses_allowed').notNullable();
    t.integer('uses_left').notNullable();
    t.text('node_name').nullable();
    t.bigint('node_ttl_ms').nullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check("role in ('worker', 'manager')", [], 'join_tokens_role');
    t.check('uses_left >= 0 and uses_left <= uses_allowed', [], 'join_tokens_uses');
    t.index(['node_name']);
  });
  await knex.schema.createTable('attestation_nonces', (t) => {
    t.text('nonce').primary();
    t.text('method').notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('used_at', { useTz: true }).nullable();
  });
  await knex.schema.alterTable('certificates', (t) => {
    t.unique(['key_fingerprint'], { indexName: 'certificates_key_fingerprint_unique' });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('certificates', (t) => {
    t.dropUnique(['key_fingerprint'], 'certificates_key_fingerprint_unique');
  });
  await knex.schema.dropTable('attestation_nonces');
  await knex.schema.dropTable('join_tokens');
  await knex.schema.dropTable('nodes');
}
