import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { migrations } from '../../migrations';
import { migrateLatest, migrateRollbackAll } from '../../services/ca/src/storage/knex/database';
import { type TestDatabase, createTestDatabase, describeEachBackend } from '../support/database';

const MIGRATIONS_DIR = join(__dirname, '../../migrations');
const MIGRATION_FILE = /^\d{14}_.*\.ts$/;
const TABLES = ['installation', 'cas', 'certificates'];

describeEachBackend('Migrations', (backend) => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase(backend);
  });
  afterAll(() => db.drop());

  const existing = async (): Promise<string[]> => {
    const found: string[] = [];
    for (const t of TABLES) if (await db.knex.schema.hasTable(t)) found.push(t);
    return found;
  };
  const applied = async (): Promise<string[]> =>
    (await db.knex('baton_migrations').orderBy('id')).map((r: { name: string }) => r.name);

  it('ok/latest -> rollback all -> latest', async () => {
    const names = migrations.map((m) => m.name);
    expect(await existing()).toEqual([]);

    expect(await migrateLatest(db.knex)).toEqual(names);
    expect(await existing()).toEqual(TABLES);
    expect(await applied()).toEqual(names);
    // A second latest has nothing to do.
    expect(await migrateLatest(db.knex)).toEqual([]);

    await migrateRollbackAll(db.knex);
    expect(await existing()).toEqual([]);
    expect(await applied()).toEqual([]);

    expect(await migrateLatest(db.knex)).toEqual(names);
    expect(await existing()).toEqual(TABLES);
    expect(await applied()).toEqual(names);
  });

  it('ok/20261208120000 makes the list cursor key: one row of 256 random bits, a new one each time', async () => {
    const key = async () => {
      const rows = (await db.knex('list_cursor_key').select('id', 'key')) as {
        id: number;
        key: Uint8Array;
      }[];
      expect(rows.map((r) => [r.id, r.key.length])).toEqual([[1, 32]]);
      return Buffer.from(rows[0]!.key);
    };
    await migrateLatest(db.knex);
    const first = await key();
    await migrateRollbackAll(db.knex);
    await migrateLatest(db.knex);
    expect(await key()).not.toStrictEqual(first);
  });
});

describe('migrations/index.ts', () => {
  const files = readdirSync(MIGRATIONS_DIR)
    .filter((f) => MIGRATION_FILE.test(f))
    .sort();

  it('ok/lists every migration file, in name order (none can be forgotten)', () => {
    expect(files.length).toBeGreaterThan(0);
    expect(migrations.map((m) => `${m.name}.ts`)).toEqual(files);
  });

  it('ok/every entry runs the up and down of the file it is named after', async () => {
    for (const m of migrations) {
      const mod = (await import(join(MIGRATIONS_DIR, m.name))) as Pick<typeof m, 'up' | 'down'>;
      expect({ name: m.name, up: m.up, down: m.down }).toEqual({ name: m.name, up: mod.up, down: mod.down });
    }
  });

  it('ok/no other file in migrations/ looks like a misnamed migration', () => {
    const strays = readdirSync(MIGRATIONS_DIR).filter((f) => f !== 'index.ts' && !MIGRATION_FILE.test(f));
    expect(strays).toEqual([]);
  });
});
