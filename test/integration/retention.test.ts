import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { describeEachBackend } from '../support/database';
import { callAs, https } from '../support/https';
import { certsOf } from '../support/load-client';
import { attestedNode, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { ocspQuery } from '../support/revocation-checks';
import { startTestServer, type TestServer } from '../support/test-server';
import { itWith, run, tempDir, writeFiles } from '../support/tools';

/**
 * Issue 20 items 1 and 2 over the real server (CONTRACT "Fleet scale"): the retention job deletes
 * the certificate rows expired longer than --retain-expired and nothing else, with its metrics;
 * issuance goes on while it deletes 50,000 rows; a deleted serial is `unknown` to OCSP; and a CRL
 * lists only revoked certificates that have not expired, as openssl reads and checks it.
 */

const TD = 'retention.example.org';
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

/**
 * `n` certificate rows written by SQL, as a busy fleet leaves them: workload certificates of `caId`
 * that expired 30 days (and n seconds) before `now`, with a DER of a realistic size.
 */
async function seedExpired(knex: Knex, caId: string, now: Date, n: number): Promise<void> {
  await knex.raw(
    `insert into certificates
       (serial, ca_id, kind, spiffe_id, node_id, issued_via, not_before, not_after, key_fingerprint, der, status, created_at)
     select '7e' || lpad(to_hex(g), 30, '0'), ?, 'workload', 'spiffe://${TD}/seeded/' || (g % 500), null,
            'seed-node-' || (g % 100), ?::timestamptz - interval '31 days', ?::timestamptz - interval '30 days' - g * interval '1 second',
            md5(g::text) || md5('k' || g::text), decode(repeat('30', 700), 'hex'),
            case when g % 50 = 0 then 'revoked' else 'superseded' end, ?::timestamptz - interval '31 days'
     from generate_series(1, ?) as g`,
    [caId, now, now, now, n],
  );
  await knex.raw('analyze certificates');
}

const countRows = async (knex: Knex): Promise<number> =>
  Number(((await knex('certificates').count('* as n').first()) as { n: string | number }).n);

const samples = async (t: TestServer) =>
  (await https(`${t.url}/metrics`, { ca: t.bundle })).body.toString('utf8');
const metric = (text: string, line: RegExp): number | undefined => {
  const m = line.exec(text);
  return m ? Number(m[1]) : undefined;
};

describeEachBackend('certificate retention (issue 20)', (backend) => {
  let t: TestServer;
  let admin: { cert: string; key: string };
  const dir = tempDir('baton-retention-');

  const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD, serverFlags: { 'crl-next-update': '10m' } });
  });
  // Tests move the clock days ahead and back: each starts at the wall clock with an admin of its own
  // (one issued before a jump expires, and its row goes with the others).
  beforeEach(async () => {
    t.clock.set(new Date());
    const a = await t.issueAdmin('admin', 'root');
    admin = { cert: a.cert, key: a.key };
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  it('deletes exactly the rows expired longer than 7d (the default), revoked ones too; counts them in /metrics', async () => {
    const short = await attestedNode(t, { nodeName: 'short', nodeTtlMs: 10 * MIN });
    const long = await attestedNode(t, { nodeName: 'long', nodeTtlMs: 30 * DAY });
    const revokedShort = await attestedNode(t, { nodeName: 'revoked-short', nodeTtlMs: 10 * MIN });
    const revokedLong = await attestedNode(t, { nodeName: 'revoked-long', nodeTtlMs: 30 * DAY });
    for (const n of [revokedShort, revokedLong])
      expect((await adminCall('POST', `/v1/admin/certificates/${n.body.serial}/revoke`, {})).status).toBe(
        200,
      );
    const serial = (n: { body: IssuanceBody }) => n.body.serial;
    const exists = async (n: { body: IssuanceBody }) =>
      (await t.ca.storage.certificates.findBySerial(serial(n))) !== null;

    // Expired 7d minus a minute: kept.
    t.clock.advance(10 * MIN + 7 * DAY - MIN);
    expect(await t.running.jobs.runRetention()).toMatchObject({ ran: true, deleted: 0 });
    expect(await exists(short)).toBe(true);
    // Two minutes later the two 10-minute certificates have been expired longer than 7d.
    t.clock.advance(2 * MIN);
    const before = metric(await samples(t), /^baton_retention_certificates_deleted_total (\d+)$/m) ?? 0;
    const run = await t.running.jobs.runRetention();
    expect(run).toMatchObject({ ran: true, deleted: 2, complete: true });
    expect([await exists(short), await exists(revokedShort)]).toEqual([false, false]);
    // Valid and revoked ones that have not expired stay (the admin's and the server's too).
    expect([await exists(long), await exists(revokedLong)]).toEqual([true, true]);
    const m = await samples(t);
    expect(metric(m, /^baton_retention_certificates_deleted_total (\d+)$/m)).toBe(before + 2);
    expect(metric(m, /^baton_retention_runs_total\{outcome="completed"\} (\d+)$/m)).toBeGreaterThanOrEqual(2);
    expect(metric(m, /^baton_retention_last_run_timestamp_seconds (\S+)$/m)).toBe(
      t.clock.now().getTime() / 1000,
    );
    // The node whose certificates are gone is still a node (its record is not a certificate row).
    expect(await t.ca.storage.nodes.findById('short')).toMatchObject({ id: 'short', status: 'active' });
  });

  itWith('openssl', 'a deleted serial is unknown to OCSP, where it was revoked (RFC 6960 §2.2)', async () => {
    const n = await attestedNode(t, { nodeTtlMs: 10 * MIN });
    const [leaf, inter] = certsOf(n.cert);
    expect((await adminCall('POST', `/v1/admin/certificates/${n.body.serial}/revoke`, {})).status).toBe(200);
    const ask = () =>
      ocspQuery({ url: t.url, bundle: t.bundle, dir: dir.path, issuerPem: inter!, certPem: leaf! });
    expect((await ask()).status).toBe('revoked');
    t.clock.advance(8 * DAY);
    try {
      expect(await t.running.jobs.runRetention()).toMatchObject({ ran: true });
      const after = await ask();
      expect(after.verified).toBe(true);
      expect(after.status).toBe('unknown');
    } finally {
      t.clock.set(new Date());
    }
  });

  itWith(
    'openssl',
    'a CRL lists a revoked certificate until it expires, then no more; its number still grows (openssl crl, verify -crl_check)',
    async () => {
      const expiring = await attestedNode(t, { nodeName: 'crl-expiring', nodeTtlMs: 10 * MIN });
      const lasting = await attestedNode(t, { nodeName: 'crl-lasting', nodeTtlMs: 30 * DAY });
      for (const n of [expiring, lasting])
        expect((await adminCall('POST', `/v1/admin/certificates/${n.body.serial}/revoke`, {})).status).toBe(
          200,
        );
      const crl = async () => {
        const r = await https(`${t.url}/v1/crl`, { ca: t.bundle });
        expect(r.status).toBe(200);
        writeFileSync(join(dir.path, 'crl.der'), r.body);
        const text = run('openssl', [
          'crl',
          '-inform',
          'DER',
          '-noout',
          '-text',
          '-in',
          join(dir.path, 'crl.der'),
        ]);
        expect(text.status).toBe(0);
        const pem = run('openssl', ['crl', '-inform', 'DER', '-in', join(dir.path, 'crl.der')]).out;
        return { text: text.out, pem, number: Number(/CRL Number:\s+(\d+)/.exec(text.out)![1]) };
      };
      const listed = (text: string, serial: string) =>
        text.toUpperCase().includes(`SERIAL NUMBER: ${serial.toUpperCase()}`);
      /** openssl verify -crl_check of a node certificate at the server's clock (-attime). */
      const verify = (n: { cert: string }, crlPem: string) => {
        const [leaf, inter] = certsOf(n.cert);
        const f = writeFiles(dir.path, {
          'bundle.pem': t.bundle,
          'leaf.pem': leaf!,
          'inter.pem': inter!,
          'crl.pem': crlPem,
        });
        return run('openssl', [
          'verify',
          '-crl_check',
          '-attime',
          String(Math.floor(t.clock.now().getTime() / 1000)),
          '-CRLfile',
          f['crl.pem']!,
          '-CAfile',
          f['bundle.pem']!,
          '-untrusted',
          f['inter.pem']!,
          f['leaf.pem']!,
        ]).out;
      };
      const first = await crl();
      expect(listed(first.text, expiring.body.serial)).toBe(true);
      expect(listed(first.text, lasting.body.serial)).toBe(true);
      expect(verify(expiring, first.pem)).toMatch(/certificate revoked/);

      // Eleven minutes on: one expired, the other not. The next CRL (its half-life is 5m) drops the first.
      t.clock.advance(11 * MIN);
      try {
        await t.running.jobs.runOnce();
        const next = await crl();
        expect(next.number).toBeGreaterThan(first.number);
        expect(listed(next.text, expiring.body.serial)).toBe(false);
        expect(listed(next.text, lasting.body.serial)).toBe(true);
        expect(verify(lasting, next.pem)).toMatch(/certificate revoked/);
        // Not listed, and refused all the same: on its dates, before any CRL is consulted.
        const expired = verify(expiring, next.pem);
        expect(expired).toMatch(/certificate has expired/);
        expect(expired).not.toMatch(/revoked/);
        // The row is still there (7d): only the CRL dropped it.
        expect(await t.ca.storage.certificates.findBySerial(expiring.body.serial)).not.toBeNull();
      } finally {
        t.clock.set(new Date());
      }
    },
  );

  it('issuance goes on while the job deletes 50,000 expired rows, in batches, by index scans', async () => {
    const caId = t.ca.keyring.signing.record.id;
    const start = await countRows(t.ca.knex);
    await seedExpired(t.ca.knex, caId, t.clock.now(), 50_000);
    expect(await countRows(t.ca.knex)).toBe(start + 50_000);
    // Each batch picks its rows by the not_after index, and the CRL build reads its issuer's revoked
    // unexpired rows by (ca_id, status, not_after): no sequential scan of the table.
    const plan = async (sql: string, bindings: (string | Date)[]) =>
      JSON.stringify(
        ((await t.ca.knex.raw(`explain (format json) ${sql}`, bindings)) as { rows: unknown[] }).rows,
      );
    const retentionPlan = await plan(
      'select serial from certificates where not_after < ? order by not_after limit 2000 for update skip locked',
      [new Date(t.clock.now().getTime() - 7 * DAY)],
    );
    expect(retentionPlan).toContain('certificates_not_after_index');
    expect(retentionPlan).not.toContain('Seq Scan');
    const crlPlan = await plan(
      "select serial, revoked_at, revocation_reason from certificates where ca_id = ? and status = 'revoked' and not_after > ? order by serial",
      [caId, t.clock.now()],
    );
    expect(crlPlan).toContain('certificates_ca_id_status_not_after_index');
    expect(crlPlan).not.toContain('Seq Scan');

    const node = await attestedNode(t, { nodeName: 'busy' });
    expect(
      (
        await adminCall('POST', '/v1/admin/entries', {
          name: 'busy-web',
          spiffe_id: `spiffe://${TD}/busy-web`,
          parent: 'busy',
        })
      ).status,
    ).toBe(201);
    let done = false;
    let during = 0;
    const statuses: number[] = [];
    const issueUntilDone = async () => {
      while (!done) {
        const k = await keyAndCsr();
        const r = await callAs(t, node, 'POST', '/v1/workload-svids', {
          spiffe_id: `spiffe://${TD}/busy-web`,
          csr: k.csrPem,
        });
        statuses.push(r.status);
        if (!done) during += 1;
      }
    };
    const workers = [issueUntilDone(), issueUntilDone(), issueUntilDone()];
    const run = await t.running.jobs.runRetention();
    done = true;
    await Promise.all(workers);
    expect(run).toMatchObject({ ran: true, deleted: 50_000, batches: 26, complete: true });
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s !== 201)).toEqual([]);
    expect(during).toBeGreaterThan(0);
    // Everything seeded is gone; every certificate issued meanwhile is there.
    expect(
      await t.ca.knex('certificates').where('serial', 'like', '7e%').count('* as n').first(),
    ).toMatchObject({
      n: expect.anything(),
    });
    expect(
      Number(
        (
          (await t.ca.knex('certificates').where('serial', 'like', '7e%').count('* as n').first()) as {
            n: string;
          }
        ).n,
      ),
    ).toBe(0);
    expect(await countRows(t.ca.knex)).toBe(start + statuses.length + 1);
  }, 180_000);
});
