import knexFactory, { type Knex } from 'knex';
import { FakeClock } from '../../services/ca/src/domain/clock';
import type { Storage } from '../../services/ca/src/domain/ports';
import { deleteExpiredCertificates, type RetentionSettings } from '../../services/ca/src/domain/retention';
import { migrateLatest } from '../../services/ca/src/storage/knex/database';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { TEST_TD, TEST_URL, testCa } from '../fixtures/test-ca';
import { createPostgresDatabase, describePostgres } from '../support/database';

/**
 * Issue 20, item 1: the retention job runs on one replica at a time. Two job runners with their
 * own connection pools on one PostgreSQL database stand for two replicas: while one holds the
 * lock (a session advisory lock, seen in pg_locks) the other does nothing; started together, their
 * batches never interleave; and the lock goes with the session of a holder that dies.
 */

const NOW = '2026-12-08T12:00:00.000Z';
const DAY = 86_400_000;
const RETAIN = 7 * DAY;
/** storage/knex/job-lock.ts: the key of 'certificate-retention'. */
const LOCK_KEY = 0x72746e63;
const ROWS = 3000;

describePostgres('certificate retention on two replicas of one PostgreSQL (issue 20)', () => {
  let drop: () => Promise<void>;
  let url: string;
  const pools: Knex[] = [];
  let a: Storage;
  let b: Storage;
  let caId: string;
  const clock = new FakeClock(NOW);

  const pool = () => {
    const k = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 4 } });
    pools.push(k);
    return k;
  };
  const seed = async (n: number) => {
    await pools[0]!.raw(
      `insert into certificates
         (serial, ca_id, kind, spiffe_id, not_before, not_after, key_fingerprint, der, status, created_at)
       select '7d' || lpad(to_hex(g), 30, '0'), ?, 'workload', 'spiffe://${TEST_TD}/w', ?::timestamptz - interval '40 days',
              ?::timestamptz - interval '30 days' - g * interval '1 second', md5(g::text) || md5('x' || g::text),
              decode('3000', 'hex'), 'valid', ?::timestamptz - interval '40 days'
       from generate_series(1, ?) as g`,
      [caId, NOW, NOW, NOW, n],
    );
  };
  const left = async () =>
    Number(((await pools[0]!('certificates').count('* as n').first()) as { n: string }).n);
  const holders = async () =>
    Number(
      (
        (await pools[0]!.raw(
          // Advisory locks are per database; other suites' servers run the same job on theirs.
          "select count(*)::int as n from pg_locks where locktype = 'advisory' and classid = 0 and objid = ? and granted and database = (select oid from pg_database where datname = current_database())",
          [LOCK_KEY],
        )) as { rows: { n: number }[] }
      ).rows[0]!.n,
    );
  const retain = (s: Storage, settings: Partial<RetentionSettings> = {}) =>
    deleteExpiredCertificates({ clock, storage: s }, { retainMs: RETAIN, ...settings });

  beforeAll(async () => {
    const pg = await createPostgresDatabase();
    drop = pg.drop;
    url = pg.url;
    const first = pool();
    await migrateLatest(first);
    const ca = testCa({ now: NOW });
    caId = ca.keyring.signing.record.id;
    a = knexStorage(first);
    b = knexStorage(pool());
    await a.cas.initialize(
      {
        trustDomain: TEST_TD,
        publicUrl: TEST_URL,
        nodeTtlMs: DAY,
        workloadTtlMs: 3_600_000,
        adminTtlMs: 8 * 3_600_000,
        createdAt: new Date(NOW),
      },
      ca.records,
    );
  });
  afterAll(async () => {
    for (const k of pools) await k.destroy();
    await drop?.();
  });
  beforeEach(async () => {
    await pools[0]!('certificates').delete();
    await seed(ROWS);
  });

  it('while one replica holds the lock the other does nothing, and pg_locks shows one holder', async () => {
    let pause!: () => void;
    const paused = new Promise<void>((resolve) => {
      pause = resolve;
    });
    let resume!: () => void;
    const resumed = new Promise<void>((resolve) => {
      resume = resolve;
    });
    const first = retain(a, {
      batchSize: 500,
      between: async () => {
        pause();
        await resumed;
      },
    });
    await paused;
    expect(await holders()).toBe(1);
    expect(await retain(b)).toEqual({ ran: false });
    expect(await left()).toBe(ROWS - 500);
    resume();
    expect(await first).toMatchObject({ ran: true, deleted: ROWS, complete: true });
    expect(await holders()).toBe(0);
    // Free again: the other replica's next run finds nothing left.
    expect(await retain(b)).toMatchObject({ ran: true, deleted: 0 });
  });

  it('two replicas started together: the batches of one never interleave with the other’s, every row deleted once', async () => {
    for (let round = 0; round < 5; round++) {
      if (round > 0) await seed(ROWS);
      const order: string[] = [];
      const runner = (name: string, s: Storage) =>
        retain(s, { batchSize: 200, onBatch: () => order.push(name) });
      const [ra, rb] = await Promise.all([runner('a', a), runner('b', b)]);
      const deleted = [ra, rb].reduce((sum, r) => sum + (r.ran ? r.deleted : 0), 0);
      expect(deleted).toBe(ROWS);
      expect(await left()).toBe(0);
      // "aaaa…bb" or "bbbb…a" (the second found what was left, after the first let go), never "abab".
      const switches = order.filter((x, i) => i > 0 && x !== order[i - 1]).length;
      expect(switches).toBeLessThanOrEqual(1);
    }
  });

  it('the lock goes with the session of a holder that dies (PostgreSQL ends its session)', async () => {
    const other = knexFactory({ client: 'pg', connection: url, pool: { min: 1, max: 1 } });
    try {
      const pid = await other
        .transaction(async () => undefined)
        .then(async () => {
          const r = (await other.raw('select pg_advisory_lock(?), pg_backend_pid() as pid', [LOCK_KEY])) as {
            rows: { pid: number }[];
          };
          return r.rows[0]!.pid;
        });
      expect(await retain(a)).toEqual({ ran: false });
      expect(await left()).toBe(ROWS);
      // The holder's process is killed: its backend goes, and the lock with it.
      await pools[0]!.raw('select pg_terminate_backend(?)', [pid]);
      for (let i = 0; i < 50 && (await holders()) > 0; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await retain(a)).toMatchObject({ ran: true, deleted: ROWS });
    } finally {
      await other.destroy();
    }
  });
});
