import type { Knex } from 'knex';

/**
 * Why: retention (issue 20). `baton server --retain-expired` deletes certificate rows whose notAfter
 * is older than the window, in small batches of rows picked oldest notAfter first: this index makes
 * each batch an index range scan instead of a walk over every live certificate. (The CRL build's
 * "revoked and unexpired rows of one CA" is served by the existing (ca_id, status, not_after) index;
 * the audit prune walks the chain by the unique seal_seq index.)
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('certificates', (t) => {
    t.index(['not_after'], 'certificates_not_after_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('certificates', (t) => {
    t.dropIndex(['not_after'], 'certificates_not_after_index');
  });
}
