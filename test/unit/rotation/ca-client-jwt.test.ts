import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { AgentError, CaClient, CaClientError, type NodeCredential } from '../../../clients/rotation/src';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { testPki } from '../identity/svid-factory';

/**
 * CaClient.mintJwtSvid against a real HTTPS server on localhost with node mTLS: what it sends,
 * how refusals map (as for POST /v1/workload-svids), and which answers it refuses to hand on.
 */

const TD = 'test.example.org';
const WEB = `spiffe://${TD}/web`;
const NOW = Date.parse('2026-03-01T12:00:00Z');
const b64 = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
const SIG = Buffer.alloc(64, 7).toString('base64url');

/** A token as the server words it, with `claims` and `header` overriding the defaults. */
function token(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): string {
  const iat = NOW / 1000;
  return `${b64({ alg: 'ES256', kid: 'k1', typ: 'JWT', ...header })}.${b64({ sub: WEB, aud: ['a', 'b'], exp: iat + 300, iat, iss: 'https://ca.example.org', ...claims })}.${SIG}`;
}

const answerOf = (o: Record<string, unknown> = {}) => ({
  token: token(),
  spiffe_id: WEB,
  expires_at: new Date(NOW + 300_000).toISOString(),
  ...o,
});

interface Answer {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

describe('CaClient.mintJwtSvid', () => {
  let server: Server;
  let client: CaClient;
  let node: NodeCredential;
  let nodeSerial: string;
  const clock = new FakeClock(new Date(NOW));
  const seen: { method?: string; url?: string; body: unknown; peerSerial?: string }[] = [];
  let answer: Answer = { status: 201, body: JSON.stringify(answerOf()) };

  beforeAll(async () => {
    const pki = await testPki(TD);
    const tls = await pki.leaf({ uris: [], dns: ['localhost'], subject: `O=${TD}, CN=ca` });
    const leaf = await pki.leaf({ uris: [`spiffe://${TD}/node/n1`], subject: `O=${TD}, CN=n1` });
    node = { certificateChainPem: leaf.certPem, keyPem: leaf.keyPem, trustBundlePem: pki.bundlePem };
    nodeSerial = leaf.serial;
    server = createServer(
      { key: tls.keyPem, cert: tls.certPem, ca: pki.bundlePem, requestCert: true, rejectUnauthorized: true },
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          const peer = (req.socket as TLSSocket).getPeerX509Certificate();
          const text = Buffer.concat(chunks).toString('utf8');
          seen.push({
            method: req.method,
            url: req.url,
            body: text ? JSON.parse(text) : undefined,
            peerSerial: peer && new X509Certificate(peer.raw).serialNumber.toLowerCase(),
          });
          res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
          res.end(answer.body);
        });
      },
    );
    server.listen(0, 'localhost');
    await once(server, 'listening');
    client = new CaClient({
      serverUrl: `https://localhost:${(server.address() as AddressInfo).port}`,
      clock,
    });
  });

  afterAll(async () => {
    client.close();
    server.close();
    await once(server, 'close');
  });

  beforeEach(() => {
    seen.length = 0;
    answer = { status: 201, body: JSON.stringify(answerOf()) };
  });

  it('ok/posts the SPIFFE ID, audience and ttl over node mTLS and returns the checked token', async () => {
    const svid = await client.mintJwtSvid({ ...node, spiffeId: WEB, audience: ['b', 'a'], ttl: '5m' });
    expect(seen).toEqual([
      {
        method: 'POST',
        url: '/v1/jwt-svids',
        body: { spiffe_id: WEB, audience: ['b', 'a'], ttl: '5m' },
        peerSerial: expect.stringMatching(/^[0-9a-f]+$/),
      },
    ]);
    expect(seen[0]!.peerSerial!.replace(/^0+/, '')).toBe(nodeSerial.replace(/^0+/, ''));
    expect(svid).toEqual({
      token: token(),
      spiffeId: WEB,
      audience: ['a', 'b'],
      expiresAt: new Date(NOW + 300_000),
      issuedAt: new Date(NOW),
    });
    await client.mintJwtSvid({ ...node, spiffeId: WEB, audience: ['a', 'b'] });
    expect(seen[1]!.body).toEqual({ spiffe_id: WEB, audience: ['a', 'b'] });
  });

  it('ok/a single audience may come back as a string; no iat, no issuedAt', async () => {
    answer.body = JSON.stringify(answerOf({ token: token({ aud: 'a', iat: undefined }) }));
    const svid = await client.mintJwtSvid({ ...node, spiffeId: WEB, audience: ['a'] });
    expect(svid.audience).toEqual(['a']);
    expect(svid.issuedAt).toBeUndefined();
  });

  it('fail/maps refusals as the workload SVID call does', async () => {
    const answers: Answer[] = [
      {
        status: 403,
        body: JSON.stringify({
          error: {
            code: 'ERR_NOT_AUTHORIZED',
            message: 'no entry for this SPIFFE ID is parented to this node',
          },
        }),
      },
      {
        status: 400,
        body: JSON.stringify({ error: { code: 'ERR_BAD_REQUEST', message: 'audience: at most 10' } }),
      },
      {
        status: 503,
        body: JSON.stringify({
          error: { code: 'ERR_CA_UNAVAILABLE', message: 'no JWT signing key is active' },
        }),
        headers: { 'retry-after': '7' },
      },
      { status: 502, body: '<html>bad gateway</html>' },
    ];
    const expected = [
      {
        code: 'ERR_NOT_AUTHORIZED',
        status: 403,
        message: 'no entry for this SPIFFE ID is parented to this node',
      },
      { code: 'ERR_BAD_REQUEST', status: 400, message: 'audience: at most 10' },
      { code: 'ERR_CA_UNAVAILABLE', status: 503, retryAfterMs: 7000 },
      {
        code: 'ERR_CA_UNAVAILABLE',
        status: 502,
        message: expect.stringMatching(/\/v1\/jwt-svids: HTTP 502$/),
      },
    ];
    for (const [i, a] of answers.entries()) {
      answer = a;
      const jwt = await client
        .mintJwtSvid({ ...node, spiffeId: WEB, audience: ['a'] })
        .catch((e: unknown) => e);
      const x509 = await client
        .issueWorkloadSvid({ ...node, spiffeId: WEB, csrPem: 'not read by this server' })
        .catch((e: unknown) => e);
      expect(jwt).toBeInstanceOf(CaClientError);
      expect(jwt).toMatchObject(expected[i]!);
      const { code, status, retryAfterMs } = x509 as CaClientError;
      expect({ code, status, retryAfterMs }).toEqual({
        code: (jwt as CaClientError).code,
        status: (jwt as CaClientError).status,
        retryAfterMs: (jwt as CaClientError).retryAfterMs,
      });
    }
  });

  it('fail/a server that is not trusted is ERR_SERVER_UNTRUSTED', async () => {
    const other = await testPki(TD);
    const e = await client
      .mintJwtSvid({ ...node, trustBundlePem: other.bundlePem, spiffeId: WEB, audience: ['a'] })
      .catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'ERR_SERVER_UNTRUSTED', status: 0 });
    expect(seen).toEqual([]);
  });

  it('fail/refuses an answer that is not a live token for the SPIFFE ID and audience asked', async () => {
    const bad: [string, unknown, RegExp][] = [
      ['not JSON', 'Internal Server Error', /not JSON/],
      ['no token', { ...answerOf(), token: undefined }, /"token"/],
      ['two parts', answerOf({ token: token().split('.').slice(0, 2).join('.') }), /compact JWS/],
      [
        'an empty signature',
        answerOf({ token: `${token().split('.').slice(0, 2).join('.')}.` }),
        /compact JWS/,
      ],
      ['not base64url', answerOf({ token: token().replace('.', '+.') }), /compact JWS/],
      [
        'a header that is not JSON',
        answerOf({ token: `${b64('nope')}.${token().split('.')[1]}.${SIG}` }),
        /header/,
      ],
      ['alg none', answerOf({ token: token({}, { alg: 'none' }) }), /header/],
      [
        'claims that are not JSON',
        answerOf({ token: `${token().split('.')[0]}.${b64('[1]')}.${SIG}` }),
        /payload/,
      ],
      ['another spiffe_id', answerOf({ spiffe_id: `spiffe://${TD}/api` }), /another SPIFFE ID/],
      ['another sub', answerOf({ token: token({ sub: `spiffe://${TD}/api` }) }), /another SPIFFE ID/],
      ['no sub', answerOf({ token: token({ sub: undefined }) }), /another SPIFFE ID/],
      ['fewer audiences', answerOf({ token: token({ aud: ['a'] }) }), /another audience/],
      ['more audiences', answerOf({ token: token({ aud: ['a', 'b', 'c'] }) }), /another audience/],
      ['no aud', answerOf({ token: token({ aud: undefined }) }), /"aud"/],
      ['no expires_at', { ...answerOf(), expires_at: undefined }, /"expires_at"/],
      ['a bad expires_at', answerOf({ expires_at: 'soon' }), /"expires_at"/],
      ['no exp', answerOf({ token: token({ exp: undefined }) }), /"exp"/],
      ['exp and expires_at apart', answerOf({ token: token({ exp: NOW / 1000 + 600 }) }), /does not match/],
      [
        'expired',
        answerOf({ token: token({ exp: NOW / 1000 }), expires_at: new Date(NOW).toISOString() }),
        /already expired/,
      ],
    ];
    for (const [what, body, message] of bad) {
      answer = { status: 201, body: typeof body === 'string' ? body : JSON.stringify(body) };
      const e = await client
        .mintJwtSvid({ ...node, spiffeId: WEB, audience: ['a', 'b'] })
        .catch((x: unknown) => x);
      expect({ what, e }).toEqual({ what, e: expect.any(AgentError) });
      expect({ what, code: (e as AgentError).code, message: (e as AgentError).message }).toEqual({
        what,
        code: 'ERR_BAD_RESPONSE',
        message: expect.stringMatching(message),
      });
    }
    // The control: the same client takes the good answer.
    answer = { status: 201, body: JSON.stringify(answerOf()) };
    await expect(client.mintJwtSvid({ ...node, spiffeId: WEB, audience: ['a', 'b'] })).resolves.toMatchObject(
      {
        spiffeId: WEB,
      },
    );
  });
});
