import type { Knex } from 'knex';

/**
 * Why: the agent's SPIFFE Workload API (issue 17).
 * - revocation_events gains the kind `entry`: an entry created or deleted is an event on the feed
 *   for its parent node, so the agent lists its entries at once instead of at its next sync, and
 *   the socket's streams follow within a second. Only callers that ask (`entries=1`) see them.
 * - entries.hint: the Workload API's `hint` (which SVID to use when a caller gets several).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table revocation_events drop constraint revocation_events_kind');
  await knex.raw(
    "alter table revocation_events add constraint revocation_events_kind check (kind in ('node', 'certificate', 'entry'))",
  );
  await knex.schema.alterTable('entries', (t) => {
    t.text('hint').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('entries', (t) => {
    t.dropColumn('hint');
  });
  await knex('revocation_events').where({ kind: 'entry' }).delete();
  await knex.raw('alter table revocation_events drop constraint revocation_events_kind');
  await knex.raw(
    "alter table revocation_events add constraint revocation_events_kind check (kind in ('node', 'certificate'))",
  );
}
