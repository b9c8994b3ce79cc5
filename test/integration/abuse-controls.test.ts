import type { ClientRequest } from 'node:http';
import { request } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { describeEachBackend } from '../support/database';
import { callAs, https, type HttpsResult } from '../support/https';
import { attest, attestedNode, keyAndCsr, newToken, renew } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { errorBodyOf } from '../support/errors';

const TD = 'test.example.org';
const badAttest = { method: 'join_token', token: 'BATON1-x-y.z', csr: 'nope' };

/** Sends until the first 429 (at most `max` requests); returns the statuses seen. */
async function untilLimited(send: () => Promise<HttpsResult>, max: number): Promise<HttpsResult[]> {
  const seen: HttpsResult[] = [];
  for (let i = 0; i < max; i++) {
    const r = await send();
    seen.push(r);
    if (r.status === 429) break;
  }
  return seen;
}

async function scrape(t: TestServer): Promise<string> {
  return (await https(`${t.url}/metrics`, { ca: t.bundle })).body.toString('utf8');
}

describeEachBackend('abuse controls: rate limits, quotas and load shedding', (backend) => {
  let t: TestServer;
  let admin: { cert: string; key: string };
  let n1: Awaited<ReturnType<typeof attestedNode>>;
  let n2: Awaited<ReturnType<typeof attestedNode>>;

  const asNode = (n: { cert: string; key: string }, path: string, body: unknown) =>
    callAs(t, n, 'POST', path, body);
  const workloadSvid = async (n: { cert: string; key: string }, name: string) =>
    asNode(n, '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/${name}`,
      csr: (await keyAndCsr(name)).csrPem,
    });

  beforeAll(async () => {
    t = await startTestServer({
      backend,
      trustDomain: TD,
      serverFlags: {
        'rate-limits': 'on',
        'rate-attest': '5/m',
        'rate-public': '3/m',
        'quota-workload': '3/m',
        'quota-renew': '2/m',
      },
    });
    const a = await t.issueAdmin('operator', 'ops');
    admin = { cert: a.cert, key: a.key };
    // Two of the five attestations this address may make.
    n1 = await attestedNode(t, { nodeName: 'n1' });
    n2 = await attestedNode(t, { nodeName: 'n2' });
    for (const [name, parent] of [
      ['web', 'n1'],
      ['api', 'n2'],
    ]) {
      const r = await https(`${t.url}/v1/admin/entries`, {
        method: 'POST',
        body: JSON.stringify({ name, spiffe_id: `spiffe://${TD}/${name}`, parent }),
        ca: t.bundle,
        ...admin,
      });
      expect(r.status).toBe(201);
    }
  });
  afterAll(async () => {
    await t.close();
  });

  it('fail/a burst over the attest limit from one address gets 429 ERR_RATE_LIMITED with Retry-After', async () => {
    const seen = await untilLimited(() => attest(t, badAttest), 10);
    // 5/m: two tokens went to n1 and n2, three more answer (400: refused on their merits); one more
    // may have dripped in if setting up took over 12 s.
    const limited = seen.pop()!;
    expect(seen.map((r) => r.status)).toEqual(Array(seen.length).fill(400));
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen.length).toBeLessThanOrEqual(4);
    expect(errorBodyOf(limited).code).toBe('ERR_RATE_LIMITED');
    // One token every 12 s: the header says when the next one comes.
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(12);
    expect(limited.headers['retry-after']).toMatch(/^\d+$/);
    // A valid token is refused too: the limit is checked before anything is spent.
    const { csrPem } = await keyAndCsr();
    const token = await newToken(t);
    const r = await attest(t, { method: 'join_token', token, csr: csrPem });
    expect(r.status).toBe(429);
    // ... and stays spendable for later.
    expect((await t.ca.storage.tokens.findById(token.split('-')[2]!.split('.')[0]!))?.usesLeft).toBe(1);
  });

  it('ok/another address, other routes and authenticated nodes still work while attest is limited', async () => {
    const { csrPem } = await keyAndCsr();
    const other = await https(`${t.url}/v1/attest`, {
      method: 'POST',
      body: JSON.stringify({ method: 'join_token', token: await newToken(t), csr: csrPem }),
      ca: t.bundle,
      localAddress: '127.0.0.2',
    });
    expect(other.status).toBe(201);
    expect((await https(`${t.url}/v1/bundle`, { ca: t.bundle })).status).toBe(200);
    expect((await https(`${t.url}/healthz`, { ca: t.bundle })).status).toBe(200);
    // The challenge route has its own bucket (x509pop is not configured here: 400, not 429).
    const challenge = await https(`${t.url}/v1/attest/challenge`, {
      method: 'POST',
      body: JSON.stringify({ method: 'x509pop' }),
      ca: t.bundle,
    });
    expect(errorBodyOf(challenge).code).toBe('ERR_ATTESTATION_METHOD_UNKNOWN');
    expect((await workloadSvid(n2, 'api')).status).toBe(201);
  });

  it('fail/the public routes are limited per address (OCSP, CRL, bundle a bucket each)', async () => {
    // bundle: one token spent above.
    const bundle = await untilLimited(() => https(`${t.url}/v1/bundle`, { ca: t.bundle }), 5);
    expect(bundle.map((r) => r.status)).toEqual([200, 200, 429]);
    const crl = await untilLimited(() => https(`${t.url}/v1/crl`, { ca: t.bundle }), 5);
    expect(crl.map((r) => r.status)).toEqual([200, 200, 200, 429]);
    const ocsp = await untilLimited(() => https(`${t.url}/v1/ocsp/${'A'.repeat(8)}`, { ca: t.bundle }), 5);
    expect(ocsp.map((r) => r.status)).toEqual([400, 400, 400, 429]);
    expect(ocsp[3]!.headers['retry-after']).toMatch(/^\d+$/);
    const elsewhere = await https(`${t.url}/v1/crl`, { ca: t.bundle, localAddress: '127.0.0.3' });
    expect(elsewhere.status).toBe(200);
  });

  it('fail/the per-node workload SVID quota refuses the 4th in a minute; another node is unaffected', async () => {
    const seen = [];
    for (let i = 0; i < 4; i++) seen.push(await workloadSvid(n1, 'web'));
    expect(seen.map((r) => r.status)).toEqual([201, 201, 201, 429]);
    expect(errorBodyOf(seen[3]!).code).toBe('ERR_RATE_LIMITED');
    expect(Number(seen[3]!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(seen[3]!.headers['retry-after'])).toBeLessThanOrEqual(20);
    // n2 spent one of its three above.
    expect((await workloadSvid(n2, 'api')).status).toBe(201);
  });

  it('fail/the renewal quota follows the node across its certificates', async () => {
    let cred = { cert: n2.cert, key: n2.key };
    for (let i = 0; i < 2; i++) {
      const next = await keyAndCsr();
      const r = await renew(t, cred, next.csrPem);
      expect(r.status).toBe(201);
      cred = { cert: r.json<{ certificate_chain: string }>().certificate_chain, key: next.keyPem };
    }
    const r = await renew(t, cred, (await keyAndCsr()).csrPem);
    expect(r.status).toBe(429);
    expect(errorBodyOf(r).code).toBe('ERR_RATE_LIMITED');
    // Without a client certificate the quota is never reached: 401 as before.
    expect((await renew(t, undefined, (await keyAndCsr()).csrPem)).status).toBe(401);
  });

  it('counts every refusal by code', async () => {
    expect(await scrape(t)).toMatch(
      /^baton_requests_refused_total\{code="ERR_RATE_LIMITED"\} ([6-9]|\d\d)$/m,
    );
  });
});

