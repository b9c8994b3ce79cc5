import type { Knex } from 'knex';

/**
 * Why: JWT-SVIDs (issue 16). Each signing intermediate gets one ES256 signing key, its private key
 * wrapped under the KEK like the CA keys (never plaintext). `retired_at` is set when a rotation
 * hands signing to the next key; the JWKS keeps a retired key until the last token it signed has
 * expired. Rows are never deleted: the JWKS sequence counts them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('jwt_keys', (t) => {
    t.text('kid').primary();
    t.text('ca_id').notNullable().unique().references('id').inTable('cas');
    t.binary('spki').notNullable();
    t.text('key_alg').notNullable();
    t.text('key_kek_id').notNullable();
    t.binary('key_blob').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('retired_at', { useTz: true }).nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('jwt_keys');
}
