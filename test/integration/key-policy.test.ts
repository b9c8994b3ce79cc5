import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { attest, attestedNode, type IssuanceBody, newToken, renew } from '../support/node-client';
import { exponentOneCsr, signedRsaCsr } from '../support/rsa-csr';
import { startTestServer, type TestServer } from '../support/test-server';

/**
 * Issue 14, finding 3: a CSR with the RSA public exponent 1 and an arbitrary modulus, its
 * "signature" the padded digest itself, was certified on POST /v1/workload-svids. Over HTTPS, on
 * every route that takes a CSR: such keys are refused with 400 ERR_CSR_KEY_UNSUPPORTED and nothing
 * is issued or spent; and /v1/attest checks the join token before it verifies a CSR's signature.
 */

const TD = 'test.example.org';
type Cred = { cert: string; key: string };
type ErrorBody = { error: { code: string; message: string } };

const spkiOf = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const modulus = BigInt(
  `0x${Buffer.from(rsa2048.publicKey.export({ format: 'jwk' }).n!, 'base64url').toString('hex')}`,
);

/** A fresh key per request, so that each route would certify it (one key, one identity) but for the policy. */
const KEYS = {
  'e=1, any odd 2048-bit modulus, the signature the padded digest': () => {
    const n = randomBytes(256);
    n[0]! |= 0x80;
    n[255]! |= 1;
    return exponentOneCsr(BigInt(`0x${n.toString('hex')}`)).pem;
  },
  'e=3, properly signed': () => {
    const k = generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 });
    return signedRsaCsr(k.privateKey, spkiOf(k.publicKey));
  },
};
const EXPONENT = /^unsupported RSA public exponent: use an odd one from 65537 to 2\^256-1/;

describeEachBackend('issue 14: the RSA key policy on every route that takes a CSR', (backend) => {
  let t: TestServer;
  let admin: Cred;
  let node: Cred;

  const post = (path: string, body: unknown, cred?: Cred) =>
    https(`${t.url}${path}`, { method: 'POST', body: JSON.stringify(body), ca: t.bundle, ...cred });
  const tokenUses = async (token: string) =>
    (await t.ca.storage.tokens.findById(token.split('-')[2]!.split('.')[0]!))?.usesLeft;
  const counts = async () => ({
    certificates: (await t.ca.storage.certificates.list({})).length,
    nodes: (await t.ca.storage.nodes.list()).length,
  });

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const a = await t.issueAdmin('admin', 'root');
    admin = { cert: a.cert, key: a.key };
    const n = await attestedNode(t, { nodeName: 'n1' });
    node = { cert: n.cert, key: n.key };
    const entry = await post(
      '/v1/admin/entries',
      { name: 'web', spiffe_id: `spiffe://${TD}/web`, parent: 'n1', selectors: ['unix:uid:1000'] },
      admin,
    );
    expect(entry.status).toBe(201);
  });
  afterAll(() => t.close());

  interface Route {
    send(csr: string): Promise<{ status: number; json<T>(): T }>;
    /** Whether the refused request spent anything of its own (the token, the renewed certificate). */
    spent(): Promise<boolean>;
  }
  /** Each route that takes a CSR, set up for one request. */
  const ROUTES: Record<string, () => Promise<Route>> = {
    'POST /v1/attest': async () => {
      const token = await newToken(t);
      return {
        send: (csr) => attest(t, { method: 'join_token', token, csr }),
        spent: async () => (await tokenUses(token)) !== 1,
      };
    },
    'POST /v1/renew': async () => {
      // Its own node, so that a renewal the policy failed to refuse would not supersede n1.
      const own = await attestedNode(t);
      return {
        send: (csr) => renew(t, own, csr),
        spent: async () =>
          (await t.ca.storage.certificates.findBySerial(own.body.serial))?.status !== 'valid',
      };
    },
    'POST /v1/workload-svids': async () => ({
      send: (csr) => post('/v1/workload-svids', { spiffe_id: `spiffe://${TD}/web`, csr }, node),
      spent: async () => false,
    }),
    'POST /v1/admin/admins': async () => ({
      send: (csr) => post('/v1/admin/admins', { name: 'auditor-1', role: 'auditor', csr }, admin),
      spent: async () => false,
    }),
  };

  it.each(
    Object.keys(ROUTES).flatMap((route) =>
      Object.keys(KEYS).map((key) => [`fail/${key} on ${route}`, route, key]),
    ),
  )('%s: 400 ERR_CSR_KEY_UNSUPPORTED, nothing issued or spent', async (_n, route, key) => {
    const r = await ROUTES[route]!();
    const csr = KEYS[key as keyof typeof KEYS]();
    const before = await counts();
    const answer = await r.send(csr);
    expect(answer.status).toBe(400);
    expect(answer.json<ErrorBody>().error).toEqual({
      code: 'ERR_CSR_KEY_UNSUPPORTED',
      message: expect.stringMatching(EXPONENT),
    });
    expect(await r.spent()).toBe(false);
    expect(await counts()).toEqual(before);
  });

  it('ok/an RSA-2048 key with e=65537 still gets a workload SVID', async () => {
    const r = await post(
      '/v1/workload-svids',
      { spiffe_id: `spiffe://${TD}/web`, csr: signedRsaCsr(rsa2048.privateKey, spkiOf(rsa2048.publicKey)) },
      node,
    );
    expect(r.status).toBe(201);
    expect(r.json<IssuanceBody>().spiffe_id).toBe(`spiffe://${TD}/web`);
  });

  describe('POST /v1/attest checks the token before the CSR signature', () => {
    // A key within the policy, but the request is signed by another key: it parses and passes the
    // key policy, and only its signature is wrong.
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const badSignature = () => signedRsaCsr(other.privateKey, spkiOf(rsa2048.publicKey));
    const unknownToken = () => `BATON1-${t.ca.keyring.pin}-${'0'.repeat(16)}.${'a'.repeat(52)}`;

    it('fail/a bad signature with an unknown token: 401 ERR_TOKEN_INVALID, the signature never checked', async () => {
      const before = await counts();
      const r = await attest(t, { method: 'join_token', token: unknownToken(), csr: badSignature() });
      expect(r.status).toBe(401);
      expect(r.json<ErrorBody>().error).toEqual({ code: 'ERR_TOKEN_INVALID', message: 'invalid join token' });
      expect(await counts()).toEqual(before);
    });

    it('fail/a bad signature with a valid token: 400 ERR_CSR_INVALID, the token not spent', async () => {
      const token = await newToken(t);
      const before = await counts();
      const r = await attest(t, { method: 'join_token', token, csr: badSignature() });
      expect(r.status).toBe(400);
      expect(r.json<ErrorBody>().error).toEqual({
        code: 'ERR_CSR_INVALID',
        message: 'csr signature does not verify',
      });
      expect(await tokenUses(token)).toBe(1);
      expect(await counts()).toEqual(before);
    });

    it('fail/a key outside the policy is refused before the token: 400 whatever the token', async () => {
      const r = await attest(t, {
        method: 'join_token',
        token: unknownToken(),
        csr: exponentOneCsr(modulus).pem,
      });
      expect(r.status).toBe(400);
      expect(r.json<ErrorBody>().error.code).toBe('ERR_CSR_KEY_UNSUPPORTED');
    });
  });
});
