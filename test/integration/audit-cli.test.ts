import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { openDatabase } from '../../services/ca/src/storage/knex/database';
import { baton, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { tempDir } from '../support/tools';

/**
 * Issue 6, "what must be true": editing or deleting one audit row directly in the database makes
 * `baton audit verify` exit 1 naming that row; an untouched log verifies. The built CLI against a
 * spawned server, on the embedded PGlite (one process at a time: the server stops while the test
 * edits its data dir) and on PostgreSQL (the server stays up).
 */

const TD = 'audit.example.org';
/** On PGlite every direct edit stops and restarts the server; on a busy machine that takes a while. */
const SLOW = 180_000;

interface AuditView {
  id: number;
  event: string;
  actor: string;
  source: string | null;
  subject: string | null;
  outcome: string;
  details: Record<string, unknown>;
  seal_seq: number | null;
}

describeEachBackend('baton audit list / verify (CLI)', (backend: Backend) => {
  const dir = tempDir('baton-audit-cli-');
  const dataDir = join(dir.path, 'data');
  /** Rows are sealed by the server's background job only (issue 14): a short interval for the test. */
  let env: Env = { BATON_BACKGROUND_INTERVAL: '1s' };
  let drop: () => Promise<void> = async () => {};
  let server: ServerProcess;
  let tokenId = '';

  const cli = (args: string[]) => baton([...args, '--server', server.url, '--data-dir', dataDir], env);
  const list = (args: string[] = []): AuditView[] => {
    const r = cli(['audit', 'list', '--json', ...args]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // One document in the API's shape, every page merged (issue 20).
    const doc = JSON.parse(r.stdout) as { events: AuditView[]; next: null };
    expect(doc.next).toBeNull();
    return doc.events;
  };
  const verify = () => cli(['audit', 'verify']);
  /** `audit verify --json` once the background job has sealed every row (it seals, a read does not). */
  const verifiedWhenSealed = async () => {
    for (let i = 0; ; i++) {
      const r = cli(['audit', 'verify', '--json']);
      expect(r.status).toBe(0);
      const v = JSON.parse(r.stdout) as { ok: boolean; rows: number; unsealed: number };
      if (v.unsealed === 0 || i === 30) return v;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };
  /** A direct edit of the database, as an intruder with database access would make it. */
  const tamper = async (edit: (knex: Knex) => Promise<void>) => {
    if (backend === 'pglite') {
      expect(() => openDatabase({ dataDir })).toThrow(/is in use by process \d+/);
      expect(await server.stop()).toBe(0);
    }
    const knex = openDatabase({ dataDir, databaseUrl: env.BATON_DATABASE_URL });
    try {
      await edit(knex);
    } finally {
      await knex.destroy();
    }
    if (backend === 'pglite') server = await startServerProcess(['--data-dir', dataDir], env);
  };

  beforeAll(async () => {
    if (backend === 'postgres') {
      const pg = await createPostgresDatabase();
      drop = pg.drop;
      env = { ...env, BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
    }
    expect(baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir], env).status).toBe(0);
    server = await startServerProcess(['--data-dir', dataDir], env);
  }, SLOW);
  afterAll(async () => {
    await server?.stop();
    await drop();
    dir.cleanup();
  });

  it(
    'audit list --event node.attested --json shows the attestation with the token that was spent',
    () => {
      const created = cli(['token', 'create', '--role', 'worker']);
      expect(created.status).toBe(0);
      const token = created.stdout.trim();
      tokenId = /-([0-9a-f]{16})\./.exec(token)![1]!;
      const agent = baton(
        ['agent', '--server', server.url, '--token', token, '--dir', join(dir.path, 'node'), '--once'],
        env,
      );
      expect(agent.status).toBe(0);
      const nodeId = /attested node (\S+)/.exec(agent.stdout)![1]!;

      const attested = list(['--event', 'node.attested']);
      expect(attested).toEqual([
        expect.objectContaining({
          event: 'node.attested',
          actor: 'anonymous',
          subject: `spiffe://${TD}/node/${nodeId}`,
          outcome: 'success',
          source: expect.stringMatching(/127\.0\.0\.1$/),
          details: expect.objectContaining({ method: 'join_token', token_id: tokenId }),
        }),
      ]);
      const all = list();
      expect(all.map((e) => e.event).reverse()).toEqual([
        'ca.initialized',
        'admin.issued',
        'token.created',
        'node.attested',
      ]);
      expect(all.find((e) => e.event === 'ca.initialized')?.actor).toMatch(/^cli:/);
      expect(list(['--actor', `spiffe://${TD}/admin/admin`]).map((e) => e.event)).toEqual(['token.created']);
      expect(list(['--subject', `token/${tokenId}`])).toHaveLength(1);
      expect(JSON.stringify(all)).not.toContain(token.slice(token.lastIndexOf('.') + 1));

      const table = cli(['audit', 'list', '--event', 'token.created']);
      expect(table.status).toBe(0);
      expect(table.stdout).toMatch(/^ID\s+TIME\s+EVENT\s+OUTCOME\s+ACTOR\s+SUBJECT\n/);
      expect(table.stdout).toContain(`token/${tokenId}`);
      const bad = cli(['audit', 'list', '--since', 'yesterday']);
      expect(bad.status).toBe(1);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    },
    SLOW,
  );

  it(
    'audit verify exits 0 on an untouched log',
    async () => {
      const r = verify();
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(
        /^audit log verified: \d+ sealed rows, chain intact( \(\d+ not sealed yet\))?\n$/,
      );
      expect(await verifiedWhenSealed()).toEqual({
        ok: true,
        rows: expect.any(Number),
        from: 1,
        unsealed: 0,
      });
      expect(verify().stdout).toMatch(/^audit log verified: \d+ sealed rows, chain intact\n$/);
    },
    SLOW,
  );

  it(
    'audit verify exits 1 naming the row after an UPDATE of it, and 0 again once it is put back',
    async () => {
      const row = list(['--subject', `token/${tokenId}`])[0]!;
      expect(row.seal_seq).not.toBeNull();
      await tamper(async (knex) => {
        expect(await knex('audit_log').where('id', row.id).update({ outcome: 'failure' })).toBe(1);
      });
      const r = verify();
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(
        `baton: audit log tampered: row ${row.id} (seal_seq ${row.seal_seq}) was changed\n`,
      );
      expect(r.stdout).toBe('');

      await tamper(async (knex) => {
        await knex('audit_log').where('id', row.id).update({ outcome: row.outcome });
      });
      expect(verify().status).toBe(0);
    },
    SLOW,
  );

  it(
    'audit verify exits 1 naming the place of a DELETEd row',
    async () => {
      const rows = list().reverse();
      const row = rows.find((e) => e.subject === `token/${tokenId}`)!;
      const next = rows.find((e) => e.seal_seq === row.seal_seq! + 1)!;
      await tamper(async (knex) => {
        // `returning`: knex-pglite answers a DELETE with a raw result, not a count.
        expect(await knex('audit_log').where('id', row.id).delete().returning('id')).toHaveLength(1);
      });
      const r = verify();
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(
        `baton: audit log tampered: row with seal_seq ${row.seal_seq} is missing (before row ${next.id})\n`,
      );
      const json = cli(['audit', 'verify', '--json']);
      expect(json.status).toBe(1);
      expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, sealSeq: row.seal_seq, problem: 'removed' });
    },
    SLOW,
  );
});
