import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { auditHash } from '../../services/ca/src/domain/audit';
import type { AuditRecord } from '../../services/ca/src/domain/ports';
import { openDatabase } from '../../services/ca/src/storage/knex/database';
import { baton, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { tempDir } from '../support/tools';

/**
 * Issue 20, items 3 and 4 with the built CLI against a spawned server, on the embedded PGlite (the
 * server stops while the test edits its data dir) and on PostgreSQL: `audit checkpoint > FILE`,
 * `audit verify --checkpoint FILE` (tampered file, rows appended, a row changed, the chain
 * rewritten, the tail cut), `audit export --before` → `audit prune --before` → `audit verify`.
 */

const TD = 'audit-retention-cli.example.org';
const SLOW = 180_000;
/** Rows recorded in 2020, before `ca init`: the oldest part of the chain, older than --retain-audit. */
const OLD_ROWS = 30;
const OLD_BEFORE = '2021-01-01';

interface Row {
  id: string | number;
  at: Date;
  event: string;
  actor: string;
  source: string | null;
  subject: string | null;
  outcome: 'success' | 'failure';
  details: Record<string, unknown>;
  seal_seq: string | number;
  prev_hash: Uint8Array | null;
  hash: Uint8Array;
}

const asRecord = (r: Row): AuditRecord => ({
  id: Number(r.id),
  at: new Date(r.at),
  event: r.event,
  actor: r.actor,
  source: r.source,
  subject: r.subject,
  outcome: r.outcome,
  details: r.details,
  sealSeq: Number(r.seal_seq),
  prevHash: r.prev_hash ? Buffer.from(r.prev_hash) : null,
  hash: Buffer.from(r.hash),
});

describeEachBackend(
  'baton audit checkpoint / export / prune / verify --checkpoint (CLI)',
  (backend: Backend) => {
    const dir = tempDir('baton-audit-retention-cli-');
    const dataDir = join(dir.path, 'data');
    const cpFile = join(dir.path, 'checkpoint.json');
    let env: Env = { BATON_BACKGROUND_INTERVAL: '1s' };
    let drop: () => Promise<void> = async () => {};
    let server: ServerProcess;
    let cp: { seq: number; hash: string; at: string; signature: string; certificate: string };

    const cli = (args: string[]) => baton([...args, '--server', server.url, '--data-dir', dataDir], env);
    const db = () => openDatabase({ dataDir, databaseUrl: env.BATON_DATABASE_URL });
    /** A direct edit of the database, as an intruder with database access would make it. */
    const tamper = async (edit: (knex: Knex) => Promise<void>) => {
      if (backend === 'pglite') expect(await server.stop()).toBe(0);
      const knex = db();
      try {
        await edit(knex);
      } finally {
        await knex.destroy();
      }
      if (backend === 'pglite') server = await startServerProcess(['--data-dir', dataDir], env);
    };
    /** `audit verify --json` once the background job has sealed every row. */
    const sealed = async () => {
      for (let i = 0; ; i++) {
        const v = JSON.parse(cli(['audit', 'verify', '--json']).stdout) as { unsealed: number; rows: number };
        if (v.unsealed === 0 || i === 30) return v;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    };
    const verifyCheckpoint = (file = cpFile) => cli(['audit', 'verify', '--checkpoint', file]);
    const name = (file: string, seq: number) => `audit checkpoint ${file} (seal_seq ${seq})`;

    beforeAll(async () => {
      if (backend === 'postgres') {
        const pg = await createPostgresDatabase();
        drop = pg.drop;
        env = { ...env, BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
      }
      expect(baton(['migrate', '--data-dir', dataDir], env).status).toBe(0);
      const knex = db();
      try {
        await knex('audit_log').insert(
          Array.from({ length: OLD_ROWS }, (_, i) => ({
            at: new Date(Date.UTC(2020, 0, 1, 0, 0, i)),
            event: 'token.created',
            actor: `spiffe://${TD}/admin/before`,
            source: '10.0.0.7',
            subject: `token/old-${i}`,
            outcome: 'success',
            details: JSON.stringify({ i }),
          })),
        );
      } finally {
        await knex.destroy();
      }
      expect(baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir], env).status).toBe(0);
      server = await startServerProcess(['--data-dir', dataDir], env);
      await sealed();
    }, SLOW);
    afterAll(async () => {
      await server?.stop();
      await drop();
      dir.cleanup();
    });

    it(
      'audit checkpoint > FILE; verify --checkpoint FILE holds, and still holds with more rows appended',
      async () => {
        const r = cli(['audit', 'checkpoint']);
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        cp = JSON.parse(r.stdout);
        expect(Object.keys(cp).sort()).toEqual(['at', 'certificate', 'hash', 'seq', 'signature']);
        expect(cp.seq).toBeGreaterThan(OLD_ROWS);
        writeFileSync(cpFile, r.stdout);
        const v = verifyCheckpoint();
        expect(v.stderr).toBe('');
        expect(v.status).toBe(0);
        expect(v.stdout).toBe(
          `audit log verified: ${cp.seq} sealed rows, chain intact\n${name(cpFile, cp.seq)} holds\n`,
        );
        for (let i = 0; i < 2; i++) expect(cli(['token', 'create', '--role', 'worker']).status).toBe(0);
        expect((await sealed()).rows).toBe(cp.seq + 2);
        expect(verifyCheckpoint().stdout).toMatch(/ holds\n$/);
      },
      SLOW,
    );

    it(
      'a tampered checkpoint file (hash, seq, at or signature edited) fails, naming it',
      () => {
        const edits: [string, Partial<typeof cp>][] = [
          ['hash', { hash: `${cp.hash.slice(0, -1)}${cp.hash.endsWith('0') ? '1' : '0'}` }],
          ['seq', { seq: cp.seq - 1 }],
          ['at', { at: new Date(Date.parse(cp.at) + 1000).toISOString() }],
          [
            'signature',
            {
              signature: (() => {
                const s = Buffer.from(cp.signature, 'base64');
                s[s.length - 1]! ^= 1;
                return s.toString('base64');
              })(),
            },
          ],
        ];
        for (const [field, edit] of edits) {
          const file = join(dir.path, `edited-${field}.json`);
          const edited = { ...cp, ...edit };
          writeFileSync(file, JSON.stringify(edited));
          const r = verifyCheckpoint(file);
          expect({ field, status: r.status, stderr: r.stderr, stdout: r.stdout }).toEqual({
            field,
            status: 1,
            stderr: `baton: ${name(file, edited.seq)}: the signature does not verify\n`,
            stdout: '',
          });
        }
        const junk = join(dir.path, 'junk.json');
        writeFileSync(junk, '{"seq":1}');
        expect(verifyCheckpoint(junk)).toMatchObject({
          status: 1,
          stderr: `baton: audit checkpoint ${junk}: not a checkpoint: hash: 64 lowercase hex digits\n`,
        });
      },
      SLOW,
    );

    it(
      'audit export --before → audit prune --before → audit verify from the first kept row; the checkpoint still holds',
      () => {
        const archive = join(dir.path, 'archive.jsonl');
        const ex = cli(['audit', 'export', '--before', OLD_BEFORE, '--out', archive]);
        expect(ex.stderr).toBe('');
        expect(ex.status).toBe(0);
        expect(ex.stdout).toBe(`exported ${OLD_ROWS} rows, seal_seq 1 to ${OLD_ROWS}, to ${archive}\n`);
        const lines = readFileSync(archive, 'utf8')
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l));
        expect(lines.map((l) => l.seal_seq)).toEqual(Array.from({ length: OLD_ROWS }, (_, i) => i + 1));
        for (const l of lines)
          expect(Object.keys(l)).toEqual(expect.arrayContaining(['seal_seq', 'prev_hash', 'hash']));
        // To stdout, the same lines.
        expect(cli(['audit', 'export', '--before', OLD_BEFORE]).stdout).toBe(readFileSync(archive, 'utf8'));

        // Rows of the last 90 days are kept.
        const early = cli(['audit', 'prune', '--before', new Date().toISOString()]);
        expect(early.status).toBe(1);
        expect(early.stderr).toMatch(
          /^baton: before: rows of the last 90d are kept \(--retain-audit\): at most .* \(ERR_BAD_REQUEST\)\n$/,
        );

        const pr = cli(['audit', 'prune', '--before', OLD_BEFORE]);
        expect(pr.stderr).toBe('');
        expect(pr.status).toBe(0);
        expect(pr.stdout).toBe(
          `pruned ${OLD_ROWS} rows, seal_seq 1 to ${OLD_ROWS}; the chain now starts at seal_seq ${OLD_ROWS + 1}\n`,
        );
        const v = cli(['audit', 'verify']);
        expect(v.status).toBe(0);
        expect(v.stdout).toMatch(
          new RegExp(
            `^audit log verified: \\d+ sealed rows from seal_seq ${OLD_ROWS + 1} \\(its prev_hash is the anchor: the rows before it were pruned\\), chain intact`,
          ),
        );
        expect(verifyCheckpoint().stdout).toMatch(/ holds\n$/);
        // The archive ends where the kept chain is anchored.
        const first = (
          JSON.parse(cli(['audit', 'list', '--json']).stdout) as {
            events: { seal_seq: number; prev_hash: string }[];
          }
        ).events.find((e) => e.seal_seq === OLD_ROWS + 1);
        expect(first?.prev_hash).toBe(lines.at(-1).hash);
        expect(cli(['audit', 'list', '--json', '--event', 'audit.pruned']).stdout).toContain(
          `"through_seq":${OLD_ROWS}`,
        );
      },
      SLOW,
    );

    it(
      'a row at or before the checkpoint changed: verify --checkpoint fails naming the checkpoint',
      async () => {
        const target = OLD_ROWS + 2;
        await tamper(async (k) => {
          expect(
            await k('audit_log').where('seal_seq', target).update({ outcome: 'failure' }).returning('id'),
          ).toHaveLength(1);
        });
        const r = verifyCheckpoint();
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(
          new RegExp(
            `^baton: ${name(cpFile, cp.seq).replace(/[()]/g, '\\$&')} does not hold: row \\d+ \\(seal_seq ${target}\\) was changed\\n$`,
          ),
        );
        await tamper(async (k) => {
          await k('audit_log').where('seal_seq', target).update({ outcome: 'success' });
        });
        expect(verifyCheckpoint().status).toBe(0);
      },
      SLOW,
    );

    it(
      'the chain rewritten from a row before the checkpoint verifies on its own, but not against the checkpoint',
      async () => {
        // The first kept row (the prune left it): at or before the checkpoint's.
        const from = OLD_ROWS + 1;
        expect(from).toBeLessThanOrEqual(cp.seq);
        let saved: Row[] = [];
        await tamper(async (k) => {
          saved = (await k('audit_log').where('seal_seq', '>=', from).orderBy('seal_seq')) as Row[];
          // What someone with write access to the database can do: edit a row, then hash every row
          // from it onwards again (the hash is not keyed).
          let prev: Buffer | null = saved[0]!.prev_hash ? Buffer.from(saved[0]!.prev_hash) : null;
          for (const [i, r] of saved.entries()) {
            const rec = { ...asRecord(r), ...(i === 0 ? { outcome: 'failure' as const } : {}) };
            const hash = auditHash(rec, prev);
            await k('audit_log').where('id', r.id).update({ outcome: rec.outcome, prev_hash: prev, hash });
            prev = hash;
          }
        });
        const plain = cli(['audit', 'verify']);
        expect(plain.status).toBe(0);
        const r = verifyCheckpoint();
        expect(r.status).toBe(1);
        expect(r.stderr).toBe(
          `baton: ${name(cpFile, cp.seq)} does not hold: its row has another hash: the chain was rewritten at or before it\n`,
        );
        await tamper(async (k) => {
          for (const row of saved)
            await k('audit_log')
              .where('id', row.id)
              .update({ outcome: row.outcome, prev_hash: row.prev_hash, hash: row.hash });
        });
        expect(verifyCheckpoint().status).toBe(0);
      },
      SLOW,
    );

    it(
      'rows cut off from the tail (the last rows deleted by SQL): verify --checkpoint fails naming the checkpoint',
      async () => {
        // A row after the prune's record (the head is that record now, and it must stay: the cut
        // below would take it, and the kept chain would no longer account for its front), then a
        // checkpoint of the head, then more rows.
        expect(cli(['token', 'create', '--role', 'worker']).status).toBe(0);
        await sealed();
        const later = join(dir.path, 'later.json');
        const r0 = cli(['audit', 'checkpoint']);
        expect(r0.status).toBe(0);
        writeFileSync(later, r0.stdout);
        const seq = (JSON.parse(r0.stdout) as { seq: number }).seq;
        for (let i = 0; i < 2; i++) expect(cli(['token', 'create', '--role', 'worker']).status).toBe(0);
        await sealed();
        await tamper(async (k) => {
          expect((await k('audit_log').where('seal_seq', '>=', seq).delete().returning('id')).length).toBe(3);
        });
        // On its own the shorter chain verifies: that is what a checkpoint is for.
        expect(cli(['audit', 'verify']).status).toBe(0);
        const r = verifyCheckpoint(later);
        expect(r.status).toBe(1);
        expect(r.stderr).toBe(
          `baton: ${name(later, seq)} does not hold: the chain ends at seal_seq ${seq - 1}: rows were cut off from its tail\n`,
        );
        const json = cli(['audit', 'verify', '--checkpoint', later, '--json']);
        expect(json.status).toBe(1);
        expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, checkpoint: { seq, ok: false } });
        // The first checkpoint's row is before the cut: it still holds.
        expect(verifyCheckpoint().status).toBe(0);
      },
      SLOW,
    );
  },
);
