import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { type Answer, assertRefused, useFuzzServer } from './support/fuzz-harness';
import { hostileJson, hostileObjectBody, MALFORMED_BODIES } from './support/hostile';
import { inPool } from './support/pool';
import { isValidTokenRequest } from './support/valid-bodies';

/**
 * Issue 8 item 3, JSON: property-based bodies (arbitrary JSON, wrong types per field, huge strings,
 * Unicode, nesting, prototype keys, duplicate keys) and malformed bodies on every route that reads
 * a JSON body, anonymous and with valid node and admin certificates. Each answer is a 4xx with a
 * stable code, and nothing is created from a refused request. The generators use the routes' own
 * field names and words ("role", "manager"), so they now and then write a valid token request:
 * the route's oracle says which, and those must be created (201, one join_tokens row each).
 */
interface JsonRoute {
  name: string;
  path: string;
  as?: 'node' | 'admin';
  /** Bodies this route must accept, restated from the contract; absent: none can be written by chance. */
  valid?: { oracle: (body: string) => boolean; table: 'join_tokens' };
}

const ROUTES: JsonRoute[] = [
  { name: 'POST /v1/attest', path: '/v1/attest' },
  { name: 'POST /v1/attest/challenge', path: '/v1/attest/challenge' },
  { name: 'POST /v1/renew', path: '/v1/renew', as: 'node' },
  { name: 'POST /v1/workload-svids', path: '/v1/workload-svids', as: 'node' },
  { name: 'POST /v1/jwt-svids', path: '/v1/jwt-svids', as: 'node' },
  { name: 'POST /v1/admin/entries', path: '/v1/admin/entries', as: 'admin' },
  {
    name: 'POST /v1/admin/tokens',
    path: '/v1/admin/tokens',
    as: 'admin',
    valid: { oracle: isValidTokenRequest, table: 'join_tokens' },
  },
  { name: 'POST /v1/admin/admins', path: '/v1/admin/admins', as: 'admin' },
  // Issue 19: a valid enrollment needs 64 hex digits, a valid CA a certificate: not by chance.
  { name: 'POST /v1/admin/tpm/enrollments', path: '/v1/admin/tpm/enrollments', as: 'admin' },
  { name: 'POST /v1/admin/tpm/cas', path: '/v1/admin/tpm/cas', as: 'admin' },
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
    unchangedTables: [
      'nodes',
      'join_tokens',
      'entries',
      'certificates',
      'revocation_events',
      'tpm_enrollments',
      'tpm_manufacturer_cas',
      'tpm_challenges',
    ],
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

  /** Refused, unless the route's oracle calls the body valid: then created, and counted as a row. */
  const expectAnswer = async (route: JsonRoute, body: string, what = body.slice(0, 200)): Promise<Answer> => {
    const a = await post(route, body);
    if (route.valid?.oracle(body)) {
      if (a.status !== 201)
        throw new Error(`valid, yet refused: ${route.name} ${what}: ${a.status} ${a.body}`);
      f.created(route.valid.table);
    } else assertRefused(a, `${route.name} ${what}`);
    return a;
  };

  it('the token oracle agrees with the server on bodies it calls valid, duplicates and extra keys included', async () => {
    const route = ROUTES.find((r) => r.valid)!;
    const valid = [
      '{"role":"manager"}',
      '{"role":"worker","ttl":60,"uses":10000,"node_ttl":"30d"}',
      '{"role":"worker","node_name":"a","uses":1,"ttl":" 1h30m "}',
      '{"role":"x","role":"worker","__proto__":{"role":1},"toString":1,"k":[1]}',
      '{"role":"worker","ttl":null,"uses":null,"node_name":null,"node_ttl":null}',
    ];
    const invalid = [
      '{"role":"worker","role":"admin"}',
      '{"role":"worker","ttl":59}',
      '{"role":"worker","ttl":60.5}',
      '{"role":"worker","node_ttl":60.0005}',
      '{"role":"worker","uses":2,"node_name":"a"}',
      '{"role":"worker","node_name":"A"}',
      '{"role":"worker","ttl":"24"}',
      `{"role":"worker","pad":"${'x'.repeat(64 * 1024)}"}`,
    ];
    for (const body of valid) expect(route.valid!.oracle(body)).toBe(true);
    for (const body of invalid) expect(route.valid!.oracle(body)).toBe(false);
    for (const body of [...valid, ...invalid]) await expectAnswer(route, body, body.slice(0, 80));
  });

  it('answers near-valid token requests as the oracle says: each field valid, at a bound or just past it', async () => {
    const route = ROUTES.find((r) => r.valid)!;
    // Each field is left out half the time, so that about one body in four is valid.
    const maybe = (...values: unknown[]) =>
      fc.option(fc.constantFrom(...values), { nil: undefined, freq: 2 });
    const body = fc.record(
      {
        role: fc.constantFrom('worker', 'manager', 'admin'),
        ttl: maybe(
          null,
          60,
          59,
          2_592_000,
          2_592_001,
          60.5,
          '1m',
          '59s',
          '30d',
          '721h',
          ' 15m',
          '1h30m',
          '15',
          -60,
        ),
        node_ttl: maybe(null, 60, 59, 2_592_000, 2_592_001, 90.25, '1m', '30d', '31d', '60000ms', '59999ms'),
        uses: maybe(null, 1, 0, 2, 10_000, 10_001, 1.5, '1', true),
        node_name: maybe(null, 'a', 'node-1.x_y', 'A', '-a', 'a-', '', 'x'.repeat(63), 'x'.repeat(64), 5),
        extra: maybe(1, 'x', null, [], {}),
      },
      { requiredKeys: ['role'] },
    );
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(body, async (b) => {
        const text = JSON.stringify(b);
        if ((await expectAnswer(route, text)).status === 201) accepted++;
      }),
      { numRuns: 150 },
    );
    // Both sides were reached (about 35 of 150 accepted), so the oracle was checked both ways.
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(150);
  });

  it.each(ROUTES.map((r) => [r.name, r] as const))(
    'refuses hostile JSON objects on %s',
    async (_n, route) => {
      await fc.assert(
        fc.asyncProperty(hostileObjectBody, async (body) => {
          await expectAnswer(route, body);
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
          await expectAnswer(route, body);
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
