import type { Knex } from 'knex';

/**
 * Why: issue 18 (root rotation). `baton ca rotate --root` makes a new root and a signing CA certified
 * by both roots: the new root's certificate of it is its row in `cas`, the old root's is a
 * cross-certificate (same subject and key, another issuer), kept here. `cas.active` on a root now
 * means "in the trust bundle": the finish clears it on the old root, whose row stays (its
 * intermediates' certificates and CRLs refer to it).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('ca_cross_certificates', (t) => {
    t.text('ca_id').notNullable().references('id').inTable('cas');
    t.text('issuer_id').notNullable().references('id').inTable('cas');
    t.binary('certificate_der').notNullable();
    t.timestamp('not_before', { useTz: true }).notNullable();
    t.timestamp('not_after', { useTz: true }).notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.primary(['ca_id', 'issuer_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('ca_cross_certificates');
}
