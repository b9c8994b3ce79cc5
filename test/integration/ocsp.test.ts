import { readFileSync, writeFileSync } from 'node:fs';
import { describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { attestedNode } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { run, runAsync, tempDir, writeFiles } from '../support/tools';

const certsOf = (chain: string) =>
  chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g)!;

describeEachBackend('OCSP responder (RFC 6960) checked by openssl ocsp', (backend) => {
  let t: TestServer;
  const dir = tempDir();
  beforeAll(async () => {
    t = await startTestServer({ backend });
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  const ocsp = async (leafPem: string, interPem: string, extra: string[] = []) => {
    const f = writeFiles(dir.path, {
      'leaf.pem': leafPem,
      'inter.pem': interPem,
      'bundle.pem': t.bundle + interPem,
    });
    const r = await runAsync('openssl', [
      'ocsp',
      '-issuer',
      f['inter.pem']!,
      '-cert',
      f['leaf.pem']!,
      '-url',
      `${t.url}/v1/ocsp`,
      '-CAfile',
      f['bundle.pem']!,
      '-resp_text',
      ...extra,
    ]);
    return r.out;
  };

  it('answers good, then revoked with time and reason after a revocation, with the nonce echoed', async () => {
    const n = await attestedNode(t);
    const [leaf, inter] = certsOf(n.cert);
    const good = await ocsp(leaf!, inter!);
    expect(good).toMatch(/Response verify OK/);
    expect(good).toMatch(/leaf\.pem: good/);
    expect(good).not.toMatch(/WARNING: no nonce/);
    const admin = await t.issueAdmin();
    const r = await https(`${t.url}/v1/admin/nodes/${n.body.node_id}/revoke`, {
      method: 'POST',
      body: '{"reason":"key-compromise"}',
      ca: t.bundle,
      ...admin,
    });
    expect(r.status).toBe(200);
    const revoked = await ocsp(leaf!, inter!);
    expect(revoked).toMatch(/Response verify OK/);
    expect(revoked).toMatch(/leaf\.pem: revoked/);
    expect(revoked).toMatch(/Reason: keyCompromise/);
    expect(revoked).toMatch(/Revocation Time: /);
  });

  it('answers unknown for a serial it never issued', async () => {
    const n = await attestedNode(t);
    const [, inter] = certsOf(n.cert);
    const other = await startTestServer({ backend: 'pglite' });
    try {
      const foreign = await attestedNode(other);
      const [fleaf] = certsOf(foreign.cert);
      // A certificate of another CA, asked about as if our intermediate issued it: an unknown serial.
      const out = await ocsp(fleaf!, inter!);
      expect(out).toMatch(/Response verify OK/);
      expect(out).toMatch(/leaf\.pem: unknown/);
    } finally {
      await other.close();
    }
  });

  it('serves GET requests with the base64 DER in the path, cacheable without a nonce', async () => {
    const n = await attestedNode(t);
    const [leaf, inter] = certsOf(n.cert);
    const f = writeFiles(dir.path, { 'leaf.pem': leaf!, 'inter.pem': inter! });
    const reqFile = `${dir.path}/req.der`;
    run('openssl', [
      'ocsp',
      '-issuer',
      f['inter.pem']!,
      '-cert',
      f['leaf.pem']!,
      '-no_nonce',
      '-reqout',
      reqFile,
    ]);
    const b64 = readFileSync(reqFile).toString('base64');
    const r = await https(`${t.url}/v1/ocsp/${encodeURIComponent(b64)}`, { ca: t.bundle });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/ocsp-response');
    expect(String(r.headers['cache-control'])).toMatch(/max-age=\d+/);
    const respFile = `${dir.path}/resp.der`;
    writeFileSync(respFile, r.body);
    const fb = writeFiles(dir.path, { 'chain.pem': t.bundle + inter! });
    const v = run('openssl', [
      'ocsp',
      '-respin',
      respFile,
      '-issuer',
      f['inter.pem']!,
      '-cert',
      f['leaf.pem']!,
      '-CAfile',
      fb['chain.pem']!,
    ]);
    expect(v.out).toMatch(/Response verify OK/);
    expect(v.out).toMatch(/leaf\.pem: good/);
  });

  // RFC 6960 §2.3: an unsigned malformedRequest response, read here by openssl, not our parser.
  const expectMalformed = (r: Awaited<ReturnType<typeof https>>) => {
    expect(r.status).toBe(400);
    expect(r.headers['content-type']).toBe('application/ocsp-response');
    const file = `${dir.path}/malformed.der`;
    writeFileSync(file, r.body);
    const read = run('openssl', ['ocsp', '-respin', file, '-resp_text']);
    expect(read.out).toMatch(/Responder Error: malformedrequest \(1\)/);
  };

  it.each([
    ['fail/garbage body', Buffer.from('hello')],
    ['fail/empty body', Buffer.alloc(0)],
    ['fail/truncated DER', Buffer.from([0x30, 0x82, 0x01])],
    ['fail/an empty SEQUENCE', Buffer.from('3000', 'hex')],
  ])('%s: 400 with the OCSP malformedRequest response', async (_name, body) => {
    expectMalformed(
      await https(`${t.url}/v1/ocsp`, {
        method: 'POST',
        body,
        ca: t.bundle,
        headers: { 'content-type': 'application/ocsp-request' },
      }),
    );
  });

  it.each([
    ['fail/not base64', '!!!'],
    ['fail/a stray percent after decoding', '%25ZZ'],
    ['fail/base64 of garbage', Buffer.from('hello').toString('base64')],
  ])('%s on GET: 400 with the OCSP malformedRequest response', async (_name, path) => {
    expectMalformed(await https(`${t.url}/v1/ocsp/${path}`, { ca: t.bundle }));
  });
});
