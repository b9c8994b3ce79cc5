import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { type AuditView, toRecord } from '../../services/ca/src/cli/commands/audit';
import { auditExport } from '../../services/ca/src/cli/commands/audit-retention';
import { type AuditVerdict, auditVerifier } from '../../services/ca/src/domain/audit';
import {
  type AuditCheckpoint,
  checkpointChainProblem,
  checkpointSignatureProblem,
} from '../../services/ca/src/domain/audit-checkpoint';
import { EXPORT_PAGE } from '../../services/ca/src/domain/audit-retention';
import { describeEachBackend } from '../support/database';
import { callAs } from '../support/https';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir } from '../support/tools';

/**
 * Issue 20, items 3 and 4 over the HTTP API with an injected clock: export (JSON lines of sealed
 * rows with their chain columns) → prune (admin only, refused within --retain-audit, recorded in
 * the chain) → the kept chain verifies from its first row; and a signed checkpoint of the head that
 * still holds after the rows before it were pruned.
 */

const TD = 'audit-retention.example.org';
const DAY = 86_400_000;

type Cred = { cert: string; key: string };

describeEachBackend('audit export, prune and checkpoints (issue 20)', (backend) => {
  let t: TestServer;
  let admin: Cred;
  let auditor: Cred;
  let operator: Cred;
  const call = (cred: Cred, method: string, path: string, body?: unknown) =>
    callAs(t, cred, method, path, body);
  const fresh = async () => {
    admin = await t.issueAdmin('admin', 'alice');
    auditor = await t.issueAdmin('auditor', 'audrey');
    operator = await t.issueAdmin('operator', 'olga');
  };
  /** Rows recorded at the clock's time: tokens created by the admin. */
  const record = async (n: number) => {
    for (let i = 0; i < n; i++)
      expect((await call(admin, 'POST', '/v1/admin/tokens', { role: 'worker' })).status).toBe(201);
  };
  const chain = async (): Promise<AuditView[]> => {
    // The whole sealed chain, in pages of the API's largest limit (by seal_seq, as audit verify reads it).
    const rows: AuditView[] = [];
    for (let after = 0; ; ) {
      const r = await call(auditor, 'GET', `/v1/admin/audit?sealed_after=${after}&limit=1000`);
      expect(r.status).toBe(200);
      const page = r.json<{ events: AuditView[] }>().events;
      rows.push(...page);
      if (page.length < 1000) return rows;
      after = page.at(-1)!.seal_seq!;
    }
  };
  const verify = (rows: AuditView[], anchored = false): AuditVerdict => {
    const v = auditVerifier({ anchored });
    for (const r of rows) if (!v.check(toRecord(r))) break;
    return v.result();
  };
  const exportLines = async (before: Date) => {
    const r = await call(
      auditor,
      'GET',
      `/v1/admin/audit/export?before=${encodeURIComponent(before.toISOString())}`,
    );
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/x-ndjson');
    const text = r.body.toString('utf8');
    return text === ''
      ? []
      : text
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as AuditView);
  };

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
  });
  afterAll(async () => {
    await t.close();
  });

  it('checkpoint: 404 before anything is sealed; then the head, signed by the signing CA, for every admin role', async () => {
    await fresh();
    const none = await call(operator, 'GET', '/v1/admin/audit/checkpoint');
    expect(none.status).toBe(404);
    expect(none.json()).toEqual({
      error: { code: 'ERR_NOT_FOUND', message: expect.stringMatching(/^no audit row is sealed yet/) },
    });
    await record(3);
    await t.running.jobs.runOnce();
    const head = (await chain()).at(-1)!;
    for (const who of [admin, operator, auditor]) {
      const r = await call(who, 'GET', '/v1/admin/audit/checkpoint');
      expect(r.status).toBe(200);
      const cp = r.json<AuditCheckpoint>();
      expect(Object.keys(cp).sort()).toEqual(['at', 'certificate', 'hash', 'seq', 'signature']);
      expect(cp).toMatchObject({ seq: head.seal_seq, hash: head.hash, at: t.clock.now().toISOString() });
      expect(cp.certificate).toBe(t.ca.keyring.signing.certPem);
      expect(checkpointSignatureProblem(cp, { bundlePem: t.bundle, trustDomain: TD })).toBeNull();
    }
  });

  it('export → prune → the kept chain verifies from its first row; a checkpoint taken before still holds', async () => {
    // A server of its own, whose log starts with rows recorded a hundred days ago (appended as the
    // actions then would have: TLS holds the test's clock to the wall clock), then rows of today.
    const first = t;
    t = await startTestServer({ backend, trustDomain: TD });
    try {
      await fresh();
      const oldAt = new Date(t.clock.now().getTime() - 100 * DAY);
      for (let i = 0; i < 5; i++)
        await t.ca.storage.audit.append({
          at: oldAt,
          event: 'token.created',
          actor: `spiffe://${TD}/admin/old`,
          source: '10.0.0.9',
          subject: `token/old-${i}`,
          outcome: 'success',
          details: { i },
        });
      await t.running.jobs.runOnce();
      // A checkpoint whose head is the newest old row.
      const oldHead = (await call(auditor, 'GET', '/v1/admin/audit/checkpoint')).json<AuditCheckpoint>();
      await record(2);
      await t.running.jobs.runOnce();
      const cp = (await call(operator, 'GET', '/v1/admin/audit/checkpoint')).json<AuditCheckpoint>();
      const old = (await chain()).slice(0, 5);
      expect(old.map((e) => e.seal_seq)).toEqual([1, 2, 3, 4, 5]);
      const cut = new Date(t.clock.now().getTime() - 95 * DAY);

      // Within --retain-audit (90d by default): refused, nothing deleted.
      const early = await call(admin, 'POST', '/v1/admin/audit/prune', {
        before: new Date(t.clock.now().getTime() - 89 * DAY).toISOString(),
      });
      expect(early.status).toBe(400);
      expect(early.json()).toMatchObject({
        error: {
          code: 'ERR_BAD_REQUEST',
          message: expect.stringMatching(/^before: rows of the last 90d are kept/),
        },
      });
      // Pruning is the admin role's; exporting, the roles that read the log.
      expect(
        (await call(auditor, 'POST', '/v1/admin/audit/prune', { before: cut.toISOString() })).status,
      ).toBe(403);
      expect((await call(operator, 'GET', `/v1/admin/audit/export?before=${cut.toISOString()}`)).status).toBe(
        403,
      );
      expect((await chain()).length).toBe(7);

      const exported = await exportLines(cut);
      expect(exported).toEqual(old);
      expect(verify(exported, true)).toEqual({ ok: true, rows: 5, from: 1 });

      const pruned = await call(admin, 'POST', '/v1/admin/audit/prune', { before: cut.toISOString() });
      expect(pruned.status).toBe(200);
      expect(pruned.json()).toEqual({ pruned: 5, first_seq: 1, through_seq: 5, done: true });
      const kept = await chain();
      expect(kept.map((e) => e.seal_seq)).toEqual([6, 7, 8]);
      // The export's last hash is the kept chain's anchor; the prune's record is the newest row.
      expect(kept[0]!.prev_hash).toBe(exported.at(-1)!.hash);
      expect(kept[2]).toMatchObject({
        event: 'audit.pruned',
        actor: `spiffe://${TD}/admin/alice`,
        details: { before: cut.toISOString(), first_seq: 1, through_seq: 5 },
      });
      expect(verify(kept)).toEqual({ ok: true, rows: 3, from: 6 });
      // The same date again: nothing left.
      expect(
        (await call(admin, 'POST', '/v1/admin/audit/prune', { before: cut.toISOString() })).json(),
      ).toEqual({
        pruned: 0,
        first_seq: null,
        through_seq: null,
        done: true,
      });
      expect(await exportLines(cut)).toEqual([]);
      const seen = (c: AuditCheckpoint) => ({
        from: kept[0]!.seal_seq!,
        last: kept.at(-1)!.seal_seq!,
        hashAtSeq: kept.find((e) => e.seal_seq === c.seq)?.hash ?? undefined,
      });
      // The checkpoint taken after the old rows still holds; the one whose row was pruned says so.
      expect(checkpointChainProblem(cp, seen(cp))).toBeNull();
      expect(checkpointChainProblem(oldHead, seen(oldHead))).toMatch(
        /^its row was pruned \(the chain starts at seal_seq 6\)/,
      );
    } finally {
      await t.close();
      t = first;
    }
  });

  it('fail/an export cut short (the database fails after the first page) leaves no file, and says so', async () => {
    await fresh();
    const dir = tempDir('baton-audit-export-');
    const out = join(dir.path, 'archive.jsonl');
    const adminDir = join(dir.path, 'admin');
    mkdirSync(adminDir);
    writeFileSync(join(adminDir, 'cert.pem'), auditor.cert);
    writeFileSync(join(adminDir, 'key.pem'), auditor.key);
    writeFileSync(join(adminDir, 'bundle.pem'), t.bundle);
    for (let i = 0; i < EXPORT_PAGE + 10; i++)
      await t.ca.storage.audit.append({
        at: t.clock.now(),
        event: 'test.filler',
        actor: 'system',
        source: null,
        subject: null,
        outcome: 'success',
        details: { i },
      });
    await t.running.jobs.runOnce();
    const exportTo = async () => {
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      const code = await auditExport.run({
        flags: { before: '2999-01-01', out, server: t.url, 'admin-dir': adminDir },
        positionals: [],
        env: {},
        stdout,
        stderr,
        stopSignal: new Promise(() => undefined),
      });
      return { code, stdout: String(stdout.read() ?? '') };
    };
    const audit = t.ca.storage.audit;
    const sealedAfter = audit.sealedAfter;
    let calls = 0;
    audit.sealedAfter = async (after, limit) => {
      calls += 1;
      if (calls > 1) throw new Error('the database went away');
      return sealedAfter(after, limit);
    };
    try {
      const e = await exportTo().then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toMatchObject({
        code: 'ERR_SERVER_UNREACHABLE',
        message: expect.stringMatching(/was cut short$/),
      });
      expect(calls).toBe(2);
      // Neither the file nor its partial beside it.
      expect(readdirSync(dir.path)).toEqual(['admin']);
    } finally {
      audit.sealedAfter = sealedAfter;
    }
    const ok = await exportTo();
    expect(ok.code).toBe(0);
    const rows = (await chain()).length;
    expect(ok.stdout).toBe(`exported ${rows} rows, seal_seq 1 to ${rows}, to ${out}\n`);
    expect(readFileSync(out, 'utf8').trimEnd().split('\n')).toHaveLength(rows);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    dir.cleanup();
  });

  it('fail/bad parameters are 400 naming the field', async () => {
    await fresh();
    for (const q of ['', '?before=yesterday', '?before=2026-01-01&after_seq=-1']) {
      const r = await call(auditor, 'GET', `/v1/admin/audit/export${q}`);
      expect(r.status).toBe(400);
      expect(r.json<{ error: { message: string } }>().error.message).toMatch(/^(before|after_seq): /);
    }
    for (const body of [{}, { before: 'soon' }, { before: '2020-01-01', max_rows: 0 }, { before: 5 }]) {
      const r = await call(admin, 'POST', '/v1/admin/audit/prune', body);
      expect(r.status).toBe(400);
      expect(r.json<{ error: { message: string } }>().error.message).toMatch(/^(before|max_rows): /);
    }
  });
});
