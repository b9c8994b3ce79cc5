import { createHmac, createPublicKey, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { join } from 'node:path';
import { createLocalJWKSet, type JWK, jwtVerify } from 'jose';
import { JWT_KEY_GRACE_MS } from '../../services/ca/src/domain/jwt-keys';
import { MAX_JWT_TTL_MS } from '../../services/ca/src/ground/ttl';
import { describeEachBackend } from '../support/database';
import { errorBodyOf } from '../support/errors';
import { callAs, https } from '../support/https';
import { attestedNode, keyAndCsr, renew } from '../support/node-client';
import { startTestServer, type TestServer, rotateCa } from '../support/test-server';
import { DEBIAN_PYTHON, itWith, pythonModules, runAsync } from '../support/tools';

/**
 * Issue 16: POST /v1/jwt-svids. A node mints JWT-SVIDs for its own entries only, under the caller
 * rule of workload SVIDs; the tokens are validated by code Baton did not write, against the JWKS
 * Baton publishes: Debian's PyJWT (python3-jwt) and the npm library `jose`.
 */

const TD = 'test.example.org';
const AUD = 'spiffe://test.example.org/db';
const PYJWT = pythonModules(['jwt', 'cryptography'], 'python3-jwt and python3-cryptography');
const VALIDATOR = join(__dirname, '..', 'support', 'validate_jwt.py');

type Cred = { cert: string; key: string };
interface Minted {
  token: string;
  spiffe_id: string;
  expires_at: string;
}
type JwksKey = JWK & { use?: string; kid?: string };
interface Jwks {
  keys: JwksKey[];
}
type Verdict = { ok: true; claims: Record<string, unknown> } | { ok: false; error: string };

/** A JWS compact part, decoded (no verification). */
const part = (token: string, i: 0 | 1): Record<string, unknown> =>
  JSON.parse(Buffer.from(token.split('.')[i]!, 'base64url').toString('utf8'));

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

describeEachBackend('JWT-SVIDs: POST /v1/jwt-svids', (backend) => {
  let t: TestServer;
  let admin: Cred;
  let n1: Cred;
  let n2: Cred;
  let issuer: string;
  const WEB = `spiffe://${TD}/web`;

  const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);
  const mint = (cred: Cred, body: unknown) => callAs(t, cred, 'POST', '/v1/jwt-svids', body);
  const minted = async (cred: Cred, body: unknown): Promise<Minted> => {
    const r = await mint(cred, body);
    if (r.status !== 201) throw new Error(`mint: ${r.status} ${r.body}`);
    return r.json<Minted>();
  };
  const jwks = async (): Promise<Jwks> =>
    (await https(`${t.url}/v1/bundle.jwks`, { ca: t.bundle })).json<Jwks>();
  const addEntry = async (name: string, parent: string) => {
    const r = await adminCall('POST', '/v1/admin/entries', {
      name,
      spiffe_id: `spiffe://${TD}/${name}`,
      parent,
    });
    expect(r.status).toBe(201);
    return `spiffe://${TD}/${name}`;
  };
  /** A node of its own with one entry: the refusal cases spoil it. */
  let counter = 0;
  const nodeWithEntry = async () => {
    const name = `jn${++counter}`;
    const n = await attestedNode(t, { nodeName: name });
    return { ...n, id: name, spiffeId: await addEntry(`${name}-svc`, name) };
  };
  /** Validators compare exp and iat with the wall clock: the server's clock goes back to it. */
  const wallClock = () => t.clock.set(new Date());

  /** jose (npm), as a relying party uses it with a SPIFFE bundle. */
  async function joseVerdict(set: Jwks, token: string, audience = AUD): Promise<Verdict> {
    // jose takes a key whose `use` is set to anything but "sig" for no key: a relying party hands it
    // the bundle's jwt-svid keys as the signing keys they are (docs/jwt-svid.md).
    const keys = set.keys.filter((k) => k.use === 'jwt-svid').map((k) => ({ ...k, use: 'sig' }));
    try {
      const { payload } = await jwtVerify(token, createLocalJWKSet({ keys }), {
        audience,
        issuer,
        algorithms: ['ES256'],
      });
      return { ok: true, claims: payload as Record<string, unknown> };
    } catch (e) {
      return { ok: false, error: (e as { code?: string }).code ?? String(e) };
    }
  }

  /** PyJWT (Debian python3-jwt), through test/support/validate_jwt.py: one verdict per token. */
  async function pyjwtVerdicts(set: Jwks, tokens: string[], audience = AUD): Promise<Verdict[]> {
    const r = await runAsync(
      DEBIAN_PYTHON,
      [VALIDATOR],
      JSON.stringify({ jwks: set, audience, issuer, tokens }),
    );
    expect(r.status).toBe(0);
    const lines = r.out.split('\n').filter((l) => l.startsWith('{'));
    expect(lines).toHaveLength(tokens.length);
    return lines.map((l) => JSON.parse(l) as Verdict);
  }

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    issuer = t.ca.installation.publicUrl;
    const a = await t.issueAdmin('operator', 'ops');
    admin = { cert: a.cert, key: a.key };
    n1 = await attestedNode(t, { nodeName: 'n1' });
    n2 = await attestedNode(t, { nodeName: 'n2' });
    await addEntry('web', 'n1');
    await addEntry('api', 'n2');
  });
  afterAll(() => t.close());

  it('ok/mints for an entry of the node: header exactly alg, kid, typ; claims exactly sub, aud, exp, iat, iss, none from the request', async () => {
    wallClock();
    const now = t.clock.now().getTime();
    const r = await mint(n1, {
      spiffe_id: WEB,
      audience: [AUD, 'https://sts.example.com'],
      // Claims and header fields a request might try to set: none of them is read.
      sub: `spiffe://${TD}/admin/root`,
      iss: 'https://evil.example',
      exp: 4_000_000_000,
      kid: 'mine',
      alg: 'none',
      claims: { admin: true },
    });
    expect(r.status).toBe(201);
    const b = r.json<Minted>();
    expect(Object.keys(b).sort()).toEqual(['expires_at', 'spiffe_id', 'token']);
    expect(b.spiffe_id).toBe(WEB);
    expect(b.token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);

    const header = part(b.token, 0);
    expect(Object.keys(header).sort()).toEqual(['alg', 'kid', 'typ']);
    expect(header).toEqual({ alg: 'ES256', kid: t.ca.keyring.jwt.active!.kid, typ: 'JWT' });
    const published = (await jwks()).keys.filter((k) => k.use === 'jwt-svid').map((k) => k.kid);
    expect(published).toContain(header.kid);

    const claims = part(b.token, 1);
    expect(Object.keys(claims).sort()).toEqual(['aud', 'exp', 'iat', 'iss', 'sub']);
    const iat = Math.floor(now / 1000);
    expect(claims).toEqual({
      sub: WEB,
      aud: [AUD, 'https://sts.example.com'],
      iat,
      exp: iat + 300,
      iss: issuer,
    });
    expect(b.expires_at).toBe(new Date((iat + 300) * 1000).toISOString());
    // ES256 (RFC 7518 §3.4): r || s, 64 bytes.
    expect(Buffer.from(b.token.split('.')[2]!, 'base64url')).toHaveLength(64);
  });

  it('ok/ttl: 5m by default, 1m to 1h as a duration or in seconds; exp - iat is the ttl', async () => {
    wallClock();
    for (const [ttl, seconds] of [
      [undefined, 300],
      ['1m', 60],
      [60, 60],
      ['90s', 90],
      ['15m', 900],
      ['1h', 3600],
      [3600, 3600],
    ] as const) {
      const b = await minted(n1, { spiffe_id: WEB, audience: [AUD], ...(ttl === undefined ? {} : { ttl }) });
      const c = part(b.token, 1) as { exp: number; iat: number };
      expect([ttl, c.exp - c.iat]).toEqual([ttl, seconds]);
      expect(Date.parse(b.expires_at)).toBe(c.exp * 1000);
    }
  });

  it('ok/the audience boundaries: 10 entries, 256 bytes (multi-byte UTF-8 counted in bytes)', async () => {
    const ten = Array.from({ length: 10 }, (_, i) => `aud-${i}`);
    for (const audience of [ten, ['x'.repeat(256)], ['é'.repeat(128)], ['a', 'a']]) {
      const b = await minted(n1, { spiffe_id: WEB, audience });
      expect(part(b.token, 1).aud).toEqual(audience);
    }
  });

  it('fail/the refusals of workload SVIDs, with the same codes: another node’s entry, a revoked node, a superseded or revoked node certificate, no certificate, an admin certificate', async () => {
    const csr = async () => (await keyAndCsr()).csrPem;
    /** The same request to both routes: the JWT one must answer as the workload one does. */
    const both = async (cred: Cred | null, spiffeId: string) => {
      const jwt = cred
        ? await mint(cred, { spiffe_id: spiffeId, audience: [AUD] })
        : await https(`${t.url}/v1/jwt-svids`, {
            method: 'POST',
            body: JSON.stringify({ spiffe_id: spiffeId, audience: [AUD] }),
            ca: t.bundle,
          });
      const body = { spiffe_id: spiffeId, csr: await csr() };
      const x509 = cred
        ? await callAs(t, cred, 'POST', '/v1/workload-svids', body)
        : await https(`${t.url}/v1/workload-svids`, {
            method: 'POST',
            body: JSON.stringify(body),
            ca: t.bundle,
          });
      const answer = (r: typeof jwt) => [r.status, errorBodyOf(r).code, errorBodyOf(r).message];
      expect(answer(jwt)).toEqual(answer(x509));
      return answer(jwt);
    };

    expect(await both(n2, WEB)).toEqual([
      403,
      'ERR_NOT_AUTHORIZED',
      'no entry for this SPIFFE ID is parented to this node',
    ]);

    // The node row revoked, its certificate not (yet): the node decides.
    const a = await nodeWithEntry();
    await t.ca.storage.nodes.markRevoked(a.id, t.clock.now(), 1);
    expect((await both(a, a.spiffeId)).slice(0, 2)).toEqual([403, 'ERR_NODE_REVOKED']);

    // A node revoked by an admin: its certificates are revoked with it.
    const b = await nodeWithEntry();
    expect(
      (await adminCall('POST', `/v1/admin/nodes/${b.id}/revoke`, { reason: 'key-compromise' })).status,
    ).toBe(200);
    expect((await both(b, b.spiffeId)).slice(0, 2)).toEqual([403, 'ERR_CERT_REVOKED']);

    // Superseded by a renewal: the old certificate is refused, the new one mints.
    const c = await nodeWithEntry();
    const fresh = await keyAndCsr();
    const renewed = await renew(t, c, fresh.csrPem);
    expect(renewed.status).toBe(201);
    expect((await both(c, c.spiffeId)).slice(0, 2)).toEqual([403, 'ERR_CERT_SUPERSEDED']);
    const current = {
      cert: renewed.json<{ certificate_chain: string }>().certificate_chain,
      key: fresh.keyPem,
    };
    expect((await mint(current, { spiffe_id: c.spiffeId, audience: [AUD] })).status).toBe(201);

    // The node certificate revoked, the node active.
    const d = await nodeWithEntry();
    expect((await adminCall('POST', `/v1/admin/certificates/${d.body.serial}/revoke`, {})).status).toBe(200);
    expect((await both(d, d.spiffeId)).slice(0, 2)).toEqual([403, 'ERR_CERT_REVOKED']);

    expect((await both(null, WEB)).slice(0, 2)).toEqual([401, 'ERR_NOT_AUTHENTICATED']);
    expect((await both(admin, WEB)).slice(0, 2)).toEqual([403, 'ERR_NOT_AUTHORIZED']);
  });

  it('fail/every field out of range is a 400 whose message starts with the field; nothing is minted; the caller rule answers first', async () => {
    wallClock();
    const n = await nodeWithEntry();
    const ok = { spiffe_id: n.spiffeId, audience: [AUD] };
    const cases: [string, Record<string, unknown>][] = [
      ['spiffe_id', { audience: [AUD] }],
      ['spiffe_id', { ...ok, spiffe_id: 7 }],
      ['spiffe_id', { ...ok, spiffe_id: null }],
      ['spiffe_id', { ...ok, spiffe_id: `spiffe://${TD}/${'x'.repeat(2040)}` }],
      // Refused at the edge: in the batched read PostgreSQL would fail every request of the batch.
      ['spiffe_id', { ...ok, spiffe_id: `${n.spiffeId}\u0000` }],
      ['audience', { spiffe_id: n.spiffeId }],
      ['audience', { ...ok, audience: AUD }],
      ['audience', { ...ok, audience: [] }],
      ['audience', { ...ok, audience: Array.from({ length: 11 }, (_, i) => `a${i}`) }],
      ['audience', { ...ok, audience: [''] }],
      ['audience', { ...ok, audience: [AUD, 1] }],
      ['audience', { ...ok, audience: [null] }],
      ['audience', { ...ok, audience: [['nested']] }],
      ['audience', { ...ok, audience: ['x'.repeat(257)] }],
      ['audience', { ...ok, audience: ['é'.repeat(129)] }],
      ['ttl', { ...ok, ttl: '59s' }],
      ['ttl', { ...ok, ttl: 59 }],
      ['ttl', { ...ok, ttl: '61m' }],
      ['ttl', { ...ok, ttl: '2h' }],
      ['ttl', { ...ok, ttl: 3601 }],
      ['ttl', { ...ok, ttl: 0 }],
      ['ttl', { ...ok, ttl: -60 }],
      ['ttl', { ...ok, ttl: 90.5 }],
      ['ttl', { ...ok, ttl: 'soon' }],
      ['ttl', { ...ok, ttl: true }],
      ['ttl', { ...ok, ttl: '' }],
    ];
    for (const [field, body] of cases) {
      const r = await mint(n, body);
      expect([field, r.status, errorBodyOf(r).code]).toEqual([field, 400, 'ERR_BAD_REQUEST']);
      expect(errorBodyOf(r).message.startsWith(`${field}: `)).toBe(true);
    }
    const notObject = await mint(n, [ok]);
    expect([notObject.status, errorBodyOf(notObject).code]).toEqual([400, 'ERR_BAD_REQUEST']);

    // Each refusal is audited, with the SPIFFE ID asked for when it was a string within bounds and
    // without a NUL: none of the five spiffe_id cases records the node's SPIFFE ID.
    const refused = await t.ca.storage.audit.list({
      event: 'jwt_svid.refused',
      actor: `spiffe://${TD}/node/${n.id}`,
      limit: 1000,
    });
    expect(refused).toHaveLength(cases.length + 1);
    expect(refused.every((e) => e.outcome === 'failure' && e.details.code === 'ERR_BAD_REQUEST')).toBe(true);
    expect(refused.filter((e) => e.details.spiffe_id === n.spiffeId)).toHaveLength(cases.length - 5);

    // Nothing was minted: the minute's aggregate has no row for this node.
    t.clock.advance(60_000);
    await t.running.jobs.runOnce();
    const mintedRows = await t.ca.storage.audit.list({ event: 'jwt_svid.minted', subject: n.spiffeId });
    expect(mintedRows).toEqual([]);

    // A caller that may not mint learns only that, whatever its body.
    const asAdmin = await mint(admin, { audience: 'bad' });
    expect([asAdmin.status, errorBodyOf(asAdmin).code]).toEqual([403, 'ERR_NOT_AUTHORIZED']);
    await t.ca.storage.nodes.markRevoked(n.id, t.clock.now(), 1);
    const asRevoked = await mint(n, { audience: 'bad' });
    expect([asRevoked.status, errorBodyOf(asRevoked).code]).toEqual([403, 'ERR_NODE_REVOKED']);
  });

  it('audit: one refused row per refusal (none without a client certificate); the mints of a minute in one row per node and SPIFFE ID', async () => {
    wallClock();
    // Whatever an earlier test minted is written first, so the next minute is this test's alone.
    t.clock.advance(60_000);
    await t.running.jobs.runOnce();
    const before = await t.ca.storage.audit.list({ event: 'jwt_svid.refused', limit: 10_000 });

    const anonymous = await https(`${t.url}/v1/jwt-svids`, {
      method: 'POST',
      body: JSON.stringify({ spiffe_id: WEB, audience: [AUD] }),
      ca: t.bundle,
    });
    expect(anonymous.status).toBe(401);
    // A certificate of another kind (an admin's) is refused before anything is written, as on the
    // workload route: no row, so no workload or auditor of the fleet writes to the audit chain.
    const wrongKind = await mint(admin, { spiffe_id: WEB, audience: [AUD] });
    expect(wrongKind.status).toBe(403);
    expect(errorBodyOf(wrongKind).code).toBe('ERR_NOT_AUTHORIZED');
    const denied = await mint(n2, { spiffe_id: WEB, audience: [AUD] });
    expect(denied.status).toBe(403);
    const after = await t.ca.storage.audit.list({ event: 'jwt_svid.refused', limit: 10_000 });
    expect(after).toHaveLength(before.length + 1);
    expect(after[0]).toMatchObject({
      actor: `spiffe://${TD}/node/n2`,
      subject: null,
      outcome: 'failure',
      details: { code: 'ERR_NOT_AUTHORIZED', spiffe_id: WEB },
    });

    const first = t.clock.now();
    for (let i = 0; i < 5; i++) await minted(n1, { spiffe_id: WEB, audience: [AUD] });
    await minted(n2, { spiffe_id: `spiffe://${TD}/api`, audience: [AUD] });
    // The minute is open: nothing yet.
    await t.running.jobs.runOnce();
    expect(await t.ca.storage.audit.list({ event: 'jwt_svid.minted', since: first })).toEqual([]);
    t.clock.advance(60_000);
    await t.running.jobs.runOnce();
    const rows = await t.ca.storage.audit.list({ event: 'jwt_svid.minted', since: first });
    expect(
      rows.map((r) => [r.actor, r.subject, r.details.node, r.details.count, r.details.spiffe_id]).sort(),
    ).toEqual([
      [`spiffe://${TD}/node/n1`, WEB, 'n1', 5, WEB],
      [`spiffe://${TD}/node/n2`, `spiffe://${TD}/api`, 'n2', 1, `spiffe://${TD}/api`],
    ]);
    expect(rows[0]!.details).toEqual({
      count: expect.any(Number),
      node: expect.any(String),
      spiffe_id: expect.any(String),
      first: first.toISOString(),
      last: first.toISOString(),
    });
    wallClock();
  });

  describe('validated by code we did not write, against /v1/bundle.jwks', () => {
    let good: Minted;
    let forged: Record<string, string>;
    let set: Jwks;

    beforeAll(async () => {
      wallClock();
      good = await minted(n1, { spiffe_id: WEB, audience: [AUD, 'other'] });
      const otherAudience = await minted(n1, { spiffe_id: WEB, audience: ['https://someone-else.example'] });
      set = await jwks();
      const now = Math.floor(Date.now() / 1000);
      const claims = { sub: WEB, aud: [AUD], iat: now, exp: now + 300, iss: issuer };
      const kid = part(good.token, 0).kid as string;
      const es256 = (header: unknown, payload: unknown, key: KeyObject) => {
        const input = `${b64(header)}.${b64(payload)}`;
        const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
        return `${input}.${sig.toString('base64url')}`;
      };
      // A key Baton never published (a retired key that has left the JWKS looks the same to a
      // validator): a well-formed token in every other way.
      const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      // HS256 with the published public key as the HMAC secret (the classic key confusion), in the
      // encodings a confused library might use: PEM, SPKI DER, the JWK's JSON.
      const jwk = set.keys.find((k) => k.kid === kid)!;
      const pub = createPublicKey({ key: jwk as never, format: 'jwk' });
      const hs256 = (secret: Buffer | string) => {
        const input = `${b64({ alg: 'HS256', kid, typ: 'JWT' })}.${b64(claims)}`;
        return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
      };
      // Expired: minted by Baton with its clock ten minutes back, for one minute.
      t.clock.set(new Date(Date.now() - 10 * 60_000));
      const expired = await minted(n1, { spiffe_id: WEB, audience: [AUD], ttl: '1m' });
      wallClock();
      forged = {
        'a key not in the JWKS': es256(
          { alg: 'ES256', kid: 'retired-key-not-published', typ: 'JWT' },
          claims,
          stranger,
        ),
        'a key not in the JWKS, under a published kid': es256(
          { alg: 'ES256', kid, typ: 'JWT' },
          claims,
          stranger,
        ),
        'alg none': `${b64({ alg: 'none', kid, typ: 'JWT' })}.${b64(claims)}.`,
        'HS256, the public key PEM as secret': hs256(pub.export({ type: 'spki', format: 'pem' }) as string),
        'HS256, the public key DER as secret': hs256(pub.export({ type: 'spki', format: 'der' })),
        'HS256, the JWK JSON as secret': hs256(JSON.stringify(jwk)),
        'another audience': otherAudience.token,
        expired: expired.token,
        'a claim changed after signing': `${good.token.split('.')[0]}.${b64({ ...part(good.token, 1), sub: `spiffe://${TD}/api` })}.${good.token.split('.')[2]}`,
      };
    });

    it('ok/jose verifies signature, aud, exp and iss of a minted token', async () => {
      const v = await joseVerdict(set, good.token);
      expect(v).toEqual({ ok: true, claims: part(good.token, 1) });
      expect(await joseVerdict(set, good.token, 'other')).toMatchObject({ ok: true });
    });

    it('ok/an OIDC relying party: discovery → jwks_uri → jose, with no rewriting of the keys; the forgeries refused', async () => {
      const discovery = (await https(`${t.url}/.well-known/openid-configuration`, { ca: t.bundle })).json<{
        issuer: string;
        jwks_uri: string;
      }>();
      expect(discovery.issuer).toBe(issuer);
      const path = new URL(discovery.jwks_uri).pathname;
      const oidc = (await https(`${t.url}${path}`, { ca: t.bundle })).json<{
        keys: Record<string, unknown>[];
      }>();
      const verify = async (token: string) => {
        try {
          await jwtVerify(
            token,
            createLocalJWKSet(oidc as unknown as Parameters<typeof createLocalJWKSet>[0]),
            {
              audience: AUD,
              issuer: discovery.issuer,
              algorithms: ['ES256'],
            },
          );
          return true;
        } catch {
          return false;
        }
      };
      expect(await verify(good.token)).toBe(true);
      for (const [name, token] of Object.entries(forged))
        expect([name, await verify(token)]).toEqual([name, false]);
    });

    it('fail/jose refuses each forgery, a token for another audience and an expired token', async () => {
      const verdicts: Record<string, Verdict> = {};
      for (const [name, token] of Object.entries(forged)) verdicts[name] = await joseVerdict(set, token);
      expect(Object.fromEntries(Object.entries(verdicts).map(([n, v]) => [n, v.ok]))).toEqual(
        Object.fromEntries(Object.keys(forged).map((n) => [n, false])),
      );
      expect(verdicts['a key not in the JWKS']).toEqual({ ok: false, error: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(verdicts['another audience']).toEqual({ ok: false, error: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
      expect(verdicts.expired).toEqual({ ok: false, error: 'ERR_JWT_EXPIRED' });
    });

    itWith(
      PYJWT,
      'ok/PyJWT (Debian python3-jwt) verifies signature, aud, exp and iss of a minted token',
      async () => {
        const [v] = await pyjwtVerdicts(set, [good.token]);
        expect(v).toEqual({ ok: true, header: part(good.token, 0), claims: part(good.token, 1) });
        expect((await pyjwtVerdicts(set, [good.token], 'other'))[0]).toMatchObject({ ok: true });
      },
    );

    itWith(
      PYJWT,
      'fail/PyJWT refuses each forgery, a token for another audience and an expired token',
      async () => {
        const names = Object.keys(forged);
        const verdicts = await pyjwtVerdicts(set, Object.values(forged));
        const byName = Object.fromEntries(names.map((n, i) => [n, verdicts[i]!]));
        expect(Object.fromEntries(names.map((n) => [n, byName[n]!.ok]))).toEqual(
          Object.fromEntries(names.map((n) => [n, false])),
        );
        const error = (n: string) => (byName[n] as { error: string }).error;
        expect(error('a key not in the JWKS')).toMatch(/^KeyError: /);
        expect(error('alg none')).toMatch(/^InvalidAlgorithmError: /);
        expect(error('HS256, the public key PEM as secret')).toMatch(/^InvalidAlgorithmError: /);
        expect(error('another audience')).toMatch(/^InvalidAudienceError: /);
        expect(error('expired')).toMatch(/^ExpiredSignatureError: /);
        expect(error('a claim changed after signing')).toMatch(/^InvalidSignatureError: /);
      },
    );

    itWith(
      PYJWT,
      'a real rotation: the retired key validates its tokens while published, and leaves the JWKS after MAX_JWT_TTL + grace; then jose and PyJWT refuse them',
      async () => {
        wallClock();
        const before = await minted(n1, { spiffe_id: WEB, audience: [AUD] });
        const oldKid = part(before.token, 0).kid as string;
        await rotateCa(t);
        await t.running.jobs.runOnce();
        const after = await minted(n1, { spiffe_id: WEB, audience: [AUD] });
        const newKid = part(after.token, 0).kid as string;
        expect(newKid).not.toBe(oldKid);

        const both = await jwks();
        const kids = (s: Jwks) => s.keys.filter((k) => k.use === 'jwt-svid').map((k) => k.kid);
        expect(kids(both)).toEqual(expect.arrayContaining([oldKid, newKid]));
        for (const token of [before.token, after.token])
          expect(await joseVerdict(both, token)).toMatchObject({ ok: true });
        expect((await pyjwtVerdicts(both, [before.token, after.token])).map((v) => v.ok)).toEqual([
          true,
          true,
        ]);

        // The server's clock passes the retirement by the longest token life and the grace: the key
        // leaves the JWKS. The token is not expired by the validators' (wall) clock: only the
        // missing key refuses it.
        t.clock.advance(MAX_JWT_TTL_MS + JWT_KEY_GRACE_MS + 1000);
        const later = await jwks();
        wallClock();
        expect(kids(later)).toContain(newKid);
        expect(kids(later)).not.toContain(oldKid);
        expect(await joseVerdict(later, before.token)).toEqual({
          ok: false,
          error: 'ERR_JWKS_NO_MATCHING_KEY',
        });
        expect(await joseVerdict(later, after.token)).toMatchObject({ ok: true });
        const [old, current] = await pyjwtVerdicts(later, [before.token, after.token]);
        expect(old).toMatchObject({ ok: false, error: expect.stringMatching(/^KeyError: /) });
        expect(current).toMatchObject({ ok: true });
      },
    );
  });
});

describeEachBackend('JWT-SVIDs: mints still counted when the server stops', (backend) => {
  it('close() writes the open minute’s counts', async () => {
    const t = await startTestServer({ backend, trustDomain: TD });
    try {
      const n = await attestedNode(t, { nodeName: 'n1' });
      const a = await t.issueAdmin('operator', 'ops');
      expect(
        (
          await callAs(t, a, 'POST', '/v1/admin/entries', {
            name: 'web',
            spiffe_id: `spiffe://${TD}/web`,
            parent: 'n1',
          })
        ).status,
      ).toBe(201);
      for (let i = 0; i < 3; i++) {
        const r = await callAs(t, n, 'POST', '/v1/jwt-svids', {
          spiffe_id: `spiffe://${TD}/web`,
          audience: [AUD],
        });
        expect(r.status).toBe(201);
      }
      await t.running.close();
      const rows = await t.ca.storage.audit.list({ event: 'jwt_svid.minted' });
      expect(rows.map((r) => [r.details.node, r.details.count])).toEqual([['n1', 3]]);
    } finally {
      await t.db.drop();
    }
  });
});
