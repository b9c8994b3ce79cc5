import type { Knex } from 'knex';

/**
 * Why: issue 19, TPM node attestation. What admits a TPM lives in the shared database, so every
 * replica decides alike: the EK identifiers an admin enrolled (`baton node enroll --tpm-ek-id`) and
 * the manufacturer CAs whose EK certificates are trusted (`baton tpm ca add`). A challenge is an
 * `attestation_nonces` row (method 'tpm', spent by the issuance exactly as x509pop's) plus what the
 * answer is checked against, in `tpm_challenges`, keyed by the nonce and deleted with it; the
 * credential itself is never stored, only its SHA-256.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('tpm_enrollments', (t) => {
    t.text('ek_id').primary();
    t.text('role').notNullable();
    t.text('enrolled_by').notNullable();
    t.timestamp('enrolled_at', { useTz: true }).notNullable();
    t.check("ek_id ~ '^[0-9a-f]{64}$'", [], 'tpm_enrollments_ek_id');
    t.check("role in ('worker', 'manager')", [], 'tpm_enrollments_role');
  });
  await knex.schema.createTable('tpm_manufacturer_cas', (t) => {
    t.text('fingerprint').primary();
    t.binary('certificate_der').notNullable();
    t.text('subject').notNullable();
    t.timestamp('not_before', { useTz: true }).notNullable();
    t.timestamp('not_after', { useTz: true }).notNullable();
    t.text('role').notNullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check("role in ('worker', 'manager')", [], 'tpm_manufacturer_cas_role');
  });
  await knex.schema.createTable('tpm_challenges', (t) => {
    t.text('nonce').primary().references('nonce').inTable('attestation_nonces').onDelete('CASCADE');
    t.text('ek_id').notNullable();
    t.text('role').notNullable();
    t.text('admitted_by').notNullable();
    t.binary('ak_spki').notNullable();
    t.binary('ak_qualified_name').notNullable();
    t.binary('secret_hash').notNullable();
    t.check("role in ('worker', 'manager')", [], 'tpm_challenges_role');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('tpm_challenges');
  await knex.schema.dropTable('tpm_manufacturer_cas');
  await knex.schema.dropTable('tpm_enrollments');
  // The challenges' nonces: without their rows no answer can be checked.
  await knex('attestation_nonces').where({ method: 'tpm' }).delete();
}
