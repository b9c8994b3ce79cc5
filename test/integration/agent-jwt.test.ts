import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from 'jose';
import { join } from 'node:path';
import {
  AgentError,
  CaClient,
  CaClientError,
  NodeAgent,
  NodeIdentityStore,
} from '../../clients/rotation/src';
import { describeEachBackend } from '../support/database';
import { callAs, https } from '../support/https';
import { newToken } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir } from '../support/tools';

/**
 * Issue 16, item 6: the agent's JWT-SVIDs against the real POST /v1/jwt-svids. The token the agent
 * hands out verifies with `jose` against the JWKS Baton publishes; the agent refuses the SPIFFE IDs
 * of other nodes' entries itself, and the CA refuses them too.
 */

const TD = 'test.example.org';
const WEB = `spiffe://${TD}/web`;
const API = `spiffe://${TD}/api`;

describeEachBackend('baton agent: JWT-SVIDs', (backend) => {
  const dirs = tempDir('baton-agent-jwt-');
  const d1 = join(dirs.path, 'n1');
  let t: TestServer;
  let client: CaClient;
  let agent: NodeAgent;

  beforeAll(async () => {
    // The server's clock starts at the wall clock, which jose compares exp and iat with.
    t = await startTestServer({ backend, trustDomain: TD });
    const a = await t.issueAdmin('operator', 'ops');
    client = new CaClient({ serverUrl: t.url, clock: t.clock });
    const token = await newToken(t, { nodeName: 'n1' });
    agent = new NodeAgent({ dir: d1, clock: t.clock, client, random: () => 0.5, token, getuid: () => 1000 });
    await agent.runOnce();
    await newToken(t, { nodeName: 'n2' }).then((tok) =>
      new NodeAgent({
        dir: join(dirs.path, 'n2'),
        clock: t.clock,
        client,
        token: tok,
        getuid: () => 1000,
      }).runOnce(),
    );
    for (const [name, parent] of [
      ['web', 'n1'],
      ['api', 'n2'],
    ]) {
      const r = await callAs(t, { cert: a.cert, key: a.key }, 'POST', '/v1/admin/entries', {
        name,
        spiffe_id: `spiffe://${TD}/${name}`,
        parent,
      });
      expect(r.status).toBe(201);
    }
    await agent.runOnce();
  });
  afterAll(async () => {
    client.close();
    await t.close();
    dirs.cleanup();
  });

  it('ok/the agent hands out a token of its entry that jose verifies against the JWKS, and caches it', async () => {
    const svid = await agent.fetchJwtSvid(WEB, ['https://db.example.org', 'spiffe://test.example.org/db']);
    const jwks = (await https(`${t.url}/v1/bundle.jwks`, { ca: t.bundle })).json<JSONWebKeySet>();
    // jose takes a key whose `use` is anything but "sig" for no key: a relying party hands it the
    // bundle's jwt-svid keys as the signing keys they are.
    const keys = jwks.keys.filter((k) => k.use === 'jwt-svid').map((k) => ({ ...k, use: 'sig' }));
    const { payload, protectedHeader } = await jwtVerify(svid.token, createLocalJWKSet({ keys }), {
      audience: 'https://db.example.org',
      issuer: t.ca.installation.publicUrl,
      algorithms: ['ES256'],
    });
    expect(protectedHeader).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    expect(payload.sub).toBe(WEB);
    expect([...(payload.aud as string[])].sort()).toEqual([
      'https://db.example.org',
      'spiffe://test.example.org/db',
    ]);
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(svid.expiresAt).toEqual(new Date(payload.exp! * 1000));
    expect(svid.issuedAt).toEqual(new Date(payload.iat! * 1000));
    const again = await agent.fetchJwtSvid(WEB, ['spiffe://test.example.org/db', 'https://db.example.org']);
    expect(again.token).toBe(svid.token);
    const longer = await agent.fetchJwtSvid(WEB, ['https://db.example.org'], '10m');
    expect(longer.expiresAt.getTime() - longer.issuedAt!.getTime()).toBe(600_000);
  });

  it("fail/another node's entry: the agent refuses it itself, and the CA refuses it too", async () => {
    const e = await agent.fetchJwtSvid(API, ['a']).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AgentError);
    expect(e).toMatchObject({ code: 'ERR_NOT_AUTHORIZED' });
    const id = new NodeIdentityStore(d1).load()!;
    const credential = {
      certificateChainPem: id.certificateChainPem,
      keyPem: id.keyPem,
      trustBundlePem: id.bundlePem,
    };
    const server = await client
      .mintJwtSvid({ ...credential, spiffeId: API, audience: ['a'] })
      .catch((x: unknown) => x);
    expect(server).toBeInstanceOf(CaClientError);
    expect(server).toMatchObject({
      code: 'ERR_NOT_AUTHORIZED',
      status: 403,
      message: 'no entry for this SPIFFE ID is parented to this node',
    });
  });

  it("fail/the CA's refusal of a field comes through as it is", async () => {
    const many = Array.from({ length: 11 }, (_, i) => `aud-${i}`);
    await expect(agent.fetchJwtSvid(WEB, many)).rejects.toMatchObject({
      name: 'CaClientError',
      code: 'ERR_BAD_REQUEST',
      status: 400,
      message: expect.stringMatching(/^audience: /),
    });
  });
});
