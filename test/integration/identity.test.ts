import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import type { Server } from 'node:https';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { writeFileAtomic } from '../../common/src/atomic-file';
import {
  type Authorizer,
  authorizeIds,
  authorizeTrustDomain,
  clientTlsOptions,
  createMtlsServer,
  Identity,
  type IdentityError,
  type IdentityOptions,
  type IdentitySnapshot,
  isManagerNode,
  isNode,
  mtlsAgent,
  mtlsRequest,
  peerOf,
  requestPeer,
} from '../../clients/identity/src';
import { FakeClock } from '../../services/ca/src/domain/clock';
import { https } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir } from '../support/tools';

/**
 * The identity library against a real Baton: SVIDs minted through the HTTP API, written in the
 * agent's layout, and services talking mutual TLS on 127.0.0.1 over real sockets.
 */

const TD = 'test.example.org';
const HOUR = 3600_000;
const id = (path: string) => `spiffe://${TD}/${path}`;
const serialOf = (hex: string) => {
  const s = hex.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
};

interface Svid {
  cert: string;
  key: string;
  bundle: string;
  serial: string;
}
type NodeCred = Awaited<ReturnType<typeof attestedNode>>;

/** What the test service answers: who it saw and what each side presented on this connection. */
interface Echo {
  you: string;
  client_serial: string;
  server_serial: string;
  protocol: string;
  port: number;
}

/** One Baton with an admin and a worker node `n1`, and entries parented to n1. */
async function provision(t: TestServer, entries: Record<string, string>): Promise<NodeCred> {
  const admin = await t.issueAdmin('operator', 'ops');
  const node = await attestedNode(t, { nodeName: 'n1' });
  for (const [name, spiffeId] of Object.entries(entries)) {
    const r = await https(`${t.url}/v1/admin/entries`, {
      method: 'POST',
      body: JSON.stringify({ name, spiffe_id: spiffeId, parent: 'n1' }),
      ca: t.bundle,
      cert: admin.cert,
      key: admin.key,
    });
    expect(r.status).toBe(201);
  }
  return node;
}

/** What the agent does for one entry: a fresh key, a CSR, POST /v1/workload-svids over node mTLS. */
async function workloadSvid(t: TestServer, node: NodeCred, spiffeId: string): Promise<Svid> {
  const { keyPem, csrPem } = await keyAndCsr();
  const r = await https(`${t.url}/v1/workload-svids`, {
    method: 'POST',
    body: JSON.stringify({ spiffe_id: spiffeId, csr: csrPem }),
    ca: t.bundle,
    cert: node.cert,
    key: node.key,
  });
  expect(r.status).toBe(201);
  const b = r.json<IssuanceBody>();
  return { cert: b.certificate_chain, key: keyPem, bundle: b.bundle, serial: b.serial };
}

/** The agent's layout (CONTRACT "agent files"), written the agent's way: atomic, cert.pem then key.pem. */
function writeWorkload(agentDir: string, name: string, s: Svid, bundle = s.bundle): string {
  const dir = join(agentDir, 'workloads', name);
  writeFileAtomic(join(dir, 'cert.pem'), s.cert);
  writeFileAtomic(join(dir, 'key.pem'), s.key, 0o600);
  writeFileAtomic(join(dir, 'bundle.pem'), bundle);
  return dir;
}

function writeNode(agentDir: string, n: NodeCred, bundle: string): string {
  writeFileAtomic(join(agentDir, 'node', 'cert.pem'), n.cert);
  writeFileAtomic(join(agentDir, 'node', 'key.pem'), n.key, 0o600);
  writeFileAtomic(join(agentDir, 'bundle.pem'), bundle);
  return agentDir;
}

interface TestService {
  url: string;
  server: Server;
  /** Requests that reached the handler. */
  answered: Echo[];
  /** Connections the library refused after the handshake. */
  refused: IdentityError[];
  /** Handshakes TLS itself failed (chain, expiry, protocol version). */
  tlsErrors: Error[];
  close(): Promise<void>;
}

