import { writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { revokeNode } from '../../services/ca/src/domain/revocation';
import { describeEachBackend } from '../support/database';
import { callAs, https } from '../support/https';
import { attest, attestedNode, type IssuanceBody, keyAndCsr, newToken, renew } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { run, tempDir, writeFiles } from '../support/tools';
import { errorBodyOf } from '../support/errors';

const TD = 'test.example.org';
const certsOf = (chain: string) =>
  chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g)!;

interface RevokeBody {
  revoked_certificates: string[];
  event: { id: number; kind: string; node_id: string | null; serials: string[]; reason: string };
}

describeEachBackend('revocation: node revoke, CRLs, feed', (backend) => {
  let t: TestServer;
  let admin: { cert: string; key: string };
  const dir = tempDir();

  const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);
  const asNode = (
    n: { cert: string; key: string },
    method: string,
    path: string,
    body?: unknown,
    agent?: Agent,
  ) => callAs(t, n, method, path, body, { agent });
  const workloadFor = async (n: { cert: string; key: string }, spiffeId: string) => {
    const k = await keyAndCsr();
    const r = await asNode(n, 'POST', '/v1/workload-svids', { spiffe_id: spiffeId, csr: k.csrPem });
    expect(r.status).toBe(201);
    return { cert: r.json<IssuanceBody>().certificate_chain, key: k.keyPem, body: r.json<IssuanceBody>() };
  };
  const crlText = async (issuer?: string) => {
    const r = await https(`${t.url}/v1/crl${issuer ? `?issuer=${issuer}` : ''}`, { ca: t.bundle });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/pkix-crl');
    const file = `${dir.path}/crl.der`;
    writeFileSync(file, r.body);
    const out = run('openssl', ['crl', '-inform', 'DER', '-noout', '-text', '-in', file]);
    return { der: r.body, etag: String(r.headers.etag), text: out.out };
  };
  const crlPem = async () => (await https(`${t.url}/v1/crl.pem`, { ca: t.bundle })).body.toString();
  const verify = (chain: string, crls: string, flag = '-crl_check_all') => {
    const [leaf, inter] = certsOf(chain);
    const f = writeFiles(dir.path, {
      'bundle.pem': t.bundle,
      'leaf.pem': leaf!,
      'inter.pem': inter!,
      'crls.pem': crls,
    });
    return run('openssl', [
      'verify',
      '-x509_strict',
      flag,
      '-CRLfile',
      f['crls.pem']!,
      '-CAfile',
      f['bundle.pem']!,
      '-untrusted',
      f['inter.pem']!,
      f['leaf.pem']!,
    ]).out;
  };

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD, serverFlags: { 'crl-next-update': '10m' } });
    const a = await t.issueAdmin('operator', 'ops');
    admin = { cert: a.cert, key: a.key };
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  it('serves v2 CRLs with a CRL number, AKI and nextUpdate, for the signing CA and the root', async () => {
    const inter = await crlText();
    expect(inter.text).toMatch(/Version 2 \(0x1\)/);
    expect(inter.text).toMatch(/X509v3 CRL Number:\s+\d+/);
    expect(inter.text).toMatch(/X509v3 Authority Key Identifier/);
    expect(inter.text).toMatch(/No Revoked Certificates/);
    const root = await crlText(t.ca.keyring.roots[0]!.record.id);
    expect(root.text).toContain(`Issuer: O = ${TD}, OU = baton, CN = Baton Root CA`);
    expect((await crlPem()).match(/BEGIN X509 CRL/g)).toHaveLength(2);
    const again = await https(`${t.url}/v1/crl`, { ca: t.bundle, headers: { 'if-none-match': inter.etag } });
    expect(again.status).toBe(304);
    expect((await https(`${t.url}/v1/crl?issuer=ca-nope`, { ca: t.bundle })).status).toBe(404);
  });

  it('node revoke cascades in one step: node + workload certificates revoked, CRL republished, renewals and workload SVIDs refused', async () => {
    const n1 = await attestedNode(t, { nodeName: 'n1' });
    const n2 = await attestedNode(t, { nodeName: 'n2' });
    expect(
      (
        await adminCall('POST', '/v1/admin/entries', {
          name: 'web1',
          spiffe_id: `spiffe://${TD}/web1`,
          parent: 'n1',
        })
      ).status,
    ).toBe(201);
    expect(
      (
        await adminCall('POST', '/v1/admin/entries', {
          name: 'web2',
          spiffe_id: `spiffe://${TD}/web2`,
          parent: 'n2',
        })
      ).status,
    ).toBe(201);
    const w1 = await workloadFor(n1, `spiffe://${TD}/web1`);
    const w2 = await workloadFor(n2, `spiffe://${TD}/web2`);
    // n1 renews once: its superseded certificate must be revoked too (it is still unexpired).
    const next = await keyAndCsr();
    const renewed = await renew(t, n1, next.csrPem);
    const n1b = { cert: renewed.json<IssuanceBody>().certificate_chain, key: next.keyPem };
    const boundToken = await newToken(t, { nodeName: 'n1' });
    const before = await crlText();
    const feedWaiter = asNode(
      n2,
      'GET',
      `/v1/revocations?since=${await t.ca.storage.revocations.lastEventId()}`,
    );

    const r = await adminCall('POST', '/v1/admin/nodes/n1/revoke', { reason: 'key-compromise' });
    expect(r.status).toBe(200);
    const b = r.json<RevokeBody>();
    expect(new Set(b.revoked_certificates)).toEqual(
      new Set([n1.body.serial, renewed.json<IssuanceBody>().serial, w1.body.serial]),
    );
    expect(b.event).toMatchObject({ kind: 'node', node_id: 'n1', reason: 'key-compromise' });

    const feed = await feedWaiter;
    expect(feed.status).toBe(200);
    expect(feed.json<{ events: { node_id: string; serials: string[] }[] }>().events).toEqual([
      expect.objectContaining({ node_id: 'n1', serials: expect.arrayContaining([w1.body.serial]) }),
    ]);

    const after = await crlText();
    const number = (text: string) => BigInt(/CRL Number:\s+(\d+)/.exec(text)![1]!);
    expect(number(after.text)).toBeGreaterThan(number(before.text));
    for (const s of b.revoked_certificates) expect(after.text.toLowerCase()).toContain(`serial number: ${s}`);
    expect(after.text).toMatch(/Key Compromise/);
    expect(after.text.toLowerCase()).not.toContain(w2.body.serial);

    const crls = await crlPem();
    expect(verify(n1b.cert, crls)).toMatch(/certificate revoked/);
    expect(verify(w1.cert, crls)).toMatch(/certificate revoked/);
    expect(verify(w2.cert, crls)).toMatch(/leaf\.pem: OK/);
    expect(verify(n2.cert, crls)).toMatch(/leaf\.pem: OK/);

    const renew2 = await renew(t, n1b, (await keyAndCsr()).csrPem);
    expect(renew2.status).toBe(403);
    expect(errorBodyOf(renew2).code).toBe('ERR_CERT_REVOKED');
    const wl = await asNode(n1b, 'POST', '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/web1`,
      csr: (await keyAndCsr()).csrPem,
    });
    expect(wl.status).toBe(403);
    expect((await asNode(n1b, 'GET', '/v1/entries')).status).toBe(403);
    // The unused bound token is spent, so even it cannot bring n1 back.
    const re = await attest(t, { method: 'join_token', token: boundToken, csr: (await keyAndCsr()).csrPem });
    expect(re.status).toBe(401);
    const viaNew = await attest(t, {
      method: 'join_token',
      token: await newToken(t, { nodeName: 'n1' }),
      csr: (await keyAndCsr()).csrPem,
    });
    expect(viaNew.status).toBe(403);
    expect(errorBodyOf(viaNew).code).toBe('ERR_NODE_REVOKED');
    expect((await adminCall('POST', '/v1/admin/nodes/n1/revoke', {})).status).toBe(409);
    expect((await t.ca.storage.nodes.findById('n1'))?.status).toBe('revoked');
    // The node's reason reads as a name, as in the event and the CRL listing (it was the code, 1).
    expect((await adminCall('GET', '/v1/admin/nodes/n1')).json<{ node: unknown }>().node).toMatchObject({
      status: 'revoked',
      revocation_reason: 'key-compromise',
    });
  });

  it('a revocation commits with the CRLs that list it: nothing after the commit is needed for the CRL to list it', async () => {
    // Another replica's feed may announce the event the moment it commits, and a node that hears
    // of it fetches the CRL at once: that CRL must already list it. Called here without the
    // route's post-commit step (which only drops this replica's cache and wakes its feed).
    const n = await attestedNode(t);
    const result = await revokeNode(
      {
        clock: t.clock,
        storage: t.ca.storage,
        trustDomain: TD,
        publishCrls: (tx) => t.running.crls.publishIn(tx),
      },
      { nodeId: n.body.node_id!, audit: { actor: 'test', source: null } },
    );
    expect(result.serials).toContain(n.body.serial);
    const latest = await t.ca.storage.crls.latest(t.ca.keyring.signing.record.id);
    const file = `${dir.path}/committed.der`;
    writeFileSync(file, latest!.der);
    const text = run('openssl', ['crl', '-inform', 'DER', '-noout', '-text', '-in', file]).out.toLowerCase();
    for (const serial of result.serials) expect(text).toContain(serial);
  });

  it('cert revoke revokes one certificate; CRL numbers only grow under concurrent revocations', async () => {
    const n = await attestedNode(t);
    await adminCall('POST', '/v1/admin/entries', {
      name: 'many',
      spiffe_id: `spiffe://${TD}/many`,
      parent: n.body.node_id,
    });
    const ws = [];
    for (let i = 0; i < 6; i++) ws.push(await workloadFor(n, `spiffe://${TD}/many`));
    const results = await Promise.all(
      ws.map((w) =>
        adminCall('POST', `/v1/admin/certificates/${w.body.serial}/revoke`, { reason: 'superseded' }),
      ),
    );
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const rows = await t.ca.knex('crls').select('crl_number', 'this_update').orderBy('crl_number');
    const numbers = rows.map((r: { crl_number: string }) => BigInt(r.crl_number));
    expect(new Set(numbers.map(String)).size).toBe(numbers.length);
    const text = (await crlText()).text.toLowerCase();
    for (const w of ws) expect(text).toContain(`serial number: ${w.body.serial}`);
    expect(text).toContain('superseded');
    expect(verify(n.cert, await crlPem())).toMatch(/OK/);
    const again = await adminCall('POST', `/v1/admin/certificates/${ws[0]!.body.serial}/revoke`, {});
    expect(again.status).toBe(409);
    expect((await adminCall('POST', '/v1/admin/certificates/abcd/revoke', {})).status).toBe(404);
    expect((await adminCall('POST', '/v1/admin/certificates/zz/revoke', {})).status).toBe(400);
    const unknownReason = await adminCall('POST', `/v1/admin/certificates/${ws[1]!.body.serial}/revoke`, {
      reason: 'because<script>',
    });
    expect(unknownReason.status).toBe(400);
    expect(errorBodyOf(unknownReason).message).toMatch(/^reason: unknown revocation reason, use one of /);
    expect(errorBodyOf(unknownReason).message).not.toContain('because');
  });

  it('rebuilds the CRL before nextUpdate with no change, with a larger number and a later thisUpdate', async () => {
    const first = await t.ca.storage.crls.latest(t.ca.keyring.signing.record.id);
    await t.running.jobs.runOnce();
    expect((await t.ca.storage.crls.latest(t.ca.keyring.signing.record.id))?.crlNumber).toBe(
      first!.crlNumber,
    );
    t.clock.advance(6 * 60_000);
    try {
      await t.running.jobs.runOnce();
      const next = await t.ca.storage.crls.latest(t.ca.keyring.signing.record.id);
      expect(next!.crlNumber).toBeGreaterThan(first!.crlNumber);
      expect(next!.thisUpdate.getTime()).toBe(t.clock.now().getTime());
      expect(next!.nextUpdate.getTime() - next!.thisUpdate.getTime()).toBe(10 * 60_000);
      expect(next!.entries).toBe(first!.entries);
    } finally {
      t.clock.advance(-6 * 60_000);
    }
  });

  it('keeps a revoked certificate listed until it expires, then drops it', async () => {
    const n = await attestedNode(t);
    await adminCall('POST', '/v1/admin/entries', {
      name: 'short',
      spiffe_id: `spiffe://${TD}/short`,
      parent: n.body.node_id,
      ttl: '2m',
    });
    const w = await workloadFor(n, `spiffe://${TD}/short`);
    await adminCall('POST', `/v1/admin/certificates/${w.body.serial}/revoke`, {});
    expect((await crlText()).text.toLowerCase()).toContain(w.body.serial);
    const saved = t.clock.now();
    t.clock.advance(90_000);
    try {
      await t.running.crls.republish();
      expect((await crlText()).text.toLowerCase()).toContain(w.body.serial);
      t.clock.advance(60_000);
      await t.running.crls.republish();
      expect((await crlText()).text.toLowerCase()).not.toContain(w.body.serial);
    } finally {
      t.clock.set(saved);
    }
  });

  it('the feed answers an empty list after its wait, refuses anonymous and admin callers', async () => {
    const n = await attestedNode(t);
    const last = await t.ca.storage.revocations.lastEventId();
    const r = await asNode(n, 'GET', `/v1/revocations?since=${last}&wait=0`);
    expect(r.json()).toEqual({ events: [], last });
    const all = await asNode(n, 'GET', '/v1/revocations?since=0&wait=0');
    expect(all.json<{ events: unknown[]; last: number }>().last).toBe(last);
    expect((await https(`${t.url}/v1/revocations?since=0`, { ca: t.bundle })).status).toBe(401);
    expect((await adminCall('GET', '/v1/revocations?since=0')).status).toBe(403);
    expect((await asNode(n, 'GET', '/v1/revocations?since=-1')).status).toBe(400);
  });

  it('entry events: only the parent node, and only when it asks (entries=1), sees its entries created or deleted', async () => {
    const a = await attestedNode(t);
    const b = await attestedNode(t);
    const idOf = (n: { body: IssuanceBody }) => n.body.node_id;
    const since = await t.ca.storage.revocations.lastEventId();
    const entry = {
      name: `pushed-${idOf(a)}`,
      spiffe_id: `spiffe://${TD}/pushed/${idOf(a)}`,
      parent: idOf(a),
    };
    expect((await adminCall('POST', '/v1/admin/entries', entry)).status).toBe(201);
    expect((await adminCall('DELETE', `/v1/admin/entries/${entry.name}`)).status).toBe(204);
    const last = await t.ca.storage.revocations.lastEventId();
    expect(last).toBe(since + 2);
    const feed = async (n: { cert: string; key: string }, query: string) =>
      (await asNode(n, 'GET', `/v1/revocations?since=${since}&wait=0${query}`)).json<{
        events: { kind: string; node_id: string; serials: string[] }[];
        last: number;
      }>();
    const asked = await feed(a, '&entries=1');
    expect(asked.events.map((e) => [e.kind, e.node_id, e.serials])).toEqual([
      ['entry', idOf(a), []],
      ['entry', idOf(a), []],
    ]);
    expect(asked.last).toBe(last);
    // Not asked, or another node: no entry events, and `last` still moves past them.
    expect(await feed(a, '')).toEqual({ events: [], last });
    expect(await feed(b, '&entries=1')).toEqual({ events: [], last });
    expect((await asNode(a, 'GET', `/v1/revocations?since=${since}&entries=yes`)).status).toBe(400);

    // Another node's entry event does not end a waiting poll: it waits on, and `last` moves past it.
    const started = Date.now();
    const waiting = asNode(b, 'GET', `/v1/revocations?since=${last}&wait=1.5&entries=1`);
    await new Promise((r) => setTimeout(r, 200));
    expect((await adminCall('POST', '/v1/admin/entries', { ...entry, name: `${entry.name}-2` })).status).toBe(
      201,
    );
    const answered = (await waiting).json<{ events: unknown[]; last: number }>();
    expect(answered).toEqual({ events: [], last: last + 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
  });

  it('a workload SVID may follow the feed while current; once expired or revoked it is refused per request', async () => {
    const n = await attestedNode(t, { nodeName: 'feed-parent' });
    const entry = { name: 'feed-reader', spiffe_id: `spiffe://${TD}/feed-reader`, parent: 'feed-parent' };
    expect((await adminCall('POST', '/v1/admin/entries', entry)).status).toBe(201);
    const w = await workloadFor(n, entry.spiffe_id);
    // One keep-alive connection throughout: TLS checked the certificate once, at its handshake.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const feed = () => asNode(w, 'GET', '/v1/revocations?since=0&wait=0', undefined, agent);
      expect((await feed()).status).toBe(200);
      const saved = t.clock.now();
      try {
        t.clock.set(new Date(Date.parse(w.body.expires_at)));
        const expired = await feed();
        expect([expired.status, errorBodyOf(expired).code]).toEqual([401, 'ERR_CERT_EXPIRED']);
      } finally {
        t.clock.set(saved);
      }
      expect((await feed()).status).toBe(200);
      const revoke = `/v1/admin/certificates/${w.body.serial}/revoke`;
      expect((await adminCall('POST', revoke, { reason: 'key-compromise' })).status).toBe(200);
      const revoked = await feed();
      expect([revoked.status, errorBodyOf(revoked).code]).toEqual([403, 'ERR_CERT_REVOKED']);
    } finally {
      agent.destroy();
    }
  });

  it('an auditor cannot revoke; lists certificates by node and status', async () => {
    const auditor = await t.issueAdmin('auditor', 'aud');
    const n = await attestedNode(t);
    const denied = await https(`${t.url}/v1/admin/nodes/${n.body.node_id}/revoke`, {
      method: 'POST',
      body: '{}',
      ca: t.bundle,
      cert: auditor.cert,
      key: auditor.key,
    });
    expect(denied.status).toBe(403);
    const list = await https(`${t.url}/v1/admin/certificates?node=n1&status=revoked`, {
      ca: t.bundle,
      cert: auditor.cert,
      key: auditor.key,
    });
    expect(list.status).toBe(200);
    const certs = list.json<{
      certificates: { status: string; node_id: string | null; issued_via: string | null }[];
    }>().certificates;
    expect(certs.length).toBe(3);
    expect(certs.every((c) => c.status === 'revoked')).toBe(true);
    // "expired" means a valid certificate past its notAfter, as each listed status says; a revoked
    // one past its notAfter keeps its own status and is not listed as expired.
    const entry = { name: 'lapsing', spiffe_id: `spiffe://${TD}/lapsing`, parent: n.body.node_id, ttl: '1m' };
    expect((await adminCall('POST', '/v1/admin/entries', entry)).status).toBe(201);
    const lapsed = await workloadFor(n, entry.spiffe_id);
    const revoked = await workloadFor(n, entry.spiffe_id);
    expect((await adminCall('POST', `/v1/admin/certificates/${revoked.body.serial}/revoke`, {})).status).toBe(
      200,
    );
    const saved = t.clock.now();
    try {
      t.clock.set(new Date(saved.getTime() + 2 * 60_000));
      const expired = await https(`${t.url}/v1/admin/certificates?status=expired`, {
        ca: t.bundle,
        cert: auditor.cert,
        key: auditor.key,
      });
      const listed = expired.json<{ certificates: { status: string; serial: string }[] }>().certificates;
      expect(listed.map((c) => c.serial)).toContain(lapsed.body.serial);
      expect(listed.map((c) => c.serial)).not.toContain(revoked.body.serial);
      expect(new Set(listed.map((c) => c.status))).toEqual(new Set(['expired']));
    } finally {
      t.clock.set(saved);
    }
  });
});
