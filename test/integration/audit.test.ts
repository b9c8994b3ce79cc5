import knexFactory, { type Knex } from 'knex';
import { type AuditView, toRecord } from '../../services/ca/src/cli/commands/audit';
import { type AuditVerdict, auditVerifier, SEAL_BATCH, sealAudit } from '../../services/ca/src/domain/audit';
import { issueJoinToken } from '../../services/ca/src/domain/join-token';
import type { Storage } from '../../services/ca/src/domain/ports';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { describeEachBackend } from '../support/database';
import { callAs } from '../support/https';
import { attest, type IssuanceBody, keyAndCsr, renew } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';

/**
 * Issue 6: the tamper-evident audit log over the real HTTP API. Every security event of a node's
 * life lands as a row with who, from where, about what and how it ended; no row carries a secret;
 * the sealed rows form one hash chain, also with concurrent writers and sealers; and changing,
 * deleting or reordering one sealed row in the database makes verification name that row.
 */

const TD = 'test.example.org';
const MINUTE = 60_000;

type Cred = { cert: string; key: string };

const secretOf = (token: string) => token.slice(token.lastIndexOf('.') + 1);

describeEachBackend('audit log', (backend) => {
  let t: TestServer;
  let operator: Cred;
  let auditor: Cred;
  /** Every join token this file saw, to prove no secret reached the log. */
  const tokens: string[] = [];

  const call = (cred: Cred, method: string, path: string, body?: unknown) =>
    callAs(t, cred, method, path, body);
  const createToken = async (cred: Cred, body: Record<string, unknown> = { role: 'worker' }) => {
    const r = await call(cred, 'POST', '/v1/admin/tokens', body);
    expect(r.status).toBe(201);
    const b = r.json<{ token: string; id: string }>();
    tokens.push(b.token);
    return b;
  };
  /** Every event the query names, newest first: the pages followed to the end (or one page of `limit`). */
  const audit = async (query: Record<string, string> = {}): Promise<AuditView[]> => {
    const events: AuditView[] = [];
    let after: string | null = null;
    do {
      const q = new URLSearchParams({ limit: '1000', ...query, ...(after ? { after } : {}) });
      const r = await call(auditor, 'GET', `/v1/admin/audit?${q}`);
      expect(r.status).toBe(200);
      const page = r.json<{ events: AuditView[]; next: string | null }>();
      events.push(...page.events);
      after = query.limit ? null : page.next;
    } while (after);
    return events;
  };
  const newestId = async () => (await audit({ limit: '1' }))[0]?.id ?? 0;
  /** The chain as `baton audit verify` walks it: small pages of sealed rows, every hash recomputed. */
  const verifyOverApi = async (pageSize = 7): Promise<AuditVerdict & { unsealed: number }> => {
    const verifier = auditVerifier();
    let after = 0;
    let unsealed = 0;
    for (;;) {
      const r = await call(auditor, 'GET', `/v1/admin/audit?sealed_after=${after}&limit=${pageSize}`);
      expect(r.status).toBe(200);
      const page = r.json<{ events: AuditView[]; unsealed: number }>();
      unsealed = page.unsealed;
      for (const e of page.events) if (!verifier.check(toRecord(e))) break;
      if (page.events.length < pageSize || !verifier.result().ok) break;
      after = page.events[page.events.length - 1]!.seal_seq!;
    }
    return { ...verifier.result(), unsealed };
  };
  const sealedRows = async (): Promise<{ id: number; seal_seq: number }[]> =>
    (await t.ca.knex('audit_log').select('id', 'seal_seq').whereNotNull('seal_seq').orderBy('seal_seq')).map(
      (r: { id: string | number; seal_seq: string | number }) => ({
        id: Number(r.id),
        seal_seq: Number(r.seal_seq),
      }),
    );

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const o = await t.issueAdmin('operator', 'ops');
    const a = await t.issueAdmin('auditor', 'aud');
    operator = { cert: o.cert, key: o.key };
    auditor = { cert: a.cert, key: a.key };
  });
  afterAll(async () => {
    await t.close();
  });

  it('records a node lifecycle: token created, attested with the token id, renewed, workload issued, entry created and deleted, node revoked', async () => {
    const since = await newestId();
    const ops = `spiffe://${TD}/admin/ops`;
    const nodeId = `spiffe://${TD}/node/n1`;
    const web = `spiffe://${TD}/web`;

    const tok = await createToken(operator, { role: 'worker', node_name: 'n1' });
    const k1 = await keyAndCsr();
    const a = await attest(t, { method: 'join_token', token: tok.token, csr: k1.csrPem });
    expect(a.status).toBe(201);
    const attested = a.json<IssuanceBody>();
    const k2 = await keyAndCsr();
    const rn = await renew(t, { cert: attested.certificate_chain, key: k1.keyPem }, k2.csrPem);
    expect(rn.status).toBe(201);
    const renewed = rn.json<IssuanceBody>();
    const node = { cert: renewed.certificate_chain, key: k2.keyPem };
    expect(
      (await call(operator, 'POST', '/v1/admin/entries', { name: 'web', spiffe_id: web, parent: 'n1' }))
        .status,
    ).toBe(201);
    const wk = await keyAndCsr();
    const w = await call(node, 'POST', '/v1/workload-svids', { spiffe_id: web, csr: wk.csrPem });
    expect(w.status).toBe(201);
    const workload = w.json<IssuanceBody>();
    expect((await call(operator, 'DELETE', '/v1/admin/entries/web')).status).toBe(204);
    expect(
      (await call(operator, 'POST', '/v1/admin/nodes/n1/revoke', { reason: 'key-compromise' })).status,
    ).toBe(200);

    const rows = (await audit()).filter((e) => e.id > since).reverse();
    expect(rows.map((e) => e.event)).toEqual([
      'token.created',
      'node.attested',
      'certificate.renewed',
      'entry.created',
      'certificate.issued',
      'entry.deleted',
      'node.revoked',
    ]);
    const [created, attestedRow, renewedRow, entryCreated, issued, entryDeleted, revoked] = rows;
    expect(created).toMatchObject({
      actor: ops,
      subject: `token/${tok.id}`,
      details: { role: 'worker', uses: 1, node_name: 'n1' },
    });
    expect(attestedRow).toMatchObject({
      actor: 'anonymous',
      subject: nodeId,
      details: { method: 'join_token', role: 'worker', token_id: tok.id, serial: attested.serial },
    });
    expect(renewedRow).toMatchObject({
      actor: nodeId,
      subject: nodeId,
      details: { serial: renewed.serial, previous: attested.serial },
    });
    expect(entryCreated).toMatchObject({ actor: ops, subject: web, details: { name: 'web', parent: 'n1' } });
    expect(issued).toMatchObject({
      actor: nodeId,
      subject: web,
      details: { kind: 'workload', serial: workload.serial, entry: 'web', node: 'n1' },
    });
    expect(entryDeleted).toMatchObject({ actor: ops, subject: web, details: { name: 'web' } });
    expect(revoked).toMatchObject({
      actor: ops,
      subject: nodeId,
      details: { reason: 1, certificates: 3 },
    });
    for (const e of rows) {
      expect(new Date(e.at).toISOString()).toBe(e.at);
      expect(Math.abs(Date.parse(e.at) - t.clock.now().getTime())).toBeLessThan(MINUTE);
      expect(e.actor).not.toBe('');
      expect(e.source).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
      expect(e.subject).toBeTruthy();
      expect(e.outcome).toBe('success');
    }
  });

  it('records a refused attestation with its reason code, the anonymous caller and the source address', async () => {
    const { token } = await createToken(operator);
    const secret = secretOf(token);
    const last = secret.at(-1) === 'a' ? 'b' : 'a';
    const wrong = `${token.slice(0, -1)}${last}`;
    tokens.push(wrong);
    const since = await newestId();

    const r = await attest(t, { method: 'join_token', token: wrong, csr: (await keyAndCsr()).csrPem });
    expect(r.status).toBe(401);
    expect(r.json<{ error: { code: string } }>().error.code).toBe('ERR_TOKEN_INVALID');
    const u = await attest(t, { method: 'sgx', csr: (await keyAndCsr()).csrPem });
    expect(u.status).toBe(400);

    const rows = (await audit({ event: 'node.attestation_refused' })).filter((e) => e.id > since).reverse();
    expect(rows).toEqual([
      expect.objectContaining({
        actor: 'anonymous',
        outcome: 'failure',
        source: expect.stringMatching(/127\.0\.0\.1$/),
        details: { method: 'join_token', code: 'ERR_TOKEN_INVALID' },
      }),
      expect.objectContaining({
        outcome: 'failure',
        details: { method: 'sgx', code: 'ERR_ATTESTATION_METHOD_UNKNOWN' },
      }),
    ]);
    // The token is still good: a refusal spends nothing.
    const ok = await attest(t, { method: 'join_token', token, csr: (await keyAndCsr()).csrPem });
    expect(ok.status).toBe(201);
  });

  it('filters by actor, subject, event and time over the API', async () => {
    const admin = await t.issueAdmin('admin', 'root');
    const rootId = `spiffe://${TD}/admin/root`;
    const t0 = t.clock.now().getTime();
    t.clock.advance(MINUTE);
    const a = await createToken(operator);
    t.clock.advance(MINUTE);
    const b = await createToken(admin);
    t.clock.advance(MINUTE);
    const iso = (ms: number) => new Date(ms).toISOString();

    const byActor = await audit({ actor: rootId });
    expect(byActor.map((e) => e.subject)).toEqual([`token/${b.id}`]);
    const bySubject = await audit({ subject: `token/${a.id}` });
    expect(bySubject).toHaveLength(1);
    expect(bySubject[0]).toMatchObject({ event: 'token.created', actor: `spiffe://${TD}/admin/ops` });
    const byEvent = await audit({ event: 'token.created' });
    expect(new Set(byEvent.map((e) => e.event))).toEqual(new Set(['token.created']));
    expect(byEvent.map((e) => e.subject)).toEqual(expect.arrayContaining([`token/${a.id}`, `token/${b.id}`]));
    // Newest first.
    expect(byEvent.map((e) => e.id)).toEqual([...byEvent.map((e) => e.id)].sort((x, y) => y - x));

    // since is inclusive, until exclusive.
    const first = await audit({ since: iso(t0 + MINUTE), until: iso(t0 + 2 * MINUTE) });
    expect(first.map((e) => e.subject)).toEqual([`token/${a.id}`]);
    const both = await audit({ since: iso(t0 + MINUTE), until: iso(t0 + 2 * MINUTE + 1) });
    expect(both.map((e) => e.subject)).toEqual([`token/${b.id}`, `token/${a.id}`]);
    expect(await audit({ since: iso(t0 + 3 * MINUTE) })).toEqual([]);
    const combined = await audit({ event: 'token.created', actor: rootId, since: iso(t0) });
    expect(combined.map((e) => e.subject)).toEqual([`token/${b.id}`]);
    expect(await audit({ event: 'token.created', limit: '1' })).toHaveLength(1);

    const bad = await call(auditor, 'GET', '/v1/admin/audit?since=yesterday');
    expect(bad.status).toBe(400);
    expect((await call(auditor, 'GET', '/v1/admin/audit?limit=0')).status).toBe(400);
  });

  it('keeps every token secret, private key and CSR out of every row', async () => {
    const everything = JSON.stringify(await audit());
    expect(tokens.length).toBeGreaterThan(3);
    for (const token of tokens) {
      expect(everything).not.toContain(secretOf(token));
      expect(everything).not.toContain(token);
    }
    expect(everything).not.toContain('BATON1-');
    expect(everything).not.toContain('PRIVATE KEY');
    expect(everything).not.toContain('CERTIFICATE REQUEST');
    expect(everything).not.toContain('BEGIN');
  });

  it('regression/issue 14: an auditor’s read writes nothing, sealed_after=0 included; the background job seals', async () => {
    await createToken(operator);
    const table = async () =>
      (await t.ca.knex('audit_log').select('id', 'seal_seq', 'prev_hash', 'hash').orderBy('id')).map(
        (r: {
          id: string | number;
          seal_seq: string | number | null;
          prev_hash: Buffer | null;
          hash: Buffer | null;
        }) => ({
          id: Number(r.id),
          seal_seq: r.seal_seq === null ? null : Number(r.seal_seq),
          prev_hash: r.prev_hash?.toString('hex') ?? null,
          hash: r.hash?.toString('hex') ?? null,
        }),
      );
    const before = await table();
    const pending = before.filter((r) => r.seal_seq === null).length;
    expect(pending).toBeGreaterThan(0);

    const chain = await call(auditor, 'GET', '/v1/admin/audit?sealed_after=0&limit=1000');
    expect(chain.status).toBe(200);
    const page = chain.json<{ events: AuditView[]; unsealed: number }>();
    expect(page.unsealed).toBe(pending);
    expect(page.events.map((e) => e.id)).toEqual(
      before
        .filter((r) => r.seal_seq !== null)
        .sort((a, b) => a.seal_seq! - b.seal_seq!)
        .map((r) => r.id),
    );
    await audit();
    await verifyOverApi();
    expect(await table()).toEqual(before);

    await t.running.jobs.runOnce();
    expect(await verifyOverApi()).toMatchObject({ ok: true, rows: before.length, unsealed: 0 });
    expect((await table()).filter((r) => r.seal_seq === null)).toEqual([]);
  });

  it('seals one chain under 40 concurrent writers and two concurrent sealers (another replica)', async () => {
    // The "replica": its own connection pool on PostgreSQL; PGlite has one connection to share.
    let replicaKnex: Knex | undefined;
    if (t.db.url) replicaKnex = knexFactory({ client: 'pg', connection: t.db.url, pool: { min: 0, max: 5 } });
    const replica: Storage = replicaKnex ? knexStorage(replicaKnex) : t.ca.storage;
    try {
      let writing = true;
      const sealer = async (s: Storage) => {
        let sealed = 0;
        while (writing) {
          sealed += await sealAudit(s.audit);
          await new Promise((r) => setTimeout(r, 5));
        }
        return sealed;
      };
      const sealers = [sealer(t.ca.storage), sealer(replica)];
      const writers = [
        ...Array.from({ length: 30 }, () => createToken(operator).then((b) => b.id)),
        ...Array.from({ length: 10 }, () =>
          issueJoinToken(
            { clock: t.clock, storage: replica },
            { role: 'worker', ttlMs: 15 * MINUTE, uses: 1, createdBy: 'replica', pin: t.ca.keyring.pin },
            { actor: 'replica', source: null },
          ).then((c) => {
            tokens.push(c.token);
            return c.record.id;
          }),
        ),
      ];
      const ids = await Promise.all(writers);
      writing = false;
      await Promise.all(sealers);
      await sealAudit(replica.audit);

      const verdict = await verifyOverApi(16);
      expect(verdict).toEqual({ ok: true, rows: expect.any(Number), from: 1, unsealed: 0 });
      const sealed = await sealedRows();
      expect(sealed.map((r) => r.seal_seq)).toEqual(sealed.map((_, i) => i + 1));
      expect(verdict.rows).toBe(sealed.length);
      const subjects = (await audit({ event: 'token.created' })).map((e) => e.subject);
      for (const id of ids) expect(subjects.filter((s) => s === `token/${id}`)).toHaveLength(1);
    } finally {
      await replicaKnex?.destroy();
    }
  });

  it('seals batches larger than one hashing slice into one chain while two sealers race', async () => {
    const before = (await sealedRows()).length;
    const n = 3 * SEAL_BATCH + 7; // several batches, each hashed in slices with turns of the event loop between
    for (let i = 0; i < n; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, n - i) }, (_, j) =>
          t.ca.storage.audit.append({
            at: t.clock.now(),
            event: 'test.bulk',
            actor: 'test',
            source: null,
            subject: `bulk/${i + j}`,
            outcome: 'success',
            details: { i: i + j, note: 'ünïcode ✓' },
          }),
        ),
      );
    }
    const [a, b] = await Promise.all([sealAudit(t.ca.storage.audit), sealAudit(t.ca.storage.audit)]);
    expect(a + b).toBeGreaterThanOrEqual(n);
    const sealed = await sealedRows();
    expect(sealed.length).toBeGreaterThanOrEqual(before + n);
    expect(sealed.map((r) => r.seal_seq)).toEqual(sealed.map((_, i) => i + 1));
    expect(await verifyOverApi(97)).toEqual({ ok: true, rows: sealed.length, from: 1, unsealed: 0 });
  });

  describe('tampering with a sealed row', () => {
    /** A middle row of the chain: neither the first nor the newest. */
    const middle = async () => {
      const rows = await sealedRows();
      expect(rows.length).toBeGreaterThan(10);
      return rows[Math.floor(rows.length / 2)]!;
    };

    beforeEach(async () => {
      await t.running.jobs.runOnce();
      expect(await verifyOverApi()).toMatchObject({ ok: true, unsealed: 0 });
    });
    afterEach(async () => {
      expect(await verifyOverApi()).toMatchObject({ ok: true });
    });

    it('names a row whose content was changed', async () => {
      const row = await middle();
      const [{ outcome }] = await t.ca.knex('audit_log').where('id', row.id).select('outcome');
      await t.ca
        .knex('audit_log')
        .where('id', row.id)
        .update({ outcome: outcome === 'success' ? 'failure' : 'success' });
      expect(await verifyOverApi()).toEqual({
        ok: false,
        rows: row.seal_seq,
        rowId: row.id,
        sealSeq: row.seal_seq,
        problem: 'changed',
        unsealed: 0,
      });
      await t.ca.knex('audit_log').where('id', row.id).update({ outcome });
    });

    it('names a row whose details were changed (jsonb)', async () => {
      const row = await middle();
      const [{ details }] = await t.ca.knex('audit_log').where('id', row.id).select('details');
      await t.ca
        .knex('audit_log')
        .where('id', row.id)
        .update({ details: JSON.stringify({ ...details, injected: true }) });
      expect(await verifyOverApi()).toMatchObject({ ok: false, rowId: row.id, problem: 'changed' });
      await t.ca
        .knex('audit_log')
        .where('id', row.id)
        .update({ details: JSON.stringify(details) });
    });

    it('names a row that was deleted, by its place in the chain', async () => {
      const rows = await sealedRows();
      const row = await middle();
      const next = rows.find((r) => r.seal_seq === row.seal_seq + 1)!;
      const saved = await t.ca.knex('audit_log').where('id', row.id).first();
      await t.ca.knex('audit_log').where('id', row.id).delete();
      expect(await verifyOverApi()).toEqual({
        ok: false,
        rows: row.seal_seq,
        rowId: next.id,
        sealSeq: row.seal_seq,
        problem: 'removed',
        unsealed: 0,
      });
      // Sealing again does not paper over the gap.
      await t.running.jobs.runOnce();
      expect(await verifyOverApi()).toMatchObject({ ok: false, sealSeq: row.seal_seq, problem: 'removed' });
      await t.ca.knex('audit_log').insert({ ...saved, details: JSON.stringify(saved.details) });
    });

    it('names the row that took another row’s place when two rows swap seal_seq', async () => {
      const row = await middle();
      const rows = await sealedRows();
      const other = rows.find((r) => r.seal_seq === row.seal_seq + 3)!;
      const swap = (a: { id: number; seal_seq: number }, b: { id: number; seal_seq: number }) =>
        t.ca.knex.transaction(async (trx) => {
          // seal_seq is unique: move one row aside first.
          await trx('audit_log').where('id', a.id).update({ seal_seq: -1 });
          await trx('audit_log').where('id', b.id).update({ seal_seq: a.seal_seq });
          await trx('audit_log').where('id', a.id).update({ seal_seq: b.seal_seq });
        });
      await swap(row, other);
      expect(await verifyOverApi()).toEqual({
        ok: false,
        rows: row.seal_seq,
        rowId: other.id,
        sealSeq: row.seal_seq,
        problem: 'reordered',
        unsealed: 0,
      });
      await swap({ id: other.id, seal_seq: row.seal_seq }, { id: row.id, seal_seq: other.seal_seq });
    });

    it('names the gap when a row is unsealed and re-sealed at the end of the chain', async () => {
      const row = await middle();
      const saved = await t.ca.knex('audit_log').where('id', row.id).first();
      await t.ca
        .knex('audit_log')
        .where('id', row.id)
        .update({ seal_seq: null, prev_hash: null, hash: null });
      await t.running.jobs.runOnce();
      const moved = (await sealedRows()).at(-1)!;
      expect(moved.id).toBe(row.id);
      expect(moved.seal_seq).toBeGreaterThan(row.seal_seq);
      expect(await verifyOverApi()).toMatchObject({ ok: false, sealSeq: row.seal_seq, problem: 'removed' });
      await t.ca
        .knex('audit_log')
        .where('id', row.id)
        .update({ seal_seq: saved.seal_seq, prev_hash: saved.prev_hash, hash: saved.hash });
    });
  });
});
