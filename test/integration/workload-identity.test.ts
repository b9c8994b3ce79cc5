import { execFileSync } from 'node:child_process';
import { Agent } from 'node:https';
import { describeEachBackend } from '../support/database';
import { callAs, https } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { itWithTool, opensslText, run, tempDir, writeFiles } from '../support/tools';
import { errorBodyOf } from '../support/errors';

const TD = 'test.example.org';

describeEachBackend('workload identity: entries and workload SVIDs', (backend) => {
  let t: TestServer;
  let admin: { cert: string; key: string };
  let n1: Awaited<ReturnType<typeof attestedNode>>;
  let n2: Awaited<ReturnType<typeof attestedNode>>;
  const dir = tempDir();

  const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);
  const asNode = (
    n: { cert: string; key: string },
    method: string,
    path: string,
    body?: unknown,
    agent?: Agent,
  ) => callAs(t, n, method, path, body, { agent });

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const a = await t.issueAdmin('operator', 'ops');
    admin = { cert: a.cert, key: a.key };
    n1 = await attestedNode(t, { nodeName: 'n1' });
    n2 = await attestedNode(t, { nodeName: 'n2' });
    const r = await adminCall('POST', '/v1/admin/entries', {
      name: 'web',
      spiffe_id: `spiffe://${TD}/web`,
      parent: 'n1',
      selectors: ['unix:uid:1000'],
      dns_names: ['web.internal', 'web.example.org'],
      ttl: '30m',
    });
    expect(r.status).toBe(201);
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  it('lists to each node only the entries parented to it', async () => {
    const e1 = await asNode(n1, 'GET', '/v1/entries');
    expect(e1.status).toBe(200);
    expect(e1.json()).toEqual({
      entries: [
        expect.objectContaining({
          name: 'web',
          spiffe_id: `spiffe://${TD}/web`,
          parent: 'n1',
          selectors: ['unix:uid:1000'],
          dns_names: ['web.internal', 'web.example.org'],
          ttl_seconds: 1800,
        }),
      ],
    });
    expect((await asNode(n2, 'GET', '/v1/entries')).json()).toEqual({ entries: [] });
    const anon = await https(`${t.url}/v1/entries`, { ca: t.bundle });
    expect(anon.status).toBe(401);
    const asAdmin = await https(`${t.url}/v1/entries`, { ca: t.bundle, ...admin });
    expect(asAdmin.status).toBe(403);
  });

  it('issues the entry SVID to its parent: one URI SAN, the entry DNS names, its TTL, recorded with the issuing node', async () => {
    const { csrPem } = await keyAndCsr('evil.example');
    const r = await asNode(n1, 'POST', '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/web`,
      csr: csrPem,
    });
    expect(r.status).toBe(201);
    const b = r.json<IssuanceBody>();
    expect(b.spiffe_id).toBe(`spiffe://${TD}/web`);
    expect(b.node_id).toBeUndefined();
    expect(Date.parse(b.expires_at) - t.clock.now().getTime()).toBe(30 * 60_000);
    const text = opensslText(b.certificate_chain);
    expect(text).toMatch(
      /Subject Alternative Name:\s+URI:spiffe:\/\/test\.example\.org\/web, DNS:web\.internal, DNS:web\.example\.org\n/,
    );
    expect(text).not.toContain('evil');
    expect(await t.ca.storage.certificates.findBySerial(b.serial)).toMatchObject({
      kind: 'workload',
      issuedVia: 'n1',
      nodeId: null,
    });
    const [leaf, inter] = b.certificate_chain.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    const f = writeFiles(dir.path, {
      'bundle.pem': t.bundle,
      'leaf.pem': leaf!,
      'inter.pem': inter!,
      'chain.pem': b.certificate_chain,
    });
    for (const purpose of ['sslclient', 'sslserver']) {
      const v = run('openssl', [
        'verify',
        '-x509_strict',
        '-purpose',
        purpose,
        '-CAfile',
        f['bundle.pem']!,
        '-untrusted',
        f['inter.pem']!,
        f['leaf.pem']!,
      ]);
      expect(v.out.trim()).toBe(`${f['leaf.pem']}: OK`);
    }
  });

  itWithTool('certtool', 'the entry SVID verifies with GnuTLS certtool', async () => {
    const r = await asNode(n1, 'POST', '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/web`,
      csr: (await keyAndCsr()).csrPem,
    });
    expect(r.status).toBe(201);
    const f = writeFiles(dir.path, {
      'bundle.pem': t.bundle,
      'chain.pem': r.json<IssuanceBody>().certificate_chain,
    });
    const c = run('certtool', [
      '--verify',
      '--load-ca-certificate',
      f['bundle.pem']!,
      '--infile',
      f['chain.pem']!,
    ]);
    expect(c.out).toMatch(/Chain verification output: Verified/);
  });

  it('fail/node B asking for node A entry: 403 ERR_NOT_AUTHORIZED', async () => {
    const r = await asNode(n2, 'POST', '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/web`,
      csr: (await keyAndCsr()).csrPem,
    });
    expect(r.status).toBe(403);
    expect(errorBodyOf(r).code).toBe('ERR_NOT_AUTHORIZED');
  });

  it('checks authorization on every request, also on a reused keep-alive connection', async () => {
    await adminCall('POST', '/v1/admin/entries', {
      name: 'temp',
      spiffe_id: `spiffe://${TD}/temp`,
      parent: 'n1',
    });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    agent.on('free', (s) => sockets.add(s));
    const ask = async () =>
      asNode(
        n1,
        'POST',
        '/v1/workload-svids',
        { spiffe_id: `spiffe://${TD}/temp`, csr: (await keyAndCsr()).csrPem },
        agent,
      );
    expect((await ask()).status).toBe(201);
    const del = await adminCall('DELETE', '/v1/admin/entries/temp');
    expect({ status: del.status, body: del.body.toString() }).toEqual({ status: 204, body: '' });
    const after = await ask();
    expect(after.status).toBe(403);
    expect(sockets.size).toBe(1);
    agent.destroy();
  });

  it('an entry deleted and created again with other DNS names: the next SVID carries the new names (no stale entry)', async () => {
    const create = (dns: string[]) =>
      adminCall('POST', '/v1/admin/entries', {
        name: 'again',
        spiffe_id: `spiffe://${TD}/again`,
        parent: 'n1',
        dns_names: dns,
      });
    const ask = async () =>
      asNode(n1, 'POST', '/v1/workload-svids', {
        spiffe_id: `spiffe://${TD}/again`,
        csr: (await keyAndCsr()).csrPem,
      });
    const sans = (r: Awaited<ReturnType<typeof ask>>) =>
      opensslText(r.json<IssuanceBody>().certificate_chain).match(/Subject Alternative Name:\s+(.*)\n/)![1];
    expect((await create(['old.internal'])).status).toBe(201);
    const first = await ask();
    expect(first.status).toBe(201);
    expect(sans(first)).toBe(`URI:spiffe://${TD}/again, DNS:old.internal`);
    expect((await adminCall('DELETE', '/v1/admin/entries/again')).status).toBe(204);
    t.clock.advance(1);
    expect((await create(['new.internal'])).status).toBe(201);
    const second = await ask();
    expect(second.status).toBe(201);
    expect(sans(second)).toBe(`URI:spiffe://${TD}/again, DNS:new.internal`);
    const audit = await t.ca.storage.audit.list({
      event: 'certificate.issued',
      subject: `spiffe://${TD}/again`,
    });
    expect(audit.map((a) => a.details.serial).sort()).toEqual(
      [first.json<IssuanceBody>().serial, second.json<IssuanceBody>().serial].sort(),
    );
  });

  it('fail/an admin or an unauthenticated caller cannot mint workload SVIDs', async () => {
    const body = { spiffe_id: `spiffe://${TD}/web`, csr: (await keyAndCsr()).csrPem };
    expect(
      (
        await https(`${t.url}/v1/workload-svids`, {
          method: 'POST',
          body: JSON.stringify(body),
          ca: t.bundle,
        })
      ).status,
    ).toBe(401);
    expect((await adminCall('POST', '/v1/workload-svids', body)).status).toBe(403);
  });

  it('fail/the key of a node certificate cannot be certified again for a workload: 409 ERR_KEY_REUSED', async () => {
    const f = writeFiles(dir.path, { 'n1.key': n1.key });
    const csrPem = execFileSync('openssl', ['req', '-new', '-key', f['n1.key']!, '-subj', '/CN=x'], {
      encoding: 'utf8',
    });
    const r = await asNode(n1, 'POST', '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/web`,
      csr: csrPem,
    });
    expect(r.status).toBe(409);
    expect(errorBodyOf(r).code).toBe('ERR_KEY_REUSED');
  });

  it.each([
    [
      'fail/unknown parent',
      { name: 'x1', spiffe_id: `spiffe://${TD}/x1`, parent: 'nope' },
      404,
      'ERR_NOT_FOUND',
    ],
    ['fail/no parent', { name: 'x1', spiffe_id: `spiffe://${TD}/x1` }, 400, 'ERR_BAD_REQUEST'],
    [
      'fail/a parent that is not a string',
      { name: 'x1', spiffe_id: `spiffe://${TD}/x1`, parent: 1 },
      400,
      'ERR_BAD_REQUEST',
    ],

    [
      'fail/duplicate name',
      { name: 'web', spiffe_id: `spiffe://${TD}/other`, parent: 'n2' },
      409,
      'ERR_CONFLICT',
    ],
    [
      'fail/same SPIFFE ID twice under one parent',
      { name: 'web2', spiffe_id: `spiffe://${TD}/web`, parent: 'n1' },
      409,
      'ERR_CONFLICT',
    ],
    [
      'fail/reserved node path',
      { name: 'x2', spiffe_id: `spiffe://${TD}/node/n2`, parent: 'n1' },
      400,
      'ERR_BAD_REQUEST',
    ],
    [
      'fail/other trust domain',
      { name: 'x3', spiffe_id: 'spiffe://evil.org/web', parent: 'n1' },
      400,
      'ERR_BAD_REQUEST',
    ],
    [
      'fail/bad DNS name',
      { name: 'x4', spiffe_id: `spiffe://${TD}/x4`, parent: 'n1', dns_names: ['10.0.0.1'] },
      400,
      'ERR_BAD_REQUEST',
    ],
    [
      'fail/wildcard not allowed',
      { name: 'x5', spiffe_id: `spiffe://${TD}/x5`, parent: 'n1', dns_names: ['*.a.example'] },
      400,
      'ERR_BAD_REQUEST',
    ],
    [
      'fail/bad selector',
      { name: 'x6', spiffe_id: `spiffe://${TD}/x6`, parent: 'n1', selectors: ['k8s:ns:default'] },
      400,
      'ERR_BAD_REQUEST',
    ],
    [
      'fail/ttl over the maximum',
      { name: 'x7', spiffe_id: `spiffe://${TD}/x7`, parent: 'n1', ttl: '30d' },
      400,
      'ERR_BAD_REQUEST',
    ],
    [
      'fail/SQL metacharacters in a name',
      { name: "x'; drop table entries;--", spiffe_id: `spiffe://${TD}/x8`, parent: 'n1' },
      400,
      'ERR_BAD_REQUEST',
    ],
  ])('%s', async (_name, body, status, code) => {
    const r = await adminCall('POST', '/v1/admin/entries', body);
    expect(r.status).toBe(status);
    expect(errorBodyOf(r).code).toBe(code);
  });

  it('fail/each refusal names its field: no parent, a parent not a string, 33 DNS names', async () => {
    const base = { name: 'x9', spiffe_id: `spiffe://${TD}/x9` };
    const dns = Array.from({ length: 33 }, (_, i) => `h${i}.example`);
    for (const [body, message] of [
      [base, /^parent: /],
      [{ ...base, parent: 1 }, /^parent: /],
      [{ ...base, parent: 'n1', dns_names: dns }, /^dns_names: a list of at most 32$/],
    ] as const) {
      const r = await adminCall('POST', '/v1/admin/entries', body);
      expect([r.status, errorBodyOf(r).code, errorBodyOf(r).message]).toEqual([
        400,
        'ERR_BAD_REQUEST',
        expect.stringMatching(message),
      ]);
    }
  });

  it('ok/the same SPIFFE ID may be parented to two nodes, and a wildcard when the entry allows it', async () => {
    const r = await adminCall('POST', '/v1/admin/entries', {
      name: 'web-on-n2',
      spiffe_id: `spiffe://${TD}/web`,
      parent: 'n2',
      dns_names: ['*.web.example.org'],
      allow_wildcard_dns: true,
    });
    expect(r.status).toBe(201);
    const svid = await asNode(n2, 'POST', '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/web`,
      csr: (await keyAndCsr()).csrPem,
    });
    expect(svid.status).toBe(201);
    expect(opensslText(svid.json<IssuanceBody>().certificate_chain)).toContain('DNS:*.web.example.org');
  });

  it('an auditor lists entries but cannot create or delete them', async () => {
    const auditor = await t.issueAdmin('auditor', 'aud');
    const list = await https(`${t.url}/v1/admin/entries`, { ca: t.bundle, ...auditor });
    expect(list.status).toBe(200);
    expect(list.json<{ entries: { name: string }[] }>().entries.map((e) => e.name)).toContain('web');
    const body = JSON.stringify({ name: 'z', spiffe_id: `spiffe://${TD}/z`, parent: 'n1' });
    expect(
      (await https(`${t.url}/v1/admin/entries`, { method: 'POST', body, ca: t.bundle, ...auditor })).status,
    ).toBe(403);
    expect(
      (await https(`${t.url}/v1/admin/entries/web`, { method: 'DELETE', ca: t.bundle, ...auditor })).status,
    ).toBe(403);
    expect((await adminCall('DELETE', '/v1/admin/entries/nope')).status).toBe(404);
  });
});
