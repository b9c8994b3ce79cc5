import { connect as connectTcp } from 'node:net';
import type { TLSSocket } from 'node:tls';
import fc from 'fast-check';
import { assertErrorBody, BOUND_MS, expectServerAlive, routeOf, useFuzzServer } from './support/fuzz-harness';
import { openTls, type RawAnswer, rawRequest, readAnswer, write } from './support/raw-tls';

/**
 * Issue 8 item 3, raw HTTP over TLS: handcrafted requests on a node:tls socket. 10 MB bodies are
 * refused with 413 before they are sent, bodies and headers that never end are cut off by the
 * server's timeouts, header floods get 431, invalid framing and methods get 400/404, path
 * traversal and very long URLs get 4xx, and the server answers /healthz after each.
 */
const TEN_MB = 10 * 1024 * 1024;
// Short server timeouts so that "cut off by the server" happens within the test.
const REQUEST_TIMEOUT_MS = 2000;
const HEADERS_TIMEOUT_MS = 1000;

describe('fuzz: raw HTTP over TLS', () => {
  const f = useFuzzServer('raw HTTP over TLS', {
    serverFlags: {
      'request-timeout': `${REQUEST_TIMEOUT_MS}ms`,
      'headers-timeout': `${HEADERS_TIMEOUT_MS}ms`,
    },
  });

  const target = () => ({ url: f.t.url, ca: f.t.bundle });
  const head = (method: string, path: string, headers: string[] = []) =>
    `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;

  /** Records a raw answer and checks it: a 4xx (or `ok`), a JSON error body when there is one, in time. */
  const check = (what: string, a: RawAnswer, allowed: number[], label = what): void => {
    f.c.stats.record(label, a.status ?? 0, a.ms);
    const show = () => `${what}: ${a.status} ${a.body.toString('utf8').slice(0, 200)}`;
    if (a.status === null) throw new Error(`no answer for ${show()}`);
    if (!allowed.includes(a.status)) throw new Error(`expected ${allowed.join('/')} for ${show()}`);
    if (a.ms > BOUND_MS) throw new Error(`answer took ${a.ms.toFixed(0)} ms for ${show()}`);
    if (a.status >= 400) assertErrorBody(a.body, show, a.headers['content-type']);
  };

  it('body-limit-before-read: refuses a declared 10 MB body with 413 before the body is sent, and closes the connection', async () => {
    for (const [method, path, type] of [
      ['POST', '/v1/attest', 'application/json'],
      ['POST', '/v1/ocsp', 'application/ocsp-request'],
      ['POST', '/v1/admin/entries', 'application/json'],
      ['POST', '/v1/renew', 'application/json'],
      ['PUT', '/healthz', 'text/plain'],
    ] as const) {
      const s = await openTls(target());
      await write(s, head(method, path, [`Content-Type: ${type}`, `Content-Length: ${TEN_MB}`]));
      // Only the first 64 KiB of the 10 MB follow: the answer must not wait for the rest.
      await write(s, Buffer.alloc(64 * 1024, 0x20));
      const a = await readAnswer(s, 3000);
      s.destroy();
      check(`${method} ${path} declaring 10 MB`, a, [413], `${method} ${path} (10 MB)`);
      expect(JSON.parse(a.body.toString()).error.code).toBe('ERR_BODY_TOO_LARGE');
      expect(a.headers.connection).toBe('close');
    }
  });

  it('keeps memory bounded under eight 10 MB uploads at once', async () => {
    const serverSockets: TLSSocket[] = [];
    const onSecure = (s: TLSSocket) => serverSockets.push(s);
    f.t.running.server.on('secureConnection', onSecure);
    const rssBefore = process.memoryUsage().rss;
    const body = Buffer.alloc(TEN_MB, 0x7b);
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const s = await openTls(target());
        const started = performance.now();
        await write(
          s,
          head('POST', '/v1/attest', ['Content-Type: application/json', `Content-Length: ${TEN_MB}`]),
        );
        s.write(body, () => undefined);
        const a = await readAnswer(s, 5000, started);
        s.destroy();
        return a;
      }),
    );
    f.t.running.server.off('secureConnection', onSecure);
    const grownMb = Math.round((process.memoryUsage().rss - rssBefore) / 1024 / 1024);
    const readMb = serverSockets.reduce((n, s) => n + s.bytesRead, 0) / 1024 / 1024;
    for (const a of answers) check('10 MB upload', a, [413], 'POST /v1/attest (10 MB)');
    console.log(
      `[fuzz] eight 10 MB uploads: the server read ${readMb.toFixed(1)} MB of the 80 MB sent; RSS grew ${grownMb} MB`,
    );
    // The server refuses from the headers and closes: it neither reads nor holds the bodies.
    expect(serverSockets).toHaveLength(8);
    expect(readMb).toBeLessThan(40);
    expect(grownMb).toBeLessThan(160);
  });

  it('refuses a chunked body over 64 KiB with 413', async () => {
    const s = await openTls(target());
    await write(
      s,
      head('POST', '/v1/attest', ['Content-Type: application/json', 'Transfer-Encoding: chunked']),
    );
    const chunk = `4000\r\n${' '.repeat(0x4000)}\r\n`;
    for (let i = 0; i < 64; i++) if (!(await write(s, chunk))) break;
    const started = performance.now();
    await write(s, '0\r\n\r\n');
    const a = await readAnswer(s, 3000, started);
    s.destroy();
    check('1 MiB chunked body', a, [413], 'POST /v1/attest (chunked 1 MiB)');
  });

  it('cuts off a chunked body that never ends, and headers that never end, at the server timeouts', async () => {
    const dribble = async (start: string, drip: string, maxMs: number) => {
      const s = await openTls(target());
      const started = performance.now();
      await write(s, start);
      let closed = false;
      s.once('close', () => {
        closed = true;
      });
      const answer = readAnswer(s, maxMs, started);
      // Keeps the socket busy (never idle) with a byte every 100 ms, bounded in count.
      for (let i = 0; i < maxMs / 100 && !closed; i++) {
        await new Promise((r) => setTimeout(r, 100));
        if (!closed) await write(s, drip);
      }
      const a = await answer;
      s.destroy();
      return { a, ms: performance.now() - started };
    };
    const body = await dribble(
      `${head('POST', '/v1/attest', ['Content-Type: application/json', 'Transfer-Encoding: chunked'])}1\r\n{\r\n`,
      '1\r\n \r\n',
      REQUEST_TIMEOUT_MS + 4000,
    );
    const headers = await dribble(
      'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n',
      'X-A: b\r\n',
      HEADERS_TIMEOUT_MS + 4000,
    );
    console.log(
      `[fuzz] never-ending body cut after ${body.ms.toFixed(0)} ms (request timeout ${REQUEST_TIMEOUT_MS} ms); ` +
        `never-ending headers cut after ${headers.ms.toFixed(0)} ms (headers timeout ${HEADERS_TIMEOUT_MS} ms)`,
    );
    for (const [what, r, limit] of [
      ['never-ending chunked body', body, REQUEST_TIMEOUT_MS],
      ['never-ending headers', headers, HEADERS_TIMEOUT_MS],
    ] as const) {
      // Node answers 408 and closes (or just closes when a response had started).
      expect({ what, closed: r.a.closed || r.a.status === 408 }).toEqual({ what, closed: true });
      if (r.a.status !== null) expect({ what, status: r.a.status }).toEqual({ what, status: 408 });
      expect(r.ms).toBeLessThan(limit + 2500);
      f.c.stats.record(what, r.a.status ?? 408, 0);
    }
  });

  it('refuses invalid framing: Content-Length and Transfer-Encoding abuse', async () => {
    const cases: [string, string][] = [
      ['non-numeric Content-Length', head('POST', '/v1/attest', ['Content-Length: abc'])],
      ['negative Content-Length', head('POST', '/v1/attest', ['Content-Length: -1'])],
      ['fractional Content-Length', head('POST', '/v1/attest', ['Content-Length: 1.5'])],
      [
        'two different Content-Lengths',
        `${head('POST', '/v1/attest', ['Content-Length: 2', 'Content-Length: 3'])}{}`,
      ],
      [
        'Content-Length with Transfer-Encoding',
        `${head('POST', '/v1/attest', ['Content-Length: 2', 'Transfer-Encoding: chunked'])}0\r\n\r\n`,
      ],
      ['Content-Length beyond 2^64', head('POST', '/v1/attest', ['Content-Length: 99999999999999999999999'])],
      ['Content-Length 2^53', head('POST', '/v1/attest', ['Content-Length: 9007199254740993'])],
      ['unknown Transfer-Encoding', head('POST', '/v1/attest', ['Transfer-Encoding: evil'])],
      ['chunked not last', head('POST', '/v1/attest', ['Transfer-Encoding: chunked, gzip'])],
      [
        'bad chunk size',
        `${head('POST', '/v1/attest', ['Transfer-Encoding: chunked'])}zz\r\n{}\r\n0\r\n\r\n`,
      ],
      [
        'huge chunk size',
        `${head('POST', '/v1/attest', ['Transfer-Encoding: chunked'])}ffffffffffffffffff\r\n{}\r\n`,
      ],
      ['obsolete line folding', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n'],
      ['space before colon', 'GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n'],
      ['bare LF line ends', 'GET /healthz HTTP/1.1\nHost: x\n\n'],
      ['NUL in a header', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n'],
      ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
      ['HTTP/9.9', 'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n'],
      ['no version', 'GET /healthz\r\n\r\n'],
    ];
    for (const [what, req] of cases) {
      const a = await rawRequest(target(), req, 3000);
      // Node's parser answers 400 without a body and closes; a few are accepted by it and then
      // refused (413) or routed (200 for the harmless /healthz ones).
      check(
        what,
        a.status === null && a.closed ? { ...a, status: 400 } : a,
        [200, 400, 404, 413, 505],
        'framing',
      );
    }
  });

  it('answers header floods with 431: thousands of headers, 101 headers, one 1 MB header', async () => {
    const flood = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v`);
    const cases: [string, string, number[]][] = [
      ['5000 headers', head('GET', '/healthz', flood(5000)), [431]],
      ['101 small headers', head('GET', '/healthz', flood(101)), [431]],
      ['100 headers in all', head('GET', '/healthz', flood(99)), [200]],
      ['1 MB header', head('GET', '/healthz', [`X-Big: ${'a'.repeat(1 << 20)}`]), [431]],
      ['16 KiB cookie', head('GET', '/v1/bundle', [`Cookie: ${'c'.repeat(16 * 1024)}`]), [431]],
      [
        '1000 Host headers',
        head(
          'GET',
          '/healthz',
          Array.from({ length: 1000 }, () => 'Host: evil'),
        ),
        [400, 431],
      ],
      [
        '500 Content-Type headers on attest',
        head(
          'POST',
          '/v1/attest',
          Array.from({ length: 500 }, () => 'Content-Type: application/json'),
        ),
        [400, 431],
      ],
    ];
    for (const [what, req, allowed] of cases)
      check(what, await rawRequest(target(), req), allowed, 'header flood');
  });

  it('refuses invalid and unrouted methods', async () => {
    const cases: [string, string, number[]][] = [
      ['control character in method', 'FOO\u0001 /healthz HTTP/1.1\r\nHost: x\r\n\r\n', [400]],
      ['lowercase get', 'get /healthz HTTP/1.1\r\nHost: x\r\n\r\n', [400]],
      ['a 10 KiB method', `${'A'.repeat(10 * 1024)} /healthz HTTP/1.1\r\nHost: x\r\n\r\n`, [400, 431]],
      ['PROPFIND', head('PROPFIND', '/v1/attest'), [404, 405]],
      ['TRACE', head('TRACE', '/healthz'), [404, 405]],
      ['DELETE on attest', head('DELETE', '/v1/attest'), [404, 405]],
      ['PUT on the bundle', `${head('PUT', '/v1/bundle', ['Content-Length: 2'])}{}`, [404, 405]],
      ['PATCH on entries', `${head('PATCH', '/v1/admin/entries', ['Content-Length: 2'])}{}`, [401, 404, 405]],
      ['GET on renew', head('GET', '/v1/renew'), [401, 404, 405]],
      ['OPTIONS *', head('OPTIONS', '*'), [400, 404]],
    ];
    for (const [what, req, allowed] of cases) {
      const a = await rawRequest(target(), req);
      check(what, a.status === null && a.closed ? { ...a, status: 400 } : a, allowed, 'methods');
    }
    // CONNECT has no handler: Node closes the connection, and the server lives on.
    const connectAnswer = await rawRequest(
      target(),
      'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n',
    );
    expect(connectAnswer.status === null ? connectAnswer.closed : connectAnswer.status >= 400).toBe(true);
  });

  it('refuses path traversal and very long URLs with 4xx, never a file', async () => {
    const paths: [string, number[]][] = [
      ['/../../etc/passwd', [404]],
      ['/v1/../../../etc/passwd', [404]],
      ['/v1/%2e%2e/%2e%2e/etc/passwd', [404]],
      ['/v1/bundle/..%2f..%2f..%2fetc%2fpasswd', [404]],
      ['/v1/ocsp/..%2f..%2fetc%2fpasswd', [400]],
      ['/v1/bundle/../admin/nodes', [404]],
      ['//v1/admin/nodes', [404]],
      ['/v1/admin/nodes/..%2f..%2f..%2fhealthz', [401]],
      // The admin surface answers every path under /v1/admin/ with 401 first (http/surface-guard.ts).
      ['/v1/admin/entries/%2e%2e', [401]],
      ['/v1/bundle%00.pem', [404]],
      ['/v1/bundle%', [400, 404]],
      ['\\v1\\bundle', [400, 404]],
      ['http://evil.example/v1/admin/nodes', [401]],
      ['/v1/crl?issuer=../../etc/passwd', [404]],
      [`/${'a/'.repeat(6000)}`, [404]],
      [`/v1/crl?issuer=${'A'.repeat(15 * 1024)}`, [404]],
      [`/v1/ocsp/${'A'.repeat(15 * 1024)}`, [400]],
      [`/${'a'.repeat(100 * 1024)}`, [431]],
      [`/v1/bundle?${'x=1&'.repeat(250_000)}`, [431]],
    ];
    for (const [path, allowed] of paths) {
      const a = await rawRequest(target(), head('GET', path));
      check(`GET ${path.slice(0, 60)}`, a, allowed, `GET ${routeOf(path)}`);
      expect(a.body.toString()).not.toMatch(/root:|BEGIN PRIVATE KEY/);
    }
  });

  it('answers every request of a pipelined burst; garbage after a request closes the connection', async () => {
    const statusesOf = (all: Buffer[]) =>
      [
        ...Buffer.concat(all)
          .toString('latin1')
          .matchAll(/HTTP\/1\.1 (\d{3})/g),
      ].map((m) => Number(m[1]));
    const collect = async (bytes: string, expected = Number.POSITIVE_INFINITY): Promise<number[]> => {
      const s = await openTls(target());
      await write(s, bytes);
      const all: Buffer[] = [];
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2000);
        s.on('data', (d: Buffer) => {
          all.push(d);
          if (statusesOf(all).length >= expected) resolve();
        });
        s.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      s.destroy();
      return statusesOf(all);
    };
    const n = 50;
    expect(await collect(head('GET', '/healthz').repeat(n), n)).toEqual(Array(n).fill(200));
    // Node's parser refuses the garbage (400) and drops the connection, answered or not.
    const withGarbage = await collect(`${head('GET', '/healthz')}GARBAGE\r\n\r\n`);
    expect(withGarbage.every((s) => s === 200 || s === 400)).toBe(true);
    for (const status of [...Array(n).fill(200), ...withGarbage])
      f.c.stats.record('pipelined burst', status, 0);
  });

  it('survives plain text, TLS garbage and half-open handshakes on the TLS port', async () => {
    const u = new URL(f.t.url);
    const sendTcp = (bytes: Buffer) =>
      new Promise<void>((resolve) => {
        const sock = connectTcp({ host: u.hostname, port: Number(u.port) }, () => sock.end(bytes));
        const timer = setTimeout(() => sock.destroy(), 2000);
        sock.on('error', () => undefined);
        sock.on('data', () => undefined);
        sock.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    await sendTcp(Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    await sendTcp(Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xfc]));
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 2048 }), async (bytes) => {
        await sendTcp(Buffer.from(bytes));
      }),
      { numRuns: 30 },
    );
    await expectServerAlive(f.c);
  });

  it('answers the public GET routes whatever the query string and headers', async () => {
    const routes = [
      '/v1/bundle',
      '/v1/bundle.jwks',
      '/.well-known/openid-configuration',
      '/v1/oidc/jwks',
      '/v1/crl',
      '/v1/crl.pem',
      '/healthz',
      '/readyz',
      '/metrics',
    ];
    const query = fc.array(
      fc.tuple(
        fc.oneof(
          fc.constantFrom('issuer', 'since', 'format', '__proto__', 'constructor'),
          fc.string({ maxLength: 8 }),
        ),
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc.constantFrom("'; drop table crls; --", '%00', ''),
        ),
      ),
      { maxLength: 4 },
    );
    const headerValue = fc.stringMatching(/^[\x21-\x7e]{0,200}$/);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        query,
        fc.record(
          { 'if-none-match': headerValue, accept: headerValue, 'accept-encoding': headerValue },
          { requiredKeys: [] },
        ),
        fc.constantFrom('GET', 'HEAD'),
        async (route, q, headers, method) => {
          let qs: string;
          try {
            qs = q.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
          } catch {
            return; // a lone surrogate has no URL form
          }
          const a = await f.c.send(
            { method, path: qs ? `${route}?${qs}` : route, headers },
            `${method} ${route}`,
          );
          if (a.status >= 500)
            throw new Error(`${method} ${route}?${qs}: ${a.status} ${a.body.toString().slice(0, 200)}`);
          if (a.ms > BOUND_MS) throw new Error(`${method} ${route}?${qs}: ${a.ms.toFixed(0)} ms`);
          // /v1/crl names an issuer: anything but a CA id is a 404.
          const allowed =
            route === '/v1/crl' && q.some(([k]) => k === 'issuer') ? [404, 200, 304] : [200, 304];
          if (!allowed.includes(a.status)) throw new Error(`${method} ${route}?${qs}: ${a.status}`);
          if (a.status === 404 && method === 'GET') assertErrorBody(a.body, () => `${route}?${qs}`);
        },
      ),
      { numRuns: 300 },
    );
  });
});
