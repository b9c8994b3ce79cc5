import type { Knex } from 'knex';

/**
 * Why: workload identity (issue 4). A registration entry says which SPIFFE ID a node may mint
 * for its workloads (SPIRE's registration entries). The same SPIFFE ID may be parented to several
 * nodes, but at most once per node.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('entries', (t) => {
    t.text('name').primary();
    t.text('spiffe_id').notNullable();
    t.text('parent_node_id').notNullable().references('id').inTable('nodes');
    t.jsonb('selectors').notNullable();
    t.jsonb('dns_names').notNullable();
    t.boolean('allow_wildcard_dns').notNullable().defaultTo(false);
    t.bigint('ttl_ms').nullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.unique(['parent_node_id', 'spiffe_id'], { indexName: 'entries_parent_spiffe_id_unique' });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('entries');
}