async function serve(identity: Identity, authorize: Authorizer): Promise<TestService> {
  const answered: Echo[] = [];
  const refused: IdentityError[] = [];
  const tlsErrors: Error[] = [];
  const server = createMtlsServer(identity, { authorize, onRefused: (e) => refused.push(e) }, (req, res) => {
    const socket = req.socket as TLSSocket;
    const echo: Echo = {
      you: requestPeer(req).spiffeId,
      client_serial: serialOf(requestPeer(req).cert.serialNumber),
      server_serial: serialOf(socket.getX509Certificate()!.serialNumber),
      protocol: String(socket.getProtocol()),
      port: socket.remotePort!,
    };
    answered.push(echo);
    const delay = Number(new URL(req.url ?? '/', 'https://x').searchParams.get('delay') ?? 0);
    setTimeout(() => res.setHeader('content-type', 'application/json').end(JSON.stringify(echo)), delay);
  });
  server.on('tlsClientError', (e) => tlsErrors.push(e));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    url: `https://127.0.0.1:${port}`,
    server,
    answered,
    refused,
    tlsErrors,
    close: async () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

const waitFor = async (what: () => boolean, ms = 3000): Promise<void> => {
  for (const end = Date.now() + ms; !what(); ) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('identity library: mTLS between services with Baton SVIDs', () => {
  let t: TestServer;
  let t2: TestServer;
  let n1: NodeCred;
  let n1OtherCa: NodeCred;
  let expiredWeb: Svid;
  const agent = tempDir('baton-agent-');
  const identities: Identity[] = [];
  const services: TestService[] = [];
  const quick: IdentityOptions = { startTimeoutMs: 0, pollIntervalMs: 0, settleMs: 20 };

  const load = async (dir: string, opts: IdentityOptions = {}) => {
    const i = await Identity.fromDirectory(dir, { ...quick, ...opts });
    identities.push(i);
    return i;
  };
  const start = async (identity: Identity, authorize: Authorizer) => {
    const s = await serve(identity, authorize);
    services.push(s);
    return s;
  };
  const newWorkload = async (name: string, spiffeId: string) =>
    load(writeWorkload(agent.path, name, await workloadSvid(t, n1, spiffeId)));
  const echo = (r: { status: number; body: Buffer }): Echo => {
    expect(r.status).toBe(200);
    return JSON.parse(r.body.toString('utf8'));
  };

  beforeAll(async () => {
    // The CA starts three hours back so that a workload SVID issued two hours back is both
    // inside the CA's life and already expired in real time, where OpenSSL judges it.
    t = await startTestServer({ trustDomain: TD, now: new Date(Date.now() - 3 * HOUR).toISOString() });
    t.clock.set(new Date(Date.now() - 2 * HOUR));
    n1 = await provision(t, { api: id('api'), web: id('web'), intruder: id('intruder') });
    expiredWeb = await workloadSvid(t, n1, id('web'));
    t.clock.set(new Date());
    // Another Baton of the same trust domain: same names, another root.
    t2 = await startTestServer({ trustDomain: TD });
    n1OtherCa = await provision(t2, { web: id('web') });
  });
  afterAll(async () => {
    for (const s of services) await s.close();
    for (const i of identities) i.close();
    await t?.close();
    await t2?.close();
    agent.cleanup();
  });

  it('ok/an authorized peer gets an answer; the server sees its SPIFFE ID; TLS 1.3 by default', async () => {
    const api = await newWorkload('api', id('api'));
    const web = await newWorkload('web', id('web'));
    const svc = await start(api, authorizeIds([id('web')]));
    const e = echo(await mtlsRequest(web, `${svc.url}/hello`, { authorize: authorizeIds([id('api')]) }));
    expect(e).toMatchObject({
      you: id('web'),
      client_serial: web.current().serial,
      server_serial: api.current().serial,
      protocol: 'TLSv1.3',
    });
  });

  it('fail/a client limited to TLS 1.2 is refused by the default TLS 1.3 minimum', async () => {
    const api = await newWorkload('api', id('api'));
    const web = await newWorkload('web', id('web'));
    const svc = await start(api, authorizeIds([id('web')]));
    await expect(
      mtlsRequest(web, svc.url, {
        authorize: authorizeIds([id('api')]),
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
      }),
    ).rejects.toThrow(/protocol version|unsupported protocol/i);
    expect(svc.answered).toHaveLength(0);
  });

  it('fail/a peer of the same CA with another SPIFFE ID: closed after the handshake, no response', async () => {
    const api = await newWorkload('api', id('api'));
    const intruder = await newWorkload('intruder', id('intruder'));
    const svc = await start(api, authorizeIds([id('web')]));
    await expect(
      mtlsRequest(intruder, svc.url, { authorize: authorizeIds([id('api')]) }),
    ).rejects.toMatchObject({
      code: expect.stringMatching(/ECONNRESET|EPIPE/),
    });
    expect(svc.answered).toHaveLength(0);
    expect(svc.refused.map((e) => [e.code, e.message])).toEqual([
      ['ERR_PEER_NOT_AUTHORIZED', `peer ${id('intruder')} is not authorized`],
    ]);
  });

  it('fail/a peer with the authorized SPIFFE ID from another CA: refused by TLS, no response', async () => {
    const api = await newWorkload('api', id('api'));
    const svc = await start(api, authorizeTrustDomain(TD));
    const foreign = await workloadSvid(t2, n1OtherCa, id('web'));
    // The client trusts both roots, so only the server's check is under test.
    const web = await load(writeWorkload(agent.path, 'foreign-web', foreign, `${t2.bundle}\n${t.bundle}`));
    await expect(mtlsRequest(web, svc.url, { authorize: authorizeIds([id('api')]) })).rejects.toThrow();
    expect(svc.answered).toHaveLength(0);
    expect(svc.refused).toHaveLength(0);
    // Node's TLS server destroys a connection whose client chain fails (rejectUnauthorized) before
    // 'secureConnection': the authorizer never ran, and the handshake ends as a TLS client error.
    expect(svc.refused).toHaveLength(0);
    await waitFor(() => svc.tlsErrors.length > 0);
  });

  it('fail/an expired certificate: refused by TLS, no response', async () => {
    const api = await newWorkload('api', id('api'));
    const svc = await start(api, authorizeIds([id('web')]));
    expect(new Date(new X509Certificate(expiredWeb.cert).validTo).getTime()).toBeLessThan(Date.now());
    // The client's own clock says it is still valid: the server's real-time check is under test.
    const web = await load(writeWorkload(agent.path, 'expired-web', expiredWeb), {
      clock: new FakeClock(new Date(Date.now() - 90 * 60_000)),
    });
    await expect(mtlsRequest(web, svc.url, { authorize: authorizeIds([id('api')]) })).rejects.toThrow();
    expect(svc.answered).toHaveLength(0);
    expect(svc.refused).toHaveLength(0);
    await waitFor(() => svc.tlsErrors.length > 0);
    // The same SPIFFE ID with a current certificate is served: only the expiry was refused.
    const current = await newWorkload('web', id('web'));
    expect(echo(await mtlsRequest(current, svc.url, { authorize: authorizeIds([id('api')]) })).you).toBe(
      id('web'),
    );
  });

  it('fail/the client refuses a server whose SPIFFE ID it does not authorize (not its host name)', async () => {
    const api = await newWorkload('api', id('api'));
    const web = await newWorkload('web', id('web'));
    const svc = await start(api, authorizeIds([id('web')]));
    await expect(mtlsRequest(web, svc.url, { authorize: authorizeIds([id('db')]) })).rejects.toMatchObject({
      code: 'ERR_PEER_NOT_AUTHORIZED',
      message: `peer ${id('api')} is not authorized`,
    });
    expect(svc.answered).toHaveLength(0);
    // 127.0.0.1 is no name of the SVID, and the SPIFFE check alone decides.
    const ok = await mtlsRequest(web, svc.url, { authorize: authorizeIds([id('api')]) });
    expect(ok.status).toBe(200);
  });

  it('clientTlsOptions: a raw tls connection authorizes the server by SPIFFE ID', async () => {
    const api = await newWorkload('api', id('api'));
    const web = await newWorkload('web', id('web'));
    const svc = await start(api, authorizeIds([id('web')]));
    const socket = connect({
      ...clientTlsOptions(web, { authorize: authorizeIds([id('api')]) }),
      host: '127.0.0.1',
      port: Number(new URL(svc.url).port),
    });
    await once(socket, 'secureConnect');
    expect(peerOf(socket.getPeerX509Certificate()!).spiffeId).toBe(id('api'));
    socket.destroy();
  });

  it('rotation: an open connection keeps going on the old certificates, new connections get the new ones', async () => {
    const api = await newWorkload('api', id('api'));
    const web = await newWorkload('web', id('web'));
    api.watch();
    web.watch();
    const svc = await start(api, authorizeIds([id('web')]));
    const pool = mtlsAgent(web, { authorize: authorizeIds([id('api')]), maxSockets: 2 });
    const old = { api: api.current().serial, web: web.current().serial };

    const before = echo(await mtlsRequest(web, svc.url, { agent: pool }));
    expect(before).toMatchObject({ server_serial: old.api, client_serial: old.web });

    const rotatedApi = once(api, 'rotated', { signal: AbortSignal.timeout(5000) });
    const rotatedWeb = once(web, 'rotated', { signal: AbortSignal.timeout(5000) });
    const nextApi = await workloadSvid(t, n1, id('api'));
    const nextWeb = await workloadSvid(t, n1, id('web'));
    writeWorkload(agent.path, 'api', nextApi);
    writeWorkload(agent.path, 'web', nextWeb);
    const [[apiNow, apiPrev], [webNow]] = (await Promise.all([rotatedApi, rotatedWeb])) as [
      [IdentitySnapshot, IdentitySnapshot],
      [IdentitySnapshot],
    ];
    expect([apiPrev.serial, apiNow.serial, webNow.serial]).toEqual([old.api, nextApi.serial, nextWeb.serial]);

    // Two requests at once: one reuses the pooled connection (still the old pair on both ends),
    // the other needs a new connection, which presents and meets the new certificates.
    const [a, b] = (
      await Promise.all([
        mtlsRequest(web, `${svc.url}/?delay=100`, { agent: pool }),
        mtlsRequest(web, `${svc.url}/?delay=100`, { agent: pool }),
      ])
    ).map(echo);
    const [reused, fresh] = a!.port === before.port ? [a!, b!] : [b!, a!];
    expect(reused).toMatchObject({ port: before.port, server_serial: old.api, client_serial: old.web });
    expect(fresh.port).not.toBe(before.port);
    expect(fresh).toMatchObject({ server_serial: nextApi.serial, client_serial: nextWeb.serial });

    const single = echo(await mtlsRequest(web, svc.url, { authorize: authorizeIds([id('api')]) }));
    expect(single).toMatchObject({ server_serial: nextApi.serial, client_serial: nextWeb.serial });
    pool.destroy();
  });

  it('isManagerNode: a manager node SVID is accepted, a worker node SVID is refused', async () => {
    const manager = await attestedNode(t, { role: 'manager', nodeName: 'm1' });
    const worker = await attestedNode(t, { role: 'worker', nodeName: 'w1' });
    const managerId = await Identity.fromAgentNode(
      writeNode(join(agent.path, 'm1'), manager, t.bundle),
      quick,
    );
    const workerId = await Identity.fromAgentNode(writeNode(join(agent.path, 'w1'), worker, t.bundle), quick);
    identities.push(managerId, workerId);
    const managerPeer = peerOf(managerId.current().leaf);
    const workerPeer = peerOf(workerId.current().leaf);
    expect(managerPeer).toMatchObject({
      spiffeId: id('node/m1'),
      subject: { O: TD, OU: 'manager', CN: 'm1' },
    });
    expect(workerPeer).toMatchObject({ spiffeId: id('node/w1'), subject: { O: TD, OU: 'worker', CN: 'w1' } });
    expect([isManagerNode(TD)(managerPeer), isManagerNode(TD)(workerPeer)]).toEqual([true, false]);
    expect([isNode(TD)(managerPeer), isNode(TD)(workerPeer)]).toEqual([true, true]);

    // The manager's service accepts only manager nodes: the worker's node identity is refused.
    const api = await newWorkload('api', id('api'));
    const svc = await start(api, isManagerNode(TD));
    const toApi = { authorize: authorizeIds([id('api')]) };
    expect(echo(await mtlsRequest(managerId, svc.url, toApi)).you).toBe(id('node/m1'));
    await expect(mtlsRequest(workerId, svc.url, toApi)).rejects.toThrow();
    expect(svc.refused.map((e) => e.code)).toEqual(['ERR_PEER_NOT_AUTHORIZED']);
  });
});
