import type { IncomingMessage, ServerResponse } from 'node:http';
import { X509Certificate } from 'node:crypto';
import { abuseControls, byPeer } from '../../services/ca/src/http/abuse-controls';
import { createMetrics } from '../../services/ca/src/http/metrics';
import {
  ATTEST_ROUTE,
  fastPath,
  JWT_SVID_ROUTE,
  RENEW_ROUTE,
  WORKLOAD_ROUTE,
} from '../../services/ca/src/http/fast-path';
import { createLogger } from '../../services/ca/src/logger';
import { describeEachBackend } from '../support/database';
import { https, type HttpsResult } from '../support/https';
import { attestedNode, keyAndCsr, newToken } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';

/**
 * POST /v1/workload-svids, /v1/jwt-svids, /v1/renew and /v1/attest have two implementations of their HTTP layer: the
 * fast path (http/fast-path.ts) for plain requests and Express for everything else. The fast path
 * must be indistinguishable: every case is sent once as `application/json` (fast path) and once as
 * `application/vnd.baton+json` (Express's JSON parser takes it, the fast path does not), and the
 * answers must match in status, error body and headers.
 */
const TD = 'fast.example.org';

describeEachBackend('workload SVIDs: the fast path answers as Express does', (backend) => {
  let t: TestServer;
  let n1: Awaited<ReturnType<typeof attestedNode>>;
  let n2: Awaited<ReturnType<typeof attestedNode>>;
  let revoked: Awaited<ReturnType<typeof attestedNode>>;

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const a = await t.issueAdmin('operator', 'ops');
    n1 = await attestedNode(t, { nodeName: 'f1' });
    n2 = await attestedNode(t, { nodeName: 'f2' });
    revoked = await attestedNode(t, { nodeName: 'f3' });
    for (const [name, parent] of [
      ['web', 'f1'],
      ['gone', 'f3'],
    ] as const) {
      const r = await https(`${t.url}/v1/admin/entries`, {
        method: 'POST',
        body: JSON.stringify({
          name,
          spiffe_id: `spiffe://${TD}/${name}`,
          parent,
          dns_names: ['web.internal'],
        }),
        ca: t.bundle,
        cert: a.cert,
        key: a.key,
      });
      expect(r.status).toBe(201);
    }
    const rv = await https(`${t.url}/v1/admin/nodes/${revoked.body.node_id}/revoke`, {
      method: 'POST',
      body: '{}',
      ca: t.bundle,
      cert: a.cert,
      key: a.key,
    });
    expect(rv.status).toBe(200);
  });
  afterAll(() => t.close());

  const send = (
    contentType: string,
    body: string,
    cred?: { cert: string; key: string },
    route: string = WORKLOAD_ROUTE,
  ) =>
    https(`${t.url}${route}`, {
      method: 'POST',
      body,
      // A declared length, as the agent sends it (without one, Node's client sends chunked).
      headers: { 'content-type': contentType, 'content-length': String(Buffer.byteLength(body)) },
      ca: t.bundle,
      ...(cred ? { cert: cred.cert, key: cred.key } : {}),
    });
  /** What must be equal: status, the error (or the shape of a success), the header names and fixed values. */
  const view = (r: HttpsResult) => {
    const {
      'x-request-id': id,
      date: _date,
      'content-length': _len,
      connection: _c,
      'keep-alive': _k,
      ...rest
    } = r.headers;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const body = r.json<Record<string, unknown>>();
    return {
      status: r.status,
      headers: rest,
      body: r.status === 201 ? Object.keys(body).sort() : body,
    };
  };

  const cases: [string, () => Promise<[string, { cert: string; key: string } | undefined]>][] = [
    [
      'ok: an entry of the node',
      async () => [JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: (await keyAndCsr()).csrPem }), n1],
    ],
    [
      'another node entry',
      async () => [JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: (await keyAndCsr()).csrPem }), n2],
    ],
    [
      'a revoked node',
      async () => [
        JSON.stringify({ spiffe_id: `spiffe://${TD}/gone`, csr: (await keyAndCsr()).csrPem }),
        revoked,
      ],
    ],
    [
      'no client certificate',
      async () => [JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: 'x' }), undefined],
    ],
    ['missing spiffe_id', async () => [JSON.stringify({ csr: (await keyAndCsr()).csrPem }), n1]],
    [
      'a CSR that is not PEM',
      async () => [JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: 'nonsense' }), n1],
    ],
    ['malformed JSON', async () => ['{"spiffe_id":', n1]],
    ['a JSON string', async () => ['"text"', n1]],
    ['a JSON array', async () => ['[1,2]', n1]],
    ['an empty body', async () => ['', n1]],
    [
      'the key of a node certificate (ERR_KEY_REUSED)',
      async () => [JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: await csrForKey(n1.key) }), n1],
    ],
  ];

  it.each(cases)('%s', async (_name, make) => {
    const [body, cred] = await make();
    const fast = await send('application/json', body, cred);
    const [body2, cred2] = await make();
    const slow = await send('application/vnd.baton+json', body2, cred2);
    expect(view(fast)).toEqual(view(slow));
    if (fast.status === 201) {
      const cert = new X509Certificate(fast.json<{ certificate_chain: string }>().certificate_chain);
      expect(cert.subjectAltName).toBe(`URI:spiffe://${TD}/web, DNS:web.internal`);
    }
  });

  /** A renewal case: the request body and the credential it is sent with, made anew for each path. */
  let renewals = 0;
  const fresh = () => attestedNode(t, { nodeName: `r${++renewals}` });
  const csrBody = async () => JSON.stringify({ csr: (await keyAndCsr()).csrPem });
  const renewalCases: [string, () => Promise<[string, { cert: string; key: string } | undefined]>][] = [
    ['ok: a current node certificate', async () => [await csrBody(), await fresh()]],
    [
      'a superseded certificate',
      async () => {
        const node = await fresh();
        const r = await send('application/json', await csrBody(), node, RENEW_ROUTE);
        expect(r.status).toBe(201);
        return [await csrBody(), node];
      },
    ],
    ['a revoked node', async () => [await csrBody(), revoked]],
    ['no client certificate', async () => [await csrBody(), undefined]],
    ['missing csr', async () => ['{}', await fresh()]],
    ['a CSR that is not PEM', async () => [JSON.stringify({ csr: 'nonsense' }), await fresh()]],
    ['malformed JSON', async () => ['{"csr":', await fresh()]],
    ['a JSON string', async () => ['"text"', await fresh()]],
    ['a JSON array', async () => ['[1,2]', await fresh()]],
    ['an empty body', async () => ['', await fresh()]],
    [
      'the key of the current certificate (ERR_KEY_REUSED)',
      async () => {
        const node = await fresh();
        return [JSON.stringify({ csr: await csrForKey(node.key) }), node];
      },
    ],
  ];

  it.each(renewalCases)('renewal: %s', async (_name, make) => {
    const [body, cred] = await make();
    const fast = await send('application/json', body, cred, RENEW_ROUTE);
    const [body2, cred2] = await make();
    const slow = await send('application/vnd.baton+json', body2, cred2, RENEW_ROUTE);
    expect(view(fast)).toEqual(view(slow));
    if (fast.status === 201) {
      const issued = fast.json<{ certificate_chain: string; node_id: string }>();
      const cert = new X509Certificate(issued.certificate_chain);
      expect(cert.subjectAltName).toBe(`URI:spiffe://${TD}/node/${issued.node_id}`);
    }
  });

  /** JWT-SVID cases: no CSR, so each body serves both paths. */
  const jwtBody = (o: Record<string, unknown> = {}) =>
    JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, audience: ['spiffe://fast.example.org/db'], ...o });
  const jwtCases: [string, () => [string, { cert: string; key: string } | undefined]][] = [
    ['ok: an entry of the node', () => [jwtBody(), n1]],
    ['another node entry', () => [jwtBody(), n2]],
    ['a revoked node', () => [jwtBody({ spiffe_id: `spiffe://${TD}/gone` }), revoked]],
    ['no client certificate', () => [jwtBody(), undefined]],
    ['missing audience', () => [jwtBody({ audience: undefined }), n1]],
    ['a ttl out of range', () => [jwtBody({ ttl: '2h' }), n1]],
    ['a bad body from a revoked node', () => [jwtBody({ audience: 'x' }), revoked]],
    ['malformed JSON', () => ['{"spiffe_id":', n1]],
    ['a JSON string', () => ['"text"', n1]],
    ['a JSON array', () => ['[1,2]', n1]],
    ['an empty body', () => ['', n1]],
  ];

  it.each(jwtCases)('JWT-SVID: %s', async (_name, make) => {
    const [body, cred] = make();
    const fast = await send('application/json', body, cred, JWT_SVID_ROUTE);
    const slow = await send('application/vnd.baton+json', body, cred, JWT_SVID_ROUTE);
    expect(view(fast)).toEqual(view(slow));
    if (fast.status === 201) expect(fast.json<{ spiffe_id: string }>().spiffe_id).toBe(`spiffe://${TD}/web`);
  });

  /** Attestation cases: the body, made anew for each path (a token is spent, a key certified). */
  const attestBody = async (o: Record<string, unknown> = {}) =>
    JSON.stringify({ method: 'join_token', token: await newToken(t), csr: (await keyAndCsr()).csrPem, ...o });
  let multiUse: string | undefined;
  const attestCases: [string, () => Promise<string>][] = [
    ['ok: a fresh token', () => attestBody()],
    [
      'ok: a multi-use token used before (read from the cache)',
      async () => {
        multiUse ??= await newToken(t, { uses: 10 });
        return attestBody({ token: multiUse });
      },
    ],
    [
      'a spent token',
      async () => {
        const token = await newToken(t);
        expect(
          (await send('application/json', await attestBody({ token }), undefined, ATTEST_ROUTE)).status,
        ).toBe(201);
        return attestBody({ token });
      },
    ],
    [
      'a wrong secret',
      async () => attestBody({ token: (await newToken(t)).replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) }),
    ],
    [
      'a token bound to a revoked node',
      async () => attestBody({ token: await newToken(t, { nodeName: 'f3' }) }),
    ],
    ['an unknown method', () => attestBody({ method: 'tpm2' })],
    ['missing csr', () => attestBody({ csr: undefined })],
    ['a CSR that is not PEM', () => attestBody({ csr: 'nonsense' })],
    [
      'the key of a node certificate (ERR_KEY_REUSED)',
      async () => attestBody({ csr: await csrForKey(n1.key) }),
    ],
    ['malformed JSON', async () => '{"method":'],
    ['a JSON string', async () => '"text"'],
    ['a JSON array', async () => '[1,2]'],
    ['an empty body', async () => ''],
  ];

  it.each(attestCases)('attestation: %s', async (_name, make) => {
    const fast = await send('application/json', await make(), undefined, ATTEST_ROUTE);
    const slow = await send('application/vnd.baton+json', await make(), undefined, ATTEST_ROUTE);
    expect(view(fast)).toEqual(view(slow));
    if (fast.status === 201) {
      const issued = fast.json<{ certificate_chain: string; node_id: string }>();
      const cert = new X509Certificate(issued.certificate_chain);
      expect(cert.subjectAltName).toBe(`URI:spiffe://${TD}/node/${issued.node_id}`);
    }
  });

  it('attestation: a refusal is audited once on either path', async () => {
    const refusals = async () =>
      (await t.ca.storage.audit.list({ event: 'node.attestation_refused' })).length;
    const before = await refusals();
    for (const type of ['application/json', 'application/vnd.baton+json'])
      expect((await send(type, await attestBody({ csr: 'nonsense' }), undefined, ATTEST_ROUTE)).status).toBe(
        400,
      );
    expect((await refusals()) - before).toBe(2);
  });

  type Credential = { cert: string; key: string } | undefined;
  it.each<[string, () => Promise<string>, () => Credential | Promise<Credential>]>([
    [WORKLOAD_ROUTE, async () => (await cases[0]![1]())[0], () => n1],
    [RENEW_ROUTE, csrBody, fresh],
    [JWT_SVID_ROUTE, async () => jwtBody(), () => n1],
    // Anonymous: the evidence authenticates.
    [ATTEST_ROUTE, () => attestBody(), () => undefined],
  ])('the fast path counts one request per call to %s, under the route pattern', async (route, make, who) => {
    const metricsText = () => t.running.metrics.registry.metrics();
    const cred = await who();
    const body = await make();
    const before = await metricsText();
    expect((await send('application/json', body, cred, route)).status).toBe(201);
    const after = await metricsText();
    const pattern = new RegExp(
      `baton_http_requests_total\\{route="${route.replace(/\//g, '\\/')}",method="POST",status="201"\\} (\\d+)`,
    );
    const count = (text: string) => Number(pattern.exec(text)?.[1] ?? 0);
    expect(count(after) - count(before)).toBe(1);
  });
});

