import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { type Answer, assertRefused, useFuzzServer } from './support/fuzz-harness';
import { hostileJson, hostileObjectBody, MALFORMED_BODIES } from './support/hostile';
import { inPool } from './support/pool';

/**
 * Issue 8 item 3, JSON: property-based bodies (arbitrary JSON, wrong types per field, huge strings,
 * Unicode, nesting, prototype keys, duplicate keys) and malformed bodies on every route that reads
 * a JSON body, anonymous and with valid node and admin certificates. Each answer is a 4xx with a
 * stable code, and nothing is created from a refused request.
 */
interface JsonRoute {
  name: string;
  path: string;
  as?: 'node' | 'admin';
}

const ROUTES: JsonRoute[] = [
  { name: 'POST /v1/attest', path: '/v1/attest' },
  { name: 'POST /v1/attest/challenge', path: '/v1/attest/challenge' },
  { name: 'POST /v1/renew', path: '/v1/renew', as: 'node' },
  { name: 'POST /v1/workload-svids', path: '/v1/workload-svids', as: 'node' },
  { name: 'POST /v1/admin/entries', path: '/v1/admin/entries', as: 'admin' },
  { name: 'POST /v1/admin/tokens', path: '/v1/admin/tokens', as: 'admin' },
  { name: 'POST /v1/admin/admins', path: '/v1/admin/admins', as: 'admin' },
  { name: 'POST /v1/admin/nodes/:id/revoke', path: '/v1/admin/nodes/fuzz-no-such-node/revoke', as: 'admin' },
  {
    name: 'POST /v1/admin/certificates/:serial/revoke',
    path: '/v1/admin/certificates/0123456789abcdef/revoke',
    as: 'admin',
  },
];

describe('fuzz: JSON bodies', () => {
  // Every request is refused, so nothing is created: no node, token, entry or certificate.
  const f = useFuzzServer('JSON bodies', {
    node: true,
    admin: 'fuzzer',
    unchangedTables: ['nodes', 'join_tokens', 'entries', 'certificates', 'revocation_events'],
  });

  const post = (
    route: JsonRoute,
    body: string | Buffer,
    headers: Record<string, string> = {},
  ): Promise<Answer> =>
    f.c.send(
      { method: 'POST', path: route.path, body, headers, as: route.as ? f[route.as] : undefined },
      route.name,
    );

  it.each(ROUTES.map((r) => [r.name, r] as const))(
    'refuses hostile JSON objects on %s',
    async (_n, route) => {
      await fc.assert(
        fc.asyncProperty(hostileObjectBody, async (body) => {
          assertRefused(await post(route, body), `${route.name} ${body.slice(0, 200)}`);
        }),
        { numRuns: 120 },
      );
    },
  );

  it.each(ROUTES.map((r) => [r.name, r] as const))(
    'refuses arbitrary JSON values on %s',
    async (_n, route) => {
      await fc.assert(
        fc.asyncProperty(fc.oneof(hostileJson, fc.json()), async (body) => {
          assertRefused(await post(route, body), `${route.name} ${body.slice(0, 200)}`);
        }),
        { numRuns: 60 },
      );
    },
  );

  it.each(ROUTES.map((r) => [r.name, r] as const))(
    'refuses malformed and oversized bodies on %s',
    async (_n, route) => {
      await inPool(MALFORMED_BODIES, 2, async ([name, body]) => {
        const a = await post(route, body);
        assertRefused(a, `${route.name} ${name}`);
        if (name === '64 KiB string') expect(a.status).toBe(413);
      });
    },
  );

  it('json-method-not-a-string: an attestation method that cannot be turned into text is a 400, not a 500', async () => {
    const bodies = [
      '{"method":{"toString":1},"csr":"x"}',
      '{"method":{"toString":1,"valueOf":1},"csr":"x"}',
      `{"method":${'['.repeat(20_000)}${']'.repeat(20_000)},"csr":"x"}`,
    ];
    for (const body of bodies) {
      const a = await post(ROUTES[0]!, body);
      expect(a.status).toBe(400);
      expect(a.json()).toEqual({
        error: { code: 'ERR_ATTESTATION_METHOD_UNKNOWN', message: expect.any(String) },
      });
    }
  });

  it('refuses hostile since and wait values on GET /v1/revocations (node certificate)', async () => {
    // wait is always invalid or 0, so that a valid since never holds the long-poll open.
    const wait = fc.constantFrom('0', '-1', '31', 'NaN', 'Infinity', '1e3', '', ' 0', '0x0', '%00', "0'; --");
    const since = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 30 }),
      fc.constantFrom('-1', '1e400', '9007199254740993', '0x10', '1.5', 'NaN', "0' or '1'='1", '%', '_'),
      fc.integer({ min: 0, max: 1e9 }).map(String),
    );
    await fc.assert(
      fc.asyncProperty(since, wait, fc.boolean(), async (s, w, twice) => {
        let q: string;
        try {
          q = `since=${encodeURIComponent(s)}&wait=${encodeURIComponent(w)}${twice ? '&since=1' : ''}`;
        } catch {
          return; // a lone surrogate has no URL form
        }
        const a = await f.c.send({ path: `/v1/revocations?${q}`, as: f.node }, 'GET /v1/revocations');
        assertRefused(a, `GET /v1/revocations?${q}`, [200]);
      }),
      { numRuns: 150 },
    );
  });

  it('refuses wrong content types, charsets and encodings with a 4xx', async () => {
    const json = '{"method":"join_token","token":"x","csr":"x"}';
    const bomb = gzipSync(Buffer.from(`{"method":"${'a'.repeat(10 * 1024 * 1024)}"}`));
    const cases: [string, Record<string, string>, string | Buffer][] = [
      ['text/plain', { 'content-type': 'text/plain' }, json],
      ['no content type', { 'content-type': '' }, json],
      ['form encoded', { 'content-type': 'application/x-www-form-urlencoded' }, 'method=join_token'],
      ['multipart', { 'content-type': 'multipart/form-data; boundary=x' }, '--x\r\n\r\n--x--'],
      ['+json suffix', { 'content-type': 'application/evil+json' }, json],
      ['utf-16 charset', { 'content-type': 'application/json; charset=utf-16' }, json],
      ['unknown charset', { 'content-type': 'application/json; charset=x-evil' }, json],
      ['malformed content type', { 'content-type': 'application/json; charset' }, json],
      ['gzip garbage', { 'content-encoding': 'gzip' }, 'not gzip'],
      ['unknown encoding', { 'content-encoding': 'x-evil' }, json],
      ['gzip bomb (10 MiB inflated)', { 'content-encoding': 'gzip' }, bomb],
      ['deflate then gzip', { 'content-encoding': 'deflate, gzip' }, json],
    ];
    for (const [name, headers, body] of cases) {
      const a = await post(ROUTES[0]!, body, headers);
      assertRefused(a, name, []);
      if (name.startsWith('gzip bomb')) expect(a.status).toBe(413);
    }
    console.log(
      `[fuzz] content type and encoding cases: ${cases.length}, gzip bomb ${bomb.length} bytes on the wire`,
    );
  });
});
