import { ADMIN_ROUTES, NODE_ROUTES } from '../../services/ca/src/http/authorization';
import { describeEachBackend } from '../support/database';
import { errorBodyOf } from '../support/errors';
import { type HttpsResult, https } from '../support/https';
import { attestedNode } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';

/**
 * Issue 15, item 6: the node and admin surfaces answer a request of any method without a valid
 * client certificate with 401 or 403, never 200/204/404/405, and never list the methods a route
 * takes (Allow, Access-Control-Allow-Methods). Express would answer OPTIONS itself with
 * `Allow: POST` to anyone.
 */
const OTHER_METHODS = ['OPTIONS', 'HEAD', 'PUT', 'PATCH', 'DELETE', 'PROPFIND', 'GET', 'POST'];

/** Every route of both tables, with a concrete path and the methods it does not take. */
const SURFACE = [...Object.keys(NODE_ROUTES), ...Object.keys(ADMIN_ROUTES)].map((route) => {
  const [method, pattern] = route.split(' ') as [string, string];
  const path = pattern.replace(/:[a-z]+/g, 'x1');
  const taken = method === 'GET' ? ['GET', 'HEAD'] : [method];
  return { route, path, others: OTHER_METHODS.filter((m) => !taken.includes(m)) };
});

const listsNoMethods = (r: HttpsResult) => {
  expect(r.headers.allow).toBeUndefined();
  expect(r.headers['access-control-allow-methods']).toBeUndefined();
  expect(r.headers['access-control-allow-origin']).toBeUndefined();
};

/** HEAD answers carry no body: the status is the whole answer. */
const codeOf = (method: string, r: HttpsResult) => (method === 'HEAD' ? undefined : errorBodyOf(r).code);

describeEachBackend('node and admin surfaces: any method', (backend) => {
  let t: TestServer;
  let node: { cert: string; key: string };
  let admin: { cert: string; key: string };
  beforeAll(async () => {
    t = await startTestServer({ backend });
    node = await attestedNode(t);
    admin = await t.issueAdmin('admin');
  });
  afterAll(() => t.close());

  const call = (method: string, path: string, cred?: { cert: string; key: string }) =>
    https(`${t.url}${path}`, {
      method,
      ca: t.bundle,
      // A CORS preflight, as a browser sends it.
      headers:
        method === 'OPTIONS'
          ? { origin: 'https://evil.example', 'access-control-request-method': 'POST' }
          : {},
      ...(cred ? { cert: cred.cert, key: cred.key } : {}),
    });

  it.each(SURFACE.map((s) => [s.route, s] as const))(
    'fail/%s: every other method without a certificate is 401, listing nothing',
    async (_route, s) => {
      for (const method of s.others) {
        const r = await call(method, s.path);
        expect([method, r.status]).toEqual([method, 401]);
        if (method !== 'HEAD') expect(codeOf(method, r)).toBe('ERR_NOT_AUTHENTICATED');
        listsNoMethods(r);
      }
    },
  );

  it('fail/OPTIONS, HEAD and PUT with a certificate of the wrong kind: 403, listing nothing', async () => {
    for (const [path, cred] of [
      ['/v1/admin/nodes', node],
      ['/v1/renew', admin],
      ['/v1/workload-svids', admin],
      ['/v1/revocations', admin],
    ] as const) {
      for (const method of ['OPTIONS', 'HEAD', 'PUT']) {
        const r = await call(method, path, cred);
        expect([path, method, r.status]).toEqual([path, method, 403]);
        if (method !== 'HEAD') expect(codeOf(method, r)).toBe('ERR_NOT_AUTHORIZED');
        listsNoMethods(r);
      }
    }
  });

  it('fail/an identified caller with a method the route does not take: 404, listing nothing', async () => {
    for (const [path, cred] of [
      ['/v1/admin/nodes', admin],
      ['/v1/renew', node],
      ['/v1/entries', node],
    ] as const) {
      const r = await call('OPTIONS', path, cred);
      expect([path, r.status]).toEqual([path, 404]);
      expect(codeOf('OPTIONS', r)).toBe('ERR_NOT_FOUND');
      listsNoMethods(r);
    }
  });

  it('fail/an unknown path under /v1/admin/ is the admin surface too: 401 before 404', async () => {
    expect((await call('GET', '/v1/admin/no-such-thing')).status).toBe(401);
    expect((await call('GET', '/V1/ADMIN/NODES/')).status).toBe(401);
    const r = await call('GET', '/v1/admin/no-such-thing', admin);
    expect(r.status).toBe(404);
    expect(errorBodyOf(r).code).toBe('ERR_NOT_FOUND');
  });

  it('ok/the declared methods still work (HEAD of a GET route authenticates like GET)', async () => {
    expect((await call('GET', '/v1/admin/nodes', admin)).status).toBe(200);
    expect((await call('HEAD', '/v1/admin/nodes', admin)).status).toBe(200);
    expect((await call('HEAD', '/v1/admin/nodes')).status).toBe(401);
    expect((await call('GET', '/v1/entries', node)).status).toBe(200);
  });
});