/** A CSR signed by an existing private key (PEM), through openssl. */
async function csrForKey(keyPem: string): Promise<string> {
  const { execFileSync } = await import('node:child_process');
  const { writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const d = mkdtempSync(join(tmpdir(), 'baton-fast-'));
  try {
    writeFileSync(join(d, 'k.pem'), keyPem);
    return execFileSync('openssl', ['req', '-new', '-key', join(d, 'k.pem'), '-subj', '/CN=x'], {
      encoding: 'utf8',
    });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

describe('fast path: which requests it takes', () => {
  const metrics = createMetrics();
  const controls = abuseControls(
    {
      maxInFlight: 1,
      attest: null,
      renew: null,
      workload: null,
      public: null,
      feedWaiters: null,
      feedWaitersPerIdentity: null,
    },
    metrics,
    () => 0,
  );
  const handle = async () => {
    throw new Error('not reached: no peer certificate');
  };
  const fast = fastPath({
    routes: [
      { path: WORKLOAD_ROUTE, quotaKey: byPeer, take: controls.takeWorkload, quotaName: 'w', handle },
      { path: RENEW_ROUTE, quotaKey: byPeer, take: controls.takeRenew, quotaName: 'r', handle },
    ],
    controls,
    log: createLogger('silent'),
    metrics,
  });
  const req = (over: { method?: string; url?: string; headers?: Record<string, string> }) => {
    const headers = { 'content-type': 'application/json', 'content-length': '10', ...over.headers };
    return {
      method: over.method ?? 'POST',
      url: over.url ?? WORKLOAD_ROUTE,
      headers,
      rawHeaders: Object.entries(headers).flat(),
      socket: {},
      on: () => undefined,
    } as unknown as IncomingMessage;
  };
  const res = () => {
    const listeners: Record<string, () => void> = {};
    return {
      headersSent: false,
      statusCode: 200,
      setHeader: () => undefined,
      hasHeader: () => false,
      writeHead: () => undefined,
      end: () => undefined,
      on: (e: string, f: () => void) => {
        listeners[e] = f;
      },
      once: (e: string, f: () => void) => {
        listeners[e] = f;
      },
      close: () => listeners.close?.(),
    } as unknown as ServerResponse & { close(): void };
  };

  it.each([
    ['another method', { method: 'PUT' }],
    ['a query string', { url: `${WORKLOAD_ROUTE}?x=1` }],
    ['another route', { url: '/v1/attest/challenge' }],
    ['a route that only starts like one', { url: `${RENEW_ROUTE}/x` }],
    ['a GET of the route', { method: 'GET', url: RENEW_ROUTE }],
    ['a chunked body', { headers: { 'content-length': '', 'transfer-encoding': 'chunked' } }],
    ['a body over the limit', { headers: { 'content-length': String(64 * 1024 + 1) } }],
    ['a content encoding', { headers: { 'content-encoding': 'gzip' } }],
    ['another content type', { headers: { 'content-type': 'text/plain' } }],
    ['another charset', { headers: { 'content-type': 'application/json; charset=latin1' } }],
    ['a +json type', { headers: { 'content-type': 'application/vnd.baton+json' } }],
    [
      'too many headers',
      { headers: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`x-h${i}`, '1'])) },
    ],
  ])('leaves %s to Express', (_name, over) => {
    expect(fast(req(over), res())).toBe(false);
  });

  it('takes a plain request, and leaves the next to Express while the in-flight limit is reached', () => {
    const first = res();
    expect(fast(req({ headers: { 'content-type': 'application/json; charset=UTF-8' } }), first)).toBe(true);
    expect(fast(req({}), res())).toBe(false);
    expect(fast(req({ url: RENEW_ROUTE }), res())).toBe(false);
    first.close();
    const renewal = res();
    expect(fast(req({ url: RENEW_ROUTE }), renewal)).toBe(true);
    renewal.close();
    expect(fast(req({}), res())).toBe(true);
  });
});
