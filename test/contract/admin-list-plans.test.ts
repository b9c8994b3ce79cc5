import type { Knex } from 'knex';
import type { Page, PageRequest, Storage } from '../../services/ca/src/domain/ports';
import { migrateLatest } from '../../services/ca/src/storage/knex/database';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { type TestDatabase, createTestDatabase, describeEachBackend } from '../support/database';

/**
 * Issue 20: every page query of the admin lists, with every filter the API takes, is served by an
 * index in the list's order, as an index range scan (`WHERE key > cursor ORDER BY key LIMIT n+1`):
 * no sort of the table, no sequential scan. On a small table the planner may rightly prefer a
 * sequential scan, so each query is planned with sorts, sequential and bitmap scans priced out
 * (PostgreSQL's enable_* settings): whatever index the plan then uses, a Sort or a Seq Scan left
 * in it means no index can give that order with that filter. What the planner does on a table of
 * 2,000,000 certificates is in docs/performance.md "Admin lists".
 */

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

const walk = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(walk)];

const TIME = '2026-12-08T12:00:00.123456Z';
type Read = (s: Storage, p: PageRequest) => Promise<Page<unknown>>;

/** Each list and filter the API offers, first page and a later page; the indexes it must use. */
const QUERIES: [string, Read, PageRequest['after'], string[]][] = [
  ['nodes', (s, p) => s.nodes.page({}, p), ['n-1'], ['nodes_pkey']],
  ['nodes ?status', (s, p) => s.nodes.page({ status: 'revoked' }, p), ['n-1'], ['nodes_status_id']],
  ['nodes ?role', (s, p) => s.nodes.page({ role: 'manager' }, p), ['n-1'], ['nodes_role_id']],
  [
    'nodes ?status&role',
    (s, p) => s.nodes.page({ status: 'active', role: 'manager' }, p),
    ['n-1'],
    ['nodes_status_role_id'],
  ],
  ['entries', (s, p) => s.entries.page(p), ['web'], ['entries_pkey']],
  ['certificates', (s, p) => s.certificates.page({}, p), [TIME, '7a'], ['certificates_created_serial']],
  [
    'certificates ?status=revoked',
    (s, p) => s.certificates.page({ status: 'revoked' }, p),
    [TIME, '7a'],
    ['certificates_status_created_serial'],
  ],
  [
    'certificates ?status=valid (unexpired)',
    (s, p) => s.certificates.page({ status: 'valid', validAt: new Date() }, p),
    [TIME, '7a'],
    ['certificates_status_created_serial'],
  ],
  [
    'certificates ?status=expired',
    (s, p) => s.certificates.page({ status: 'valid', expiredAt: new Date() }, p),
    [TIME, '7a'],
    ['certificates_status_created_serial'],
  ],
  [
    'certificates ?node',
    (s, p) => s.certificates.page({ nodeId: 'n-1' }, p),
    [TIME, '7a'],
    ['certificates_node_created_serial', 'certificates_via_created_serial'],
  ],
  [
    'certificates ?node&status',
    (s, p) => s.certificates.page({ nodeId: 'n-1', status: 'revoked' }, p),
    [TIME, '7a'],
    ['certificates_node_created_serial', 'certificates_via_created_serial'],
  ],
  ['audit', (s, p) => s.audit.page({}, p), [TIME, 7], ['audit_log_at_id']],
  [
    'audit ?event',
    (s, p) => s.audit.page({ event: 'node.revoked' }, p),
    [TIME, 7],
    ['audit_log_event_at_id'],
  ],
  ['audit ?actor', (s, p) => s.audit.page({ actor: 'cli:root' }, p), [TIME, 7], ['audit_log_actor_at_id']],
  [
    'audit ?subject',
    (s, p) => s.audit.page({ subject: 'node/n-1' }, p),
    [TIME, 7],
    ['audit_log_subject_at_id'],
  ],
  [
    'audit ?since&until',
    (s, p) => s.audit.page({ since: new Date(0), until: new Date() }, p),
    [TIME, 7],
    ['audit_log_at_id'],
  ],
];

describeEachBackend('admin list page plans', (backend) => {
  let db: TestDatabase;
  let storage: Storage;
  const queries: { sql: string; bindings: unknown[] }[] = [];
  const capture = (q: { sql: string; bindings?: unknown[] }) =>
    queries.push({ sql: q.sql, bindings: q.bindings ?? [] });

  beforeAll(async () => {
    db = await createTestDatabase(backend);
    await migrateLatest(db.knex);
    storage = knexStorage(db.knex);
    db.knex.on('query', capture);
  });
  afterAll(async () => {
    db.knex.off('query', capture);
    await db.drop();
  });

  /** The JSON plan of the last statement `read` ran, with sorts and full scans priced out. */
  const planOf = async (read: () => Promise<unknown>): Promise<PlanNode[]> => {
    queries.length = 0;
    await read();
    const q = queries.at(-1)!;
    // knex's pg dialect reports $1, $2 …; knex.raw takes ? in the same order.
    const sql = q.sql.replace(/\$\d+/g, '?');
    return db.knex.transaction(async (trx: Knex.Transaction) => {
      for (const setting of ['enable_seqscan', 'enable_sort', 'enable_incremental_sort', 'enable_bitmapscan'])
        await trx.raw(`set local ${setting} = off`);
      const res = (await trx.raw(`explain (format json) ${sql}`, q.bindings as Knex.RawBinding[])) as {
        rows: { 'QUERY PLAN': [{ Plan: PlanNode }] | string }[];
      };
      const cell = res.rows[0]!['QUERY PLAN'];
      const [{ Plan }] = typeof cell === 'string' ? (JSON.parse(cell) as [{ Plan: PlanNode }]) : cell;
      return walk(Plan);
    });
  };

  it.each(
    QUERIES.flatMap(([name, read, after, indexes]) => [
      [`${name}, first page`, read, null, indexes] as const,
      [`${name}, after a cursor`, read, after, indexes] as const,
    ]),
  )('ok/%s: an ordered index scan, no sort, no full scan', async (_name, read, after, indexes) => {
    const nodes = await planOf(() => read(storage, { limit: 100, after }));
    const types = nodes.map((n) => n['Node Type']);
    expect(types).not.toContain('Sort');
    expect(types).not.toContain('Incremental Sort');
    expect(types).not.toContain('Seq Scan');
    expect(types).not.toContain('Bitmap Heap Scan');
    expect(types).toContain('Limit');
    const used = nodes.filter((n) => n['Index Name']).map((n) => n['Index Name']);
    expect(used.sort()).toEqual([...indexes].sort());
  });
});
