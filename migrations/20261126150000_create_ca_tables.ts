import type { Knex } from 'knex';

/**
 * Why: the foundation of Baton's state. One installation row (trust domain and default lifetimes),
 * the CA hierarchy with its private keys wrapped under the KEK (never plaintext), and every issued
 * certificate, recorded before it is returned so revocation knows all of them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('installation', (t) => {
    t.smallint('id').primary().defaultTo(1);
    t.text('trust_domain').notNullable();
    t.text('public_url').notNullable();
    t.bigint('node_ttl_ms').notNullable();
    t.bigint('workload_ttl_ms').notNullable();
    t.bigint('admin_ttl_ms').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check('id = 1', [], 'installation_single_row');
  });
  await knex.schema.createTable('cas', (t) => {
    t.text('id').primary();
    t.text('kind').notNullable();
    t.text('parent_id').nullable().references('id').inTable('cas');
    t.binary('certificate_der').notNullable();
    t.timestamp('not_before', { useTz: true }).notNullable();
    t.timestamp('not_after', { useTz: true }).notNullable();
    t.boolean('active').notNullable();
    t.text('key_alg').notNullable();
    t.text('key_kek_id').notNullable();
    t.binary('key_blob').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check("kind in ('root', 'intermediate')", [], 'cas_kind');
  });
  await knex.schema.createTable('certificates', (t) => {
    t.text('serial').primary();
    t.text('ca_id').notNullable().references('id').inTable('cas');
    t.text('kind').notNullable();
    t.text('spiffe_id').notNullable();
    t.text('node_id').nullable();
    t.text('issued_via').nullable();
    t.timestamp('not_before', { useTz: true }).notNullable();
    t.timestamp('not_after', { useTz: true }).notNullable();
    t.text('key_fingerprint').notNullable();
    t.binary('der').notNullable();
    t.text('status').notNullable().defaultTo('valid');
    t.timestamp('revoked_at', { useTz: true }).nullable();
    t.smallint('revocation_reason').nullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check("kind in ('node', 'workload', 'admin', 'server')", [], 'certificates_kind');
    t.check("status in ('valid', 'superseded', 'revoked')", [], 'certificates_status');
    t.index(['key_fingerprint']);
    t.index(['node_id']);
    t.index(['issued_via']);
    t.index(['ca_id', 'status', 'not_after']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('certificates');
  await knex.schema.dropTable('cas');
  await knex.schema.dropTable('installation');
}
