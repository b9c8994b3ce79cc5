import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { attest, attestedNode, type IssuanceBody, keyAndCsr, newToken, renew } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { itWithTool, opensslText, run, tempDir, writeFiles } from '../support/tools';
import { errorBodyOf } from '../support/errors';

describeEachBackend('node identity: join tokens, attestation, renewal', (backend) => {
  let t: TestServer;
  const dir = tempDir();
  beforeAll(async () => {
    t = await startTestServer({ backend });
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  const tokenRow = (token: string) => t.ca.storage.tokens.findById(token.split('-')[2]!.split('.')[0]!);

  it('ok/a worker token yields a node X.509-SVID with OU=worker, recorded before it is returned', async () => {
    const token = await newToken(t);
    const { csrPem } = await keyAndCsr();
    const r = await attest(t, { method: 'join_token', token, csr: csrPem });
    expect(r.status).toBe(201);
    const b = r.json<IssuanceBody>();
    expect(b.spiffe_id).toBe(`spiffe://test.example.org/node/${b.node_id}`);
    expect(b.node_id).toMatch(/^[a-z2-7]{16}$/);
    expect(b.bundle).toBe(t.bundle);
    expect(b.certificate_chain.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    const text = opensslText(b.certificate_chain);
    expect(text).toMatch(/Subject: O = test.example.org, OU = worker, CN = [a-z2-7]{16}/);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    const life = Date.parse(b.expires_at) - t.clock.now().getTime();
    expect(life).toBe(24 * 3600_000);
    const refresh = Date.parse(b.refresh_at) - t.clock.now().getTime();
    expect(refresh).toBeGreaterThan(0.44 * life);
    expect(refresh).toBeLessThan(0.56 * life);
    const rec = await t.ca.storage.certificates.findBySerial(b.serial);
    expect(rec).toMatchObject({ kind: 'node', nodeId: b.node_id, status: 'valid', spiffeId: b.spiffe_id });
    const node = await t.ca.storage.nodes.findById(b.node_id!);
    expect(node).toMatchObject({ role: 'worker', status: 'active', attestationMethod: 'join_token' });
    expect((await tokenRow(token))?.usesLeft).toBe(0);
  });

  it('ok/a manager token yields OU=manager', async () => {
    const n = await attestedNode(t, { role: 'manager' });
    expect(opensslText(n.cert)).toMatch(/OU = manager/);
  });

  it('ok/a token bound to a node name yields that node id and the token node TTL', async () => {
    const n = await attestedNode(t, { nodeName: 'conductor-1', role: 'manager', nodeTtlMs: 2 * 3600_000 });
    expect(n.body.node_id).toBe('conductor-1');
    expect(Date.parse(n.body.expires_at) - t.clock.now().getTime()).toBe(2 * 3600_000);
  });

  it('node SVIDs verify with openssl as sslclient and sslserver', async () => {
    const n = await attestedNode(t);
    const [leaf, inter] = n.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g)!;
    const f = writeFiles(dir.path, {
      'bundle.pem': t.bundle,
      'leaf.pem': leaf!,
      'inter.pem': inter!,
      'chain.pem': n.cert,
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

  itWithTool('certtool', 'node SVIDs verify with GnuTLS certtool', async () => {
    const n = await attestedNode(t);
    const f = writeFiles(dir.path, { 'bundle.pem': t.bundle, 'chain.pem': n.cert });
    const c = run('certtool', [
      '--verify',
      '--load-ca-certificate',
      f['bundle.pem']!,
      '--infile',
      f['chain.pem']!,
    ]);
    expect(c.out).toMatch(/Chain verification output: Verified\. The certificate is trusted/);
  });

  it('fail/role escalation through CSR contents: subject, SANs and CA:TRUE in the CSR are ignored', async () => {
    const keyFile = join(dir.path, 'evil.key');
    execFileSync('openssl', [
      'genpkey',
      '-algorithm',
      'EC',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-out',
      keyFile,
    ]);
    const csrPem = execFileSync(
      'openssl',
      [
        'req',
        '-new',
        '-key',
        keyFile,
        '-subj',
        '/O=test.example.org/OU=manager/CN=conductor',
        '-addext',
        'subjectAltName=URI:spiffe://test.example.org/node/conductor,DNS:evil.example,URI:spiffe://test.example.org/admin/root',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      { encoding: 'utf8' },
    );
    const r = await attest(t, {
      method: 'join_token',
      token: await newToken(t, { role: 'worker' }),
      csr: csrPem,
      role: 'manager',
    });
    expect(r.status).toBe(201);
    const b = r.json<IssuanceBody>();
    const text = opensslText(b.certificate_chain);
    expect(text).toMatch(/OU = worker/);
    expect(text).not.toMatch(/manager|conductor|evil|admin/);
    expect(text).toMatch(/CA:FALSE/);
    expect(text).not.toMatch(/Certificate Sign/);
    expect(text.match(/URI:/g)).toHaveLength(3); // the SAN, the CRL DP and the OCSP URL
    expect(text).toContain(`URI:spiffe://test.example.org/node/${b.node_id}`);
  });

  it.each([
    ['fail/unknown token id', async (tok: string) => tok.replace(/-([0-9a-f]{16})\./, '-0000000000000000.')],
    [
      'fail/tampered secret',
      async (tok: string) => tok.slice(0, -4) + (tok.endsWith('aaaa') ? 'bbbb' : 'aaaa'),
    ],
    [
      'fail/wrong pin',
      async (tok: string) => tok.replace(/^BATON1-[a-z2-7]{52}/, `BATON1-${'a'.repeat(52)}`),
    ],
    ['fail/garbage', async () => 'not-a-token'],
    ['fail/not a string', async () => 42 as unknown as string],
    ['fail/missing', async () => undefined as unknown as string],
  ])('%s: 401 ERR_TOKEN_INVALID, not saying why, nothing spent', async (_name, mutate) => {
    const good = await newToken(t);
    const { csrPem } = await keyAndCsr();
    const r = await attest(t, { method: 'join_token', token: await mutate(good), csr: csrPem });
    expect(r.status).toBe(401);
    expect(errorBodyOf(r)).toEqual({ code: 'ERR_TOKEN_INVALID', message: 'invalid join token' });
    expect((await tokenRow(good))?.usesLeft).toBe(1);
  });

  it('fail/expired and reused tokens: 401 ERR_TOKEN_INVALID with the same message', async () => {
    const reused = await newToken(t);
    await attest(t, { method: 'join_token', token: reused, csr: (await keyAndCsr()).csrPem });
    const again = await attest(t, { method: 'join_token', token: reused, csr: (await keyAndCsr()).csrPem });
    expect(again.status).toBe(401);
    expect(errorBodyOf(again)).toEqual({ code: 'ERR_TOKEN_INVALID', message: 'invalid join token' });
    const expiring = await newToken(t, { ttlMs: 60_000 });
    t.clock.advance(61_000);
    try {
      const late = await attest(t, {
        method: 'join_token',
        token: expiring,
        csr: (await keyAndCsr()).csrPem,
      });
      expect(late.status).toBe(401);
      expect(errorBodyOf(late)).toEqual({ code: 'ERR_TOKEN_INVALID', message: 'invalid join token' });
    } finally {
      t.clock.advance(-61_000);
    }
  });

  it.each([
    ['fail/method in the wrong case', 'JOIN_TOKEN'],
    ['fail/unknown method', 'k8s_psat'],
    ['fail/no method', undefined],
  ])('%s: 400 ERR_ATTESTATION_METHOD_UNKNOWN, token not spent', async (_name, method) => {
    const token = await newToken(t);
    const r = await attest(t, { method, token, csr: (await keyAndCsr()).csrPem });
    expect(r.status).toBe(400);
    expect(errorBodyOf(r).code).toBe('ERR_ATTESTATION_METHOD_UNKNOWN');
    expect((await tokenRow(token))?.usesLeft).toBe(1);
  });

  it.each([
    ['fail/no csr', undefined, 'ERR_CSR_INVALID'],
    [
      'fail/garbage csr',
      '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
      'ERR_CSR_INVALID',
    ],
  ])('%s: 400 with a stable code, token not spent, nothing issued', async (_name, csr, code) => {
    const token = await newToken(t);
    const before = (await t.ca.storage.nodes.list()).length;
    const r = await attest(t, { method: 'join_token', token, csr });
    expect(r.status).toBe(400);
    expect(errorBodyOf(r).code).toBe(code);
    expect((await tokenRow(token))?.usesLeft).toBe(1);
    expect((await t.ca.storage.nodes.list()).length).toBe(before);
  });

  it('fail/a key already certified for another identity: 409 ERR_KEY_REUSED, the second token not spent', async () => {
    const { csrPem } = await keyAndCsr();
    expect((await attest(t, { method: 'join_token', token: await newToken(t), csr: csrPem })).status).toBe(
      201,
    );
    const second = await newToken(t);
    const nodesBefore = (await t.ca.storage.nodes.list()).length;
    const r = await attest(t, { method: 'join_token', token: second, csr: csrPem });
    expect(r.status).toBe(409);
    expect(errorBodyOf(r).code).toBe('ERR_KEY_REUSED');
    expect((await tokenRow(second))?.usesLeft).toBe(1);
    expect((await t.ca.storage.nodes.list()).length).toBe(nodesBefore);
  });

  it('token race: 50 concurrent attestations with a 1-use token give exactly one certificate', async () => {
    const token = await newToken(t);
    const csrs = await Promise.all(Array.from({ length: 50 }, () => keyAndCsr()));
    const results = await Promise.all(
      csrs.map((c) => attest(t, { method: 'join_token', token, csr: c.csrPem })),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 401)).toHaveLength(49);
    expect((await tokenRow(token))?.usesLeft).toBe(0);
  });

  it('a 3-use token gives exactly three certificates under 20 concurrent attestations', async () => {
    const token = await newToken(t, { uses: 3 });
    const csrs = await Promise.all(Array.from({ length: 20 }, () => keyAndCsr()));
    const results = await Promise.all(
      csrs.map((c) => attest(t, { method: 'join_token', token, csr: c.csrPem })),
    );
    expect(results.filter((r) => r.status === 201)).toHaveLength(3);
  });

  describe('renewal over mTLS', () => {
    it('ok/renews: new serial and key, same identity; the old certificate is superseded and cannot renew again', async () => {
      const n = await attestedNode(t);
      const next = await keyAndCsr();
      const r = await renew(t, n, next.csrPem);
      expect(r.status).toBe(201);
      const b = r.json<IssuanceBody>();
      expect(b.spiffe_id).toBe(n.body.spiffe_id);
      expect(b.node_id).toBe(n.body.node_id);
      expect(b.serial).not.toBe(n.body.serial);
      expect((await t.ca.storage.certificates.findBySerial(n.body.serial))?.status).toBe('superseded');
      const again = await renew(t, n, (await keyAndCsr()).csrPem);
      expect(again.status).toBe(403);
      expect(errorBodyOf(again).code).toBe('ERR_CERT_SUPERSEDED');
      // The new certificate renews.
      expect(
        (await renew(t, { cert: b.certificate_chain, key: next.keyPem }, (await keyAndCsr()).csrPem)).status,
      ).toBe(201);
    });

    it('fail/a CSR naming another identity still yields the presented identity', async () => {
      const n = await attestedNode(t);
      const other = await attestedNode(t);
      const { csrPem } = await keyAndCsr(other.body.node_id);
      const r = await renew(t, n, csrPem);
      expect(r.status).toBe(201);
      expect(r.json<IssuanceBody>().spiffe_id).toBe(n.body.spiffe_id);
      expect(opensslText(r.json<IssuanceBody>().certificate_chain)).toContain(`CN = ${n.body.node_id}`);
    });

    it('fail/renewal with the same key: 409 ERR_KEY_REUSED, the certificate stays current', async () => {
      const n = await attestedNode(t);
      const f = writeFiles(dir.path, { 'same.key': n.key });
      const csrPem = execFileSync('openssl', ['req', '-new', '-key', f['same.key']!, '-subj', '/CN=x'], {
        encoding: 'utf8',
      });
      const r = await renew(t, n, csrPem);
      expect(r.status).toBe(409);
      expect(errorBodyOf(r).code).toBe('ERR_KEY_REUSED');
      expect((await t.ca.storage.certificates.findBySerial(n.body.serial))?.status).toBe('valid');
    });

    it('fail/no client certificate: 401; an admin certificate: 403 (not a node), as on every node route', async () => {
      const { csrPem } = await keyAndCsr();
      const none = await renew(t, undefined, csrPem);
      expect(none.status).toBe(401);
      expect(errorBodyOf(none).code).toBe('ERR_NOT_AUTHENTICATED');
      const admin = await t.issueAdmin();
      const r = await renew(t, admin, csrPem);
      expect(r.status).toBe(403);
      expect(errorBodyOf(r)).toEqual({
        code: 'ERR_NOT_AUTHORIZED',
        message: 'a node certificate is required',
      });
    });

    it('fail/a certificate from another CA: 401 ERR_NOT_AUTHENTICATED', async () => {
      const rogue = await startTestServer({ backend: 'pglite' });
      try {
        const n = await attestedNode(rogue);
        const r = await renew(t, n, (await keyAndCsr()).csrPem);
        expect(r.status).toBe(401);
        expect(errorBodyOf(r).code).toBe('ERR_NOT_AUTHENTICATED');
      } finally {
        await rogue.close();
      }
    });

    it('fail/an expired certificate cannot renew: 401 ERR_CERT_EXPIRED (the agent re-attests)', async () => {
      const realNow = t.clock.now();
      t.clock.advance(-3 * 3600_000);
      let n: Awaited<ReturnType<typeof attestedNode>>;
      try {
        n = await attestedNode(t, { nodeTtlMs: 3600_000 });
      } finally {
        t.clock.set(realNow);
      }
      const r = await renew(t, n, (await keyAndCsr()).csrPem);
      expect(r.status).toBe(401);
      expect(errorBodyOf(r).code).toBe('ERR_CERT_EXPIRED');
    });

    it('concurrent renewals of one certificate give exactly one new certificate', async () => {
      const n = await attestedNode(t);
      const csrs = await Promise.all(Array.from({ length: 8 }, () => keyAndCsr()));
      const results = await Promise.all(csrs.map((c) => renew(t, n, c.csrPem)));
      expect(results.filter((r) => r.status === 201)).toHaveLength(1);
      expect(
        results.filter((r) => r.status === 403).every((r) => errorBodyOf(r).code === 'ERR_CERT_SUPERSEDED'),
      ).toBe(true);
    });
  });

  describe('admin routes for tokens and nodes', () => {
    it('creates a token with an admin certificate, refuses no certificate (401) and a node certificate (403)', async () => {
      const admin = await t.issueAdmin();
      const body = JSON.stringify({ role: 'manager', ttl: '5m', uses: 2 });
      const ok = await https(`${t.url}/v1/admin/tokens`, { method: 'POST', body, ca: t.bundle, ...admin });
      expect(ok.status).toBe(201);
      const tok = ok.json<{ token: string; role: string; uses: number; expires_at: string }>();
      expect(tok.token).toMatch(new RegExp(`^BATON1-${t.ca.keyring.pin}-[0-9a-f]{16}\\.[a-z2-7]{52}$`));
      expect(tok).toMatchObject({ role: 'manager', uses: 2 });
      expect(Date.parse(tok.expires_at) - t.clock.now().getTime()).toBe(5 * 60_000);
      const row = await tokenRow(tok.token);
      expect(row?.secretHash).toHaveLength(32);
      expect(row?.createdBy).toBe('spiffe://test.example.org/admin/admin');
      const none = await https(`${t.url}/v1/admin/tokens`, { method: 'POST', body, ca: t.bundle });
      expect(none.status).toBe(401);
      const node = await attestedNode(t);
      const asNode = await https(`${t.url}/v1/admin/tokens`, {
        method: 'POST',
        body,
        ca: t.bundle,
        cert: node.cert,
        key: node.key,
      });
      expect(asNode.status).toBe(403);
      expect(errorBodyOf(asNode).code).toBe('ERR_NOT_AUTHORIZED');
      const auditor = await t.issueAdmin('auditor', 'audrey');
      const asAuditor = await https(`${t.url}/v1/admin/tokens`, {
        method: 'POST',
        body,
        ca: t.bundle,
        ...auditor,
      });
      expect(asAuditor.status).toBe(403);
    });

    it.each([
      ['fail/bad role', { role: 'admin' }],
      ['fail/ttl too short', { role: 'worker', ttl: '10s' }],
      ['fail/uses zero', { role: 'worker', uses: 0 }],
      ['fail/bound name with several uses', { role: 'worker', uses: 2, node_name: 'n1' }],
      ['fail/bad node name', { role: 'worker', node_name: 'Bad Name' }],
    ])('%s: 400 ERR_BAD_REQUEST', async (_name, req) => {
      const admin = await t.issueAdmin();
      const r = await https(`${t.url}/v1/admin/tokens`, {
        method: 'POST',
        body: JSON.stringify(req),
        ca: t.bundle,
        ...admin,
      });
      expect(r.status).toBe(400);
      expect(errorBodyOf(r).code).toBe('ERR_BAD_REQUEST');
    });

    it('lists nodes and shows one with its certificates', async () => {
      const n = await attestedNode(t, { nodeName: 'show-me' });
      const admin = await t.issueAdmin('auditor', 'reader');
      const list = await https(`${t.url}/v1/admin/nodes`, { ca: t.bundle, ...admin });
      expect(list.json<{ nodes: { id: string }[] }>().nodes.map((x) => x.id)).toContain('show-me');
      const one = await https(`${t.url}/v1/admin/nodes/show-me`, { ca: t.bundle, ...admin });
      const view = one.json<{
        node: { id: string; role: string };
        certificates: { serial: string; status: string }[];
      }>();
      expect(view.node).toMatchObject({ id: 'show-me', role: 'worker' });
      expect(view.certificates).toEqual([
        expect.objectContaining({ serial: n.body.serial, status: 'valid' }),
      ]);
      const missing = await https(`${t.url}/v1/admin/nodes/nope`, { ca: t.bundle, ...admin });
      expect(missing.status).toBe(404);
    });
  });
});