describeEachBackend('abuse controls: limits off', (backend) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD, serverFlags: { 'rate-limits': 'off' } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('ok/--rate-limits off lets every request through', async () => {
    const statuses = new Set<number>();
    for (let i = 0; i < 40; i++) statuses.add((await attest(t, badAttest)).status);
    for (let i = 0; i < 40; i++) statuses.add((await https(`${t.url}/v1/crl`, { ca: t.bundle })).status);
    expect([...statuses].sort()).toEqual([200, 400]);
    const n = await attestedNode(t);
    let cred = { cert: n.cert, key: n.key };
    for (let i = 0; i < 12; i++) {
      const next = await keyAndCsr();
      const r = await renew(t, cred, next.csrPem);
      expect(r.status).toBe(201);
      cred = { cert: r.json<{ certificate_chain: string }>().certificate_chain, key: next.keyPem };
    }
  });
});

describeEachBackend('abuse controls: load shedding', (backend) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ backend, serverFlags: { 'max-in-flight': '2' } });
  });
  afterAll(async () => {
    await t.close();
  });

  /** A POST whose body never finishes: it holds a request in flight until destroyed. */
  const slowUpload = (): ClientRequest => {
    const req = request(`${t.url}/v1/attest`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': '1000' },
      ca: t.bundle,
    });
    req.on('error', () => undefined);
    req.write('{"method":');
    return req;
  };

  it('fail/past --max-in-flight new requests get 429 + Retry-After; probes and scrapes still answer', async () => {
    const held = [slowUpload(), slowUpload()];
    await waitFor(async () => /^baton_http_requests_in_flight 2$/m.test(await scrape(t)));
    const shed = await https(`${t.url}/v1/bundle`, { ca: t.bundle });
    expect(shed.status).toBe(429);
    expect(errorBodyOf(shed).code).toBe('ERR_RATE_LIMITED');
    expect(shed.headers['retry-after']).toBe('2');
    expect((await https(`${t.url}/healthz`, { ca: t.bundle })).status).toBe(200);
    expect((await https(`${t.url}/readyz`, { ca: t.bundle })).status).toBe(200);
    for (const r of held) r.destroy();
    await waitFor(async () => /^baton_http_requests_in_flight 0$/m.test(await scrape(t)));
    expect((await https(`${t.url}/v1/bundle`, { ca: t.bundle })).status).toBe(200);
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('abuse controls: request size, headers and slow clients', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({
      serverFlags: { 'headers-timeout': '1s', 'request-timeout': '2s' },
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('fail/a JSON body over 64 KiB gets 413 ERR_BODY_TOO_LARGE', async () => {
    const r = await attest(t, { method: 'join_token', token: 'x', csr: 'x'.repeat(70 * 1024) });
    expect(r.status).toBe(413);
    expect(errorBodyOf(r).code).toBe('ERR_BODY_TOO_LARGE');
  });

  it('fail/an OCSP body over its limit gets 413', async () => {
    const r = await https(`${t.url}/v1/ocsp`, {
      method: 'POST',
      body: Buffer.alloc(70 * 1024, 0x30),
      headers: { 'content-type': 'application/ocsp-request' },
      ca: t.bundle,
    });
    expect(r.status).toBe(413);
  });

  it('fail/more than 100 headers get 431 ERR_HEADERS_TOO_LARGE', async () => {
    const headers: Record<string, string> = {};
    for (let i = 0; i < 150; i++) headers[`x-flood-${i}`] = 'a';
    const r = await https(`${t.url}/v1/bundle`, { ca: t.bundle, headers });
    expect(r.status).toBe(431);
    expect(errorBodyOf(r).code).toBe('ERR_HEADERS_TOO_LARGE');
  });

  it('fail/a 64 KiB header is refused with 431 and the server stays up', async () => {
    const outcome = await https(`${t.url}/v1/bundle`, {
      ca: t.bundle,
      headers: { 'x-big': 'a'.repeat(64 * 1024) },
    }).then(
      (r) => r.status,
      // The server may close the connection while the client is still writing the header.
      (e: NodeJS.ErrnoException) => e.code,
    );
    expect([431, 'ECONNRESET', 'EPIPE']).toContain(outcome);
    expect((await https(`${t.url}/healthz`, { ca: t.bundle })).status).toBe(200);
  });

  it('fail/a client that never finishes its headers is cut off after --headers-timeout', async () => {
    const port = Number(new URL(t.url).port);
    const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false });
    let answer = '';
    socket.on('data', (d) => (answer += d));
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('secureConnect', r));
    const started = Date.now();
    socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const drip = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 200);
    await new Promise((r) => socket.once('close', r));
    clearInterval(drip);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(500);
    expect(elapsed).toBeLessThan(5000);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect((await https(`${t.url}/healthz`, { ca: t.bundle })).status).toBe(200);
  });

  it('fail/a connection that never starts its TLS handshake is closed after --headers-timeout', async () => {
    const port = Number(new URL(t.url).port);
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('connect', r));
    const started = Date.now();
    await new Promise((r) => socket.once('close', r));
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
