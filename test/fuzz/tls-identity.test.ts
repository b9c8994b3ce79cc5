import { Agent, request } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { HOUR } from '../../services/ca/src/domain/duration';
import { attestedNode, keyAndCsr } from '../support/node-client';
import type { TestServer } from '../support/test-server';
import {
  assertErrorBody,
  type Credential,
  expectServerAlive,
  type FuzzClient,
  useFuzzServer,
} from './support/fuzz-harness';
import { openTls, readAnswer, write } from './support/raw-tls';

/**
 * Issue 8 item 3, identities on reused TLS connections. TLS 1.3 has no renegotiation and the
 * server refuses it on TLS 1.2, so a connection has one client certificate for its life; this
 * checks that nothing else can change who a request is from (identity headers, a second
 * certificate), and that authorization runs on every request of a keep-alive connection: a
 * certificate revoked, superseded or expired mid-connection stops working on that connection.
 */
const TD = 'test.example.org';

interface ConnAnswer {
  status: number;
  code?: string;
  localPort: number;
}

/** A keep-alive connection for one identity: every request goes over the same TLS socket. */
class OneConnection {
  private readonly agent: Agent;
  readonly ports = new Set<number>();

  constructor(
    private readonly t: TestServer,
    private readonly stats: FuzzClient['stats'],
    cred?: Credential,
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets: 1, ca: t.bundle, ...(cred ?? {}) });
  }

  send(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<ConnAnswer> {
    return new Promise((resolve, reject) => {
      let sentAt = 0;
      let localPort = 0;
      const req = request(
        `${this.t.url}${path}`,
        {
          method,
          agent: this.agent,
          headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => {
            try {
              const text = Buffer.concat(chunks);
              const status = res.statusCode ?? 0;
              this.ports.add(localPort);
              this.stats.record(
                `${method} ${path.split('?')[0]} (keep-alive)`,
                status,
                performance.now() - sentAt,
              );
              if (status >= 400) assertErrorBody(text, () => `${method} ${path}: ${status} ${text}`);
              const code = status >= 400 && text.length ? JSON.parse(text.toString()).error.code : undefined;
              resolve({ status, code, localPort });
            } catch (e) {
              reject(e);
            }
          });
        },
      );
      req.on('error', reject);
      req.on('socket', (socket: TLSSocket) => {
        const note = () => {
          localPort = socket.localPort ?? 0;
        };
        if (socket.localPort) note();
        else socket.once('secureConnect', note);
      });
      req.on('finish', () => {
        sentAt = performance.now();
      });
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

describe('fuzz: identities on reused TLS connections', () => {
  const open: OneConnection[] = [];
  const f = useFuzzServer('identities on reused TLS connections', {
    admin: 'root',
    teardown: () => {
      for (const k of open) k.close();
    },
  });
  const conn = (cred?: Credential) => {
    const k = new OneConnection(f.t, f.c.stats, cred);
    open.push(k);
    return k;
  };

  const ADMIN_CALLS: [string, string, unknown?][] = [
    ['GET', '/v1/admin/nodes'],
    ['GET', '/v1/admin/audit'],
    ['POST', '/v1/admin/tokens', { role: 'manager' }],
    ['POST', '/v1/admin/entries', { name: 'x', spiffe_id: `spiffe://${TD}/x`, parent: 'x' }],
    ['POST', '/v1/admin/admins', { name: 'x', role: 'admin', csr: 'x' }],
    ['POST', '/v1/admin/nodes/x/revoke', {}],
  ];

  it('a node connection stays a node: admin routes are 403 on every request, spoofed identity headers or not', async () => {
    const n = await attestedNode(f.t);
    const k = conn(n);
    const tokensBefore = await f.t.db.knex('join_tokens').count({ n: '*' }).first();
    const spoof = {
      'x-forwarded-client-cert': `Hash=1;URI=spiffe://${TD}/admin/root`,
      'x-ssl-client-cert': encodeURIComponent(f.admin.cert),
      'x-client-cert': Buffer.from(f.admin.cert).toString('base64'),
      'x-spiffe-id': `spiffe://${TD}/admin/root`,
      'x-forwarded-for': '127.0.0.1',
      forwarded: 'for=127.0.0.1;by=baton',
      authorization: 'Bearer admin',
    };
    for (let round = 0; round < 5; round++) {
      expect((await k.send('GET', '/v1/entries')).status).toBe(200);
      for (const [method, path, body] of ADMIN_CALLS) {
        const a = await k.send(method, path, body, round % 2 ? spoof : {});
        expect({ path, status: a.status, code: a.code }).toEqual({
          path,
          status: 403,
          code: 'ERR_NOT_AUTHORIZED',
        });
      }
    }
    expect(k.ports.size).toBe(1);
    expect(await f.t.db.knex('join_tokens').count({ n: '*' }).first()).toEqual(tokensBefore);
  });

  it('an admin connection stays an admin: node routes are refused on every request', async () => {
    const k = conn(f.admin);
    const workloadsBefore = await f.t.db
      .knex('certificates')
      .where({ kind: 'workload' })
      .count({ n: '*' })
      .first();
    // A valid CSR, so that only the identity check can refuse. An admin's certificate on a node
    // route is the wrong kind of caller: 403 on every one of them (domain/caller.ts).
    const csr = (await keyAndCsr()).csrPem;
    const calls: [string, string, unknown, number, string][] = [
      ['GET', '/v1/entries', undefined, 403, 'ERR_NOT_AUTHORIZED'],
      ['POST', '/v1/renew', { csr }, 403, 'ERR_NOT_AUTHORIZED'],
      ['POST', '/v1/workload-svids', { spiffe_id: `spiffe://${TD}/x`, csr }, 403, 'ERR_NOT_AUTHORIZED'],
      ['GET', '/v1/revocations?since=0&wait=0', undefined, 403, 'ERR_NOT_AUTHORIZED'],
    ];
    for (let round = 0; round < 5; round++) {
      expect((await k.send('GET', '/v1/admin/nodes')).status).toBe(200);
      for (const [method, path, body, status, code] of calls) {
        const a = await k.send(method, path, body);
        expect({ path, status: a.status, code: a.code }).toEqual({ path, status, code });
      }
    }
    expect(k.ports.size).toBe(1);
    expect(await f.t.db.knex('certificates').where({ kind: 'workload' }).count({ n: '*' }).first()).toEqual(
      workloadsBefore,
    );
  });

  it('an anonymous connection stays anonymous: every authenticated route is 401 on every request', async () => {
    const k = conn();
    for (let round = 0; round < 3; round++) {
      expect((await k.send('GET', '/v1/bundle')).status).toBe(200);
      for (const [method, path, body] of [
        ...ADMIN_CALLS,
        ['GET', '/v1/entries'],
        ['POST', '/v1/renew', { csr: 'x' }],
      ] as [string, string, unknown?][]) {
        const a = await k.send(method, path, body);
        expect({ path, status: a.status, code: a.code }).toEqual({
          path,
          status: 401,
          code: 'ERR_NOT_AUTHENTICATED',
        });
      }
    }
    expect(k.ports.size).toBe(1);
  });

  /** A node's keep-alive connection works, `act` happens elsewhere, then the same connection asks again. */
  const sameConnectionAfter = async (act: (n: Awaited<ReturnType<typeof attestedNode>>) => Promise<void>) => {
    const n = await attestedNode(f.t);
    const k = conn(n);
    expect((await k.send('GET', '/v1/entries')).status).toBe(200);
    await act(n);
    const after = await k.send('GET', '/v1/entries');
    expect(k.ports.size).toBe(1);
    return [after.status, after.code];
  };

  it('a certificate superseded mid-connection is refused on that same connection', async () => {
    const answer = await sameConnectionAfter(async (n) => {
      // The node renews on another connection: the certificate of this one is superseded.
      const renewed = await f.c.send({
        method: 'POST',
        path: '/v1/renew',
        body: JSON.stringify({ csr: (await keyAndCsr()).csrPem }),
        as: n,
      });
      expect(renewed.status).toBe(201);
    });
    expect(answer).toEqual([403, 'ERR_CERT_SUPERSEDED']);
  });

  it('a node revoked mid-connection is refused on that same connection', async () => {
    const answer = await sameConnectionAfter(async (n) => {
      const r = await f.c.send({
        method: 'POST',
        path: `/v1/admin/nodes/${n.body.node_id}/revoke`,
        body: '{"reason":"key-compromise"}',
        as: f.admin,
      });
      expect(r.status).toBe(200);
    });
    expect(answer).toEqual([403, expect.stringMatching(/^ERR_(NODE|CERT)_REVOKED$/)]);
  });

  it('admin-cert-expiry-per-request: an admin certificate that expires mid-connection is refused on it', async () => {
    const shortLived = await f.t.issueAdmin('admin', 'short');
    const k = conn(shortLived);
    expect((await k.send('GET', '/v1/admin/nodes')).status).toBe(200);
    // The handshake was done while the certificate was valid; the connection outlives it.
    f.t.clock.advance(9 * HOUR);
    try {
      const a = await k.send('GET', '/v1/admin/nodes');
      expect([a.status, a.code]).toEqual([401, 'ERR_CERT_EXPIRED']);
      const b = await k.send('POST', '/v1/admin/tokens', { role: 'manager' });
      expect([b.status, b.code]).toEqual([401, 'ERR_CERT_EXPIRED']);
      expect(k.ports.size).toBe(1);
    } finally {
      f.t.clock.advance(-9 * HOUR);
    }
  });

  it('node-cert-expiry-per-request: a node certificate that expires mid-connection is refused on it', async () => {
    const n = await attestedNode(f.t);
    const k = conn(n);
    expect((await k.send('GET', '/v1/entries')).status).toBe(200);
    f.t.clock.advance(25 * HOUR);
    try {
      const a = await k.send('GET', '/v1/entries');
      expect([a.status, a.code]).toEqual([401, 'ERR_CERT_EXPIRED']);
    } finally {
      f.t.clock.advance(-25 * HOUR);
    }
  });

  it('refuses TLS 1.2 renegotiation: one certificate per connection', async () => {
    const n = await attestedNode(f.t);
    const s = await openTls({
      url: f.t.url,
      ca: f.t.bundle,
      cert: n.cert,
      key: n.key,
      maxVersion: 'TLSv1.2',
    });
    expect(s.getProtocol()).toBe('TLSv1.2');
    await write(s, 'GET /v1/entries HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect((await readAnswer(s, 2000)).status).toBe(200);
    const outcome = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('no answer'), 3000);
      s.once('close', () => resolve('closed'));
      const started = s.renegotiate({ rejectUnauthorized: false }, (err) => {
        clearTimeout(timer);
        resolve(err ? 'refused' : 'renegotiated');
      });
      if (!started) resolve('refused');
    });
    s.destroy();
    expect(['refused', 'closed']).toContain(outcome);
    f.c.stats.record('TLS 1.2 renegotiation', outcome === 'renegotiated' ? 200 : 400, 0);
    await expectServerAlive(f.c);
  });

  it('TLS 1.3 is what a default client negotiates', async () => {
    const s = await openTls({ url: f.t.url, ca: f.t.bundle });
    expect(s.getProtocol()).toBe('TLSv1.3');
    s.destroy();
  });

  it('a request that changes its Host or uses an absolute URI does not change who it is from', async () => {
    const n = await attestedNode(f.t);
    const s = await openTls({ url: f.t.url, ca: f.t.bundle, cert: n.cert, key: n.key });
    for (const line of [
      'GET http://127.0.0.1/v1/admin/nodes HTTP/1.1\r\nHost: admin.internal\r\n\r\n',
      `GET /v1/admin/nodes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Client-Cert: URI=spiffe://${TD}/admin/root\r\n\r\n`,
    ]) {
      await write(s, line);
      const a = await readAnswer(s, 2000);
      f.c.stats.record('GET /v1/admin/nodes (raw, node)', a.status ?? 0, a.ms);
      expect(a.status).toBe(403);
    }
    s.destroy();
  });
});
