import type { ClientRequest } from 'node:http';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { describeEachBackend } from '../support/database';
import { type HttpsResult, https, httpsRequest } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { errorBodyOf } from '../support/errors';

/**
 * Issue 14, finding 6: one workload SVID held 400 revocation long-polls (about 400 MB). Waiting
 * long-polls are capped per identity and in total (429 + Retry-After), a client that goes away
 * frees its slot at once, and connections past --max-connections are closed unanswered.
 */
const TD = 'test.example.org';

type Credential = { cert: string; key: string };

interface Held {
  req: ClientRequest;
  answer: Promise<HttpsResult>;
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000) {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not reached in time: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describeEachBackend('revocation feed limits (issue 14)', (backend) => {
  let t: TestServer;
  let admin: Credential;
  const nodes: Record<string, Credential & { body: IssuanceBody }> = {};
  let workload: Credential;
  const open: Held[] = [];

  /** A long-poll on its own connection, held until answered or destroyed. */
  const poll = (who: Credential, query: string): Held => {
    const { req, result: answer } = httpsRequest(`${t.url}/v1/revocations?${query}`, {
      ca: t.bundle,
      cert: who.cert,
      key: who.key,
      agent: false,
    });
    const held = { req, answer };
    open.push(held);
    return held;
  };
  const waiting = (n: number) => waitFor(`${n} long-polls waiting`, () => t.running.feed.waiting === n);
  const abort = (h: Held) => {
    h.answer.catch(() => undefined);
    h.req.destroy();
  };
  const revokeSpare = async () => {
    const spare = await attestedNode(t);
    const r = await https(`${t.url}/v1/admin/certificates/${spare.body.serial}/revoke`, {
      method: 'POST',
      body: '{}',
      ca: t.bundle,
      ...admin,
    });
    expect(r.status).toBe(200);
    return r.json<{ event: { id: number } }>().event.id;
  };

  beforeAll(async () => {
    t = await startTestServer({
      backend,
      trustDomain: TD,
      serverFlags: { 'max-feed-waiters-per-identity': '2', 'max-feed-waiters': '5' },
    });
    const a = await t.issueAdmin('admin', 'feed-admin');
    admin = { cert: a.cert, key: a.key };
    for (const name of ['a', 'b', 'c', 'd']) nodes[name] = await attestedNode(t, { nodeName: name });
    const entry = { name: 'reader', spiffe_id: `spiffe://${TD}/reader`, parent: 'a' };
    expect(
      (
        await https(`${t.url}/v1/admin/entries`, {
          method: 'POST',
          body: JSON.stringify(entry),
          ca: t.bundle,
          ...admin,
        })
      ).status,
    ).toBe(201);
    const k = await keyAndCsr();
    const svid = await https(`${t.url}/v1/workload-svids`, {
      method: 'POST',
      body: JSON.stringify({ spiffe_id: entry.spiffe_id, csr: k.csrPem }),
      ca: t.bundle,
      cert: nodes.a!.cert,
      key: nodes.a!.key,
    });
    expect(svid.status).toBe(201);
    workload = { cert: svid.json<IssuanceBody>().certificate_chain, key: k.keyPem };
  });
  afterEach(async () => {
    for (const h of open.splice(0)) abort(h);
    await waiting(0);
  });
  afterAll(async () => {
    await t.close();
  });

  it('fail/one identity past its cap gets 429 + Retry-After; other identities still get their long-poll, and a revocation wakes them all', async () => {
    const since = await t.ca.storage.revocations.lastEventId();
    const q = `since=${since}&wait=30`;
    const held = [poll(nodes.a!, q), poll(nodes.a!, q)];
    await waiting(2);
    // Short wait: without a cap this would be answered 200 after it, not refused at once.
    const refused = await poll(nodes.a!, `since=${since}&wait=3`).answer;
    expect(refused.status).toBe(429);
    expect(errorBodyOf(refused).code).toBe('ERR_RATE_LIMITED');
    expect(refused.headers['retry-after']).toBe('30');
    expect(refused.headers.connection).toBe('close');
    // The catch-up read never waits and is never counted.
    const catchUp = await poll(nodes.a!, `since=0&wait=0`).answer;
    expect(catchUp.status).toBe(200);
    // Another node, and a workload SVID minted by node a (an identity of its own), still wait.
    held.push(poll(nodes.b!, q), poll(workload, q));
    await waiting(4);
    const id = await revokeSpare();
    for (const r of await Promise.all(held.map((h) => h.answer))) {
      expect(r.status).toBe(200);
      expect(r.json<{ events: { id: number }[]; last: number }>()).toMatchObject({
        events: [{ id }],
        last: id,
      });
    }
    await waiting(0);
  });

  it('fail/the SVIDs a node mints for one entry share one cap: a second SVID of the entry gets no more slots', async () => {
    const k = await keyAndCsr();
    const second = await https(`${t.url}/v1/workload-svids`, {
      method: 'POST',
      body: JSON.stringify({ spiffe_id: `spiffe://${TD}/reader`, csr: k.csrPem }),
      ca: t.bundle,
      cert: nodes.a!.cert,
      key: nodes.a!.key,
    });
    expect(second.status).toBe(201);
    const other: Credential = { cert: second.json<IssuanceBody>().certificate_chain, key: k.keyPem };
    const since = await t.ca.storage.revocations.lastEventId();
    poll(workload, `since=${since}&wait=30`);
    poll(workload, `since=${since}&wait=30`);
    await waiting(2);
    // The identity is the SPIFFE ID on its node, not the certificate.
    const refused = await poll(other, `since=${since}&wait=3`).answer;
    expect(refused.status).toBe(429);
    expect(errorBodyOf(refused).code).toBe('ERR_RATE_LIMITED');
  });

  it('fail/past the total cap a new identity gets 429; an aborted long-poll frees its slot at once', async () => {
    const since = await t.ca.storage.revocations.lastEventId();
    const q = `since=${since}&wait=30`;
    const a1 = poll(nodes.a!, q);
    const held = [poll(nodes.a!, q), poll(nodes.b!, q), poll(nodes.b!, q), poll(nodes.c!, q)];
    await waiting(5);
    const full = await poll(nodes.d!, `since=${since}&wait=3`).answer;
    expect(full.status).toBe(429);
    expect(errorBodyOf(full).code).toBe('ERR_RATE_LIMITED');
    expect(full.headers['retry-after']).toBe('30');
    // The client goes away: its slot is free now, not when its 30 s would have run out.
    abort(a1);
    await waiting(4);
    held.push(poll(nodes.a!, q));
    await waiting(5);
    expect((await poll(nodes.d!, `since=${since}&wait=3`).answer).status).toBe(429);
    abort(held.pop()!);
    await waiting(4);
    held.push(poll(nodes.d!, q));
    await waiting(5);
    const id = await revokeSpare();
    for (const r of await Promise.all(held.map((h) => h.answer))) {
      expect(r.status).toBe(200);
      expect(r.json<{ events: { id: number }[] }>().events.map((e) => e.id)).toEqual([id]);
    }
  });
});

describeEachBackend('connection cap (issue 14)', (backend) => {
  let t: TestServer;
  const sockets: TLSSocket[] = [];

  /** A TLS connection: resolves true once the handshake completes, false if the server closes it first. */
  const connect = (): Promise<boolean> =>
    new Promise((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port: Number(new URL(t.url).port), ca: t.bundle });
      sockets.push(s);
      s.once('secureConnect', () => resolve(true));
      s.once('close', () => resolve(false));
      s.on('error', () => undefined);
    });
  const connections = () =>
    new Promise<number>((resolve, reject) =>
      t.running.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
    );

  beforeAll(async () => {
    t = await startTestServer({
      backend,
      serverFlags: { 'max-connections': '8', 'max-feed-waiters': '4', 'max-in-flight': '2' },
    });
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await t.close();
  });

  it('fail/past --max-connections a new connection is closed before its handshake; a closed one frees its place', async () => {
    for (let i = 0; i < 8; i++) expect(await connect()).toBe(true);
    await waitFor('8 connections', async () => (await connections()) === 8);
    expect(await connect()).toBe(false);
    sockets[0]!.destroy();
    await waitFor('7 connections', async () => (await connections()) === 7);
    const scrape = await https(`${t.url}/metrics`, { ca: t.bundle, headers: { connection: 'close' } });
    expect(scrape.status).toBe(200);
    expect(scrape.body.toString()).toMatch(/^baton_connections_dropped_total 1$/m);
  });
});
