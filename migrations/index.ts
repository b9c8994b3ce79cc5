import type { Knex } from 'knex';
import * as createCaTables from './20261126150000_create_ca_tables';
import * as createNodesAndTokens from './20261126160000_create_nodes_and_tokens';
import * as createEntries from './20261126170000_create_entries';
import * as createRevocationAndAudit from './20261126180000_create_revocation_and_audit';
import * as createJwtKeys from './20261207120000_create_jwt_keys';
import * as workloadApiEntries from './20261207190000_workload_api_entries';
import * as publicHttpUrl from './20261207200000_public_http_url';
import * as upstreamCa from './20261208020000_upstream_ca';
import * as rootRotation from './20261208030000_root_rotation';
import * as tpmAttestation from './20261208100000_tpm_attestation';
import * as retention from './20261208110000_retention';
import * as adminListPaging from './20261208120000_admin_list_paging';

/**
 * Every migration, in order. An explicit list (rather than a directory scan) works the same from
 * TypeScript sources under jest and from the compiled build, and cannot pick up stray files.
 * Never edit a shipped migration: add a new one.
 */
export const migrations: ReadonlyArray<{
  name: string;
  up(k: Knex): Promise<void>;
  down(k: Knex): Promise<void>;
}> = [
  { name: '20261126150000_create_ca_tables', ...createCaTables },
  { name: '20261126160000_create_nodes_and_tokens', ...createNodesAndTokens },
  { name: '20261126170000_create_entries', ...createEntries },
  { name: '20261126180000_create_revocation_and_audit', ...createRevocationAndAudit },
  { name: '20261207120000_create_jwt_keys', ...createJwtKeys },
  { name: '20261207190000_workload_api_entries', ...workloadApiEntries },
  { name: '20261207200000_public_http_url', ...publicHttpUrl },
  { name: '20261208020000_upstream_ca', ...upstreamCa },
  { name: '20261208030000_root_rotation', ...rootRotation },
  { name: '20261208100000_tpm_attestation', ...tpmAttestation },
  { name: '20261208110000_retention', ...retention },
  { name: '20261208120000_admin_list_paging', ...adminListPaging },
];

export const migrationSource: Knex.MigrationSource<(typeof migrations)[number]> = {
  getMigrations: async () => [...migrations],
  getMigrationName: (m) => m.name,
  getMigration: async (m) => m,
};
