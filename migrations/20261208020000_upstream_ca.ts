import type { Knex } from 'knex';

/**
 * Why: issue 18, upstream CA. `baton ca init --upstream-csr` makes the signing CA's key and CSR and
 * stops until `baton ca import` brings the certificate an outside root signed; between the two the
 * installation does not exist yet, and this one row keeps the wrapped key, the CSR and the settings
 * `ca init` was given, durably (a crash or a day of waiting for the corporate CA loses nothing).
 * The outside root and intermediates are then `cas` rows without a key: `key_alg` 'none', an empty
 * `key_kek_id` and `key_blob` (the columns stay NOT NULL; nothing unwraps them).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('upstream_pending', (t) => {
    t.smallint('id').primary().defaultTo(1);
    t.text('trust_domain').notNullable();
    t.text('public_url').notNullable();
    t.text('public_http_url').nullable();
    t.bigint('node_ttl_ms').notNullable();
    t.bigint('workload_ttl_ms').notNullable();
    t.bigint('admin_ttl_ms').notNullable();
    t.text('ca_id').notNullable();
    t.text('key_alg').notNullable();
    t.text('key_kek_id').notNullable();
    t.binary('key_blob').notNullable();
    t.binary('spki').notNullable();
    t.binary('csr_der').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check('id = 1', [], 'upstream_pending_single_row');
  });
}

export async function down(knex: Knex): Promise<void> {
  // Code before this migration would try to unwrap the outside CAs' missing keys.
  const keyless = await knex('cas').where({ key_alg: 'none' }).first();
  if (keyless)
    throw new Error('an upstream CA is installed: it cannot be rolled back below 20261208020000_upstream_ca');
  await knex.schema.dropTable('upstream_pending');
}
