import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { writeFileAtomic } from '../../common/src/atomic-file';
import {
  authorizeIds,
  authorizeTrustDomain,
  createMtlsServer,
  Identity,
  type IdentityError,
  type MtlsAgent,
  mtlsAgent,
  mtlsRequest,
  RevocationGuard,
  type RevocationGuardOptions,
  requestPeer,
  type StalePolicy,
} from '../../clients/identity/src';
import { FakeClock } from '../../services/ca/src/domain/clock';
import { callAs, https } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir } from '../support/tools';

/**
 * Issue 5 item 5: the library enforces revocation on its peers. A library server (and a client)
 * with a RevocationGuard against a real Baton: node revocation reaches the guard through the feed
 * within about a second, new connections from the revoked node are refused, open ones are closed,
 * other peers carry on; stale data fails closed or open by configuration.
 */

const TD = 'test.example.org';
const HOUR = 3600_000;
const id = (path: string) => `spiffe://${TD}/${path}`;
type NodeCred = Awaited<ReturnType<typeof attestedNode>>;

const waitFor = async (what: string, done: () => boolean, ms = 3000): Promise<void> => {
  for (const end = Date.now() + ms; !done(); ) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

interface Service {
  url: string;
  server: Server;
  refused: IdentityError[];
  close(): void;
}

async function serve(identity: Identity, guard: RevocationGuard, onStale?: StalePolicy): Promise<Service> {
  const refused: IdentityError[] = [];
  const server = createMtlsServer(
    identity,
    { authorize: authorizeTrustDomain(TD), revocation: guard, onStale, onRefused: (e) => refused.push(e) },
    (req, res) => res.end(requestPeer(req).spiffeId),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    url: `https://127.0.0.1:${port}/`,
    server,
    refused,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

describe('revocation enforcement: a library peer refuses revoked nodes and workloads', () => {
  let t: TestServer;
  let admin: { cert: string; key: string };
  const dir = tempDir('baton-enforce-');
  const identities: Identity[] = [];
  const guards: RevocationGuard[] = [];
  const services: Service[] = [];
  const agents: MtlsAgent[] = [];

  const adminPost = (path: string, body: unknown = {}) => callAs(t, admin, 'POST', path, body);
  const nodeIdentity = async (name: string, role: 'manager' | 'worker' = 'worker') => {
    const n = await attestedNode(t, { nodeName: name, role });
    const d = join(dir.path, name);
    writeFileAtomic(join(d, 'node', 'cert.pem'), n.cert);
    writeFileAtomic(join(d, 'node', 'key.pem'), n.key, 0o600);
    writeFileAtomic(join(d, 'bundle.pem'), t.bundle);
    const identity = await Identity.fromAgentNode(d, { pollIntervalMs: 0, startTimeoutMs: 0 });
    identities.push(identity);
    return { node: n, identity };
  };
  const workloadIdentity = async (node: NodeCred, name: string) => {
    expect(
      (await adminPost('/v1/admin/entries', { name, spiffe_id: id(name), parent: node.body.node_id })).status,
    ).toBe(201);
    const k = await keyAndCsr();
    const r = await https(`${t.url}/v1/workload-svids`, {
      method: 'POST',
      body: JSON.stringify({ spiffe_id: id(name), csr: k.csrPem }),
      ca: t.bundle,
      cert: node.cert,
      key: node.key,
    });
    expect(r.status).toBe(201);
    const d = join(dir.path, 'workloads', name);
    writeFileAtomic(join(d, 'cert.pem'), r.json<IssuanceBody>().certificate_chain);
    writeFileAtomic(join(d, 'key.pem'), k.keyPem, 0o600);
    writeFileAtomic(join(d, 'bundle.pem'), t.bundle);
    const identity = await Identity.fromDirectory(d, { pollIntervalMs: 0, startTimeoutMs: 0 });
    identities.push(identity);
    return identity;
  };
  const guardFor = async (identity: Identity, opts: Partial<RevocationGuardOptions> = {}) => {
    const g = await RevocationGuard.start({ identity, serverUrl: t.url, ...opts });
    guards.push(g);
    return g;
  };
  const started = async (s: Promise<Service>) => {
    const svc = await s;
    services.push(svc);
    return svc;
  };
  const agentFor = (identity: Identity, server: Identity, guard?: RevocationGuard) => {
    const a = mtlsAgent(identity, {
      authorize: authorizeIds([server.current().spiffeId]),
      revocation: guard,
    });
    agents.push(a);
    return a;
  };
  /** One request on a keep-alive agent; resolves with the status and the socket it used. */
  const call = async (identity: Identity, url: string, agent: MtlsAgent) => {
    let socket: TLSSocket | undefined;
    agent.once('free', (s: TLSSocket) => (socket = s));
    const r = await mtlsRequest(identity, url, { agent, timeoutMs: 5000 });
    await waitFor('the socket back in the pool', () => socket !== undefined, 1000);
    return { status: r.status, body: r.body.toString(), socket: socket! };
  };
  const oneOff = (identity: Identity, url: string, server: Identity) =>
    mtlsRequest(identity, url, { authorize: authorizeIds([server.current().spiffeId]), timeoutMs: 5000 });

  beforeAll(async () => {
    t = await startTestServer({ trustDomain: TD });
    const a = await t.issueAdmin('operator', 'ops');
    admin = { cert: a.cert, key: a.key };
  });
  afterAll(async () => {
    for (const a of agents) a.destroy();
    for (const s of services) s.close();
    for (const g of guards) g.close();
    for (const i of identities) i.close();
    await t?.close();
    dir.cleanup();
  });

  it('learns a node revocation from the feed within seconds: open connection closed, new ones refused, the other client unaffected', async () => {
    const manager = await nodeIdentity('m1', 'manager');
    const w1 = await nodeIdentity('w1');
    const w2 = await nodeIdentity('w2');
    // w1's workload: revoking its node must cascade to it.
    const w1web = await workloadIdentity(w1.node, 'w1-web');
    const guard = await guardFor(manager.identity);
    expect(guard.status()).toMatchObject({ stale: undefined, feed: { connected: true } });
    expect(guard.status().crls).toHaveLength(2);
    const svc = await started(serve(manager.identity, guard));

    const a1 = agentFor(w1.identity, manager.identity);
    const aWeb = agentFor(w1web, manager.identity);
    const a2 = agentFor(w2.identity, manager.identity);
    const first = await call(w1.identity, svc.url, a1);
    const web = await call(w1web, svc.url, aWeb);
    const other = await call(w2.identity, svc.url, a2);
    expect([first.status, first.body, web.body, other.status]).toEqual([
      200,
      id('node/w1'),
      id('w1-web'),
      200,
    ]);
    expect(guard.connections).toBe(3);
    let closed = false;
    first.socket.once('close', () => (closed = true));
    let webClosed = false;
    web.socket.once('close', () => (webClosed = true));
    const revoked: string[] = [];
    guard.on('revoked', (serials) => revoked.push(...serials));

    expect((await adminPost('/v1/admin/nodes/w1/revoke', { reason: 'key-compromise' })).status).toBe(200);
    await waitFor('the open connection from w1 to be closed', () => closed && webClosed, 2500);
    expect(revoked).toEqual(expect.arrayContaining([w1.identity.current().serial, w1web.current().serial]));
    expect(svc.refused.map((e) => e.code)).toEqual(['ERR_PEER_REVOKED', 'ERR_PEER_REVOKED']);
    expect(svc.refused[0]!.message).toMatch(/is revoked: key-compromise/);

    // New connections, pooled agent or one-off: refused after the handshake, no answer.
    await expect(oneOff(w1.identity, svc.url, manager.identity)).rejects.toMatchObject({
      code: expect.stringMatching(/ECONNRESET|EPIPE/),
    });
    await expect(mtlsRequest(w1web, svc.url, { agent: aWeb, timeoutMs: 5000 })).rejects.toThrow();
    expect(svc.refused.slice(2).map((e) => e.code)).toEqual(['ERR_PEER_REVOKED', 'ERR_PEER_REVOKED']);
    // w2 keeps its connection and keeps being answered.
    expect(other.socket.destroyed).toBe(false);
    expect((await call(w2.identity, svc.url, a2)).status).toBe(200);
    // The CRLs caught up too: the revocation stays enforced without the feed.
    await waitFor('the CRL to list w1', () => guard.status().crls.some((c) => c.entries >= 2));
  });

  it('stale data: fail-closed refuses everyone (and closes open connections), fail-open lets them in, a revoked peer stays refused', async () => {
    const manager = await nodeIdentity('m2', 'manager');
    const w3 = await nodeIdentity('w3');
    const w4 = await nodeIdentity('w4');
    const clock = new FakeClock(new Date());
    const guard = await guardFor(manager.identity, { clock, tickMs: 50 });
    const closed = await started(serve(manager.identity, guard));
    const open = await started(serve(manager.identity, guard, 'fail-open'));
    const a3 = agentFor(w3.identity, manager.identity);
    const kept = await call(w3.identity, closed.url, a3);
    expect(kept.status).toBe(200);
    expect((await adminPost('/v1/admin/nodes/w4/revoke')).status).toBe(200);
    await waitFor(
      'the feed to report w4',
      () => guard.status().feedSerials > 0 && guard.status().crls.some((c) => c.entries > 0),
    );
    let staleReason = '';
    guard.once('stale', (r) => (staleReason = r));

    // Past the CRLs' nextUpdate (1 h by default) with no newer CRL.
    clock.advance(2 * HOUR);
    await waitFor('the guard to notice', () => staleReason !== '' && kept.socket.destroyed);
    expect(staleReason).toMatch(/past its nextUpdate/);
    expect(guard.status().stale).toMatch(/past its nextUpdate/);
    expect(closed.refused.map((e) => e.code)).toEqual(['ERR_REVOCATION_STALE']);

    await expect(oneOff(w3.identity, closed.url, manager.identity)).rejects.toThrow();
    expect(closed.refused.map((e) => e.code)).toEqual(['ERR_REVOCATION_STALE', 'ERR_REVOCATION_STALE']);
    expect((await oneOff(w3.identity, open.url, manager.identity)).status).toBe(200);
    // Revoked wins over stale, whatever the policy.
    await expect(oneOff(w4.identity, open.url, manager.identity)).rejects.toThrow();
    expect(open.refused.map((e) => e.code)).toEqual(['ERR_PEER_REVOKED']);

    // A fresh CRL (the server rebuilds before nextUpdate; here the test moves its clock) ends it.
    t.clock.advance(2 * HOUR);
    try {
      await t.running.jobs.runOnce();
      let fresh = false;
      guard.once('fresh', () => (fresh = true));
      await guard.refresh();
      expect(fresh).toBe(true);
      expect((await oneOff(w3.identity, closed.url, manager.identity)).status).toBe(200);
    } finally {
      t.clock.advance(-2 * HOUR);
    }
  });

  it('client side: an agent with a guard refuses a revoked server and closes its pooled connection', async () => {
    const s1 = await nodeIdentity('s1', 'manager');
    const c1 = await nodeIdentity('c1');
    const serverGuard = await guardFor(s1.identity);
    const svc = await started(serve(s1.identity, serverGuard));
    const clientGuard = await guardFor(c1.identity);
    const agent = agentFor(c1.identity, s1.identity, clientGuard);
    const r = await call(c1.identity, svc.url, agent);
    expect(r.status).toBe(200);
    expect((await adminPost('/v1/admin/nodes/s1/revoke')).status).toBe(200);
    await waitFor('the pooled connection to the revoked server to close', () => r.socket.destroyed);
    await expect(mtlsRequest(c1.identity, svc.url, { agent, timeoutMs: 5000 })).rejects.toMatchObject({
      code: 'ERR_PEER_REVOKED',
    });
  });

  it("a guard on the agent's crl.pem alone (no feed) picks up a rewritten file", async () => {
    const m = await nodeIdentity('m5', 'manager');
    const w = await nodeIdentity('w5');
    const crlFile = join(dir.path, 'm5', 'crl.pem');
    const fetchCrls = async () => (await https(`${t.url}/v1/crl.pem`, { ca: t.bundle })).body.toString();
    writeFileSync(crlFile, await fetchCrls());
    const guard = await RevocationGuard.start({ identity: m.identity, crlFile });
    guards.push(guard);
    expect(guard.status()).toMatchObject({ feed: undefined, stale: undefined });
    const svc = await started(serve(m.identity, guard));
    const a = agentFor(w.identity, m.identity);
    const r = await call(w.identity, svc.url, a);
    expect(r.status).toBe(200);
    expect((await adminPost('/v1/admin/nodes/w5/revoke')).status).toBe(200);
    // What the agent does: replace crl.pem atomically.
    writeFileAtomic(crlFile, await fetchCrls());
    await waitFor('the file change to close the connection', () => r.socket.destroyed);
    expect(svc.refused.map((e) => e.code)).toEqual(['ERR_PEER_REVOKED']);
    expect(svc.refused[0]!.message).toMatch(/per the CRL/);
  });

  it('fail/start() rejects when no CRL can be loaded', async () => {
    const m = await nodeIdentity('m6', 'manager');
    await expect(
      RevocationGuard.start({
        identity: m.identity,
        crlFile: join(dir.path, 'nope.pem'),
        startTimeoutMs: 200,
      }),
    ).rejects.toMatchObject({ code: 'ERR_REVOCATION_SOURCE' });
    await expect(RevocationGuard.start({ identity: m.identity })).rejects.toThrow(TypeError);
  });
});
