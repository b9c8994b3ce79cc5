import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  CaClient,
  certificatePin,
  createCsr,
  generateKeyPair,
  NodeIdentityStore,
  NodeRotator,
} from '../../clients/rotation/src';
import { createJoinToken } from '../../services/ca/src/domain/join-token';
import { describeEachBackend } from '../support/database';
import { startTestServer, type TestServer } from '../support/test-server';
import { opensslText, run, selfSignedEc, tempDir, writeFiles } from '../support/tools';

const HOUR = 3600_000;

async function newToken(server: TestServer, pin = server.ca.keyring.pin) {
  return createJoinToken(
    { clock: server.clock, tokens: server.ca.storage.tokens },
    { role: 'worker', ttlMs: 900_000, uses: 1, createdBy: 'test', pin },
  );
}

const spki = (pem: string) =>
  createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'der' }).toString('hex');

/** A plain HTTPS server with a self-signed certificate that records every request it gets. */
async function recordingServer(bundle: string): Promise<{ url: string; seen: string[]; server: Server }> {
  const pem = selfSignedEc('/CN=127.0.0.1', ['-addext', 'subjectAltName=IP:127.0.0.1']);
  const seen: string[] = [];
  const server = createServer(pem, (req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    if (req.url === '/v1/bundle') res.end(bundle);
    else res.writeHead(500).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server };
}

describeEachBackend('baton agent: node identity', (backend) => {
  const dirs = tempDir('baton-agent-');
  let t: TestServer;
  let client: CaClient;
  const dir = join(dirs.path, 'node-a');
  const rotator = (opts: { token?: string; at?: string; server?: TestServer; client?: CaClient } = {}) =>
    new NodeRotator({
      clock: (opts.server ?? t).clock,
      client: opts.client ?? client,
      store: new NodeIdentityStore(opts.at ?? dir),
      random: () => 0.5,
      token: opts.token,
    });

  beforeAll(async () => {
    t = await startTestServer({ backend });
    client = new CaClient({ serverUrl: t.url });
  });
  afterAll(async () => {
    client.close();
    await t.close();
    dirs.cleanup();
  });

  let token: string;

  it('bootstraps: writes bundle, cert and a 0600 key; the cert is a node X.509-SVID that openssl verifies', async () => {
    expect(certificatePin(new X509Certificate(t.bundle))).toBe(t.ca.keyring.pin);
    token = (await newToken(t)).token;
    const r = await rotator({ token }).runOnce();
    expect(r.action).toBe('attested');
    const id = r.identity.nodeId;
    expect(id).toMatch(/^[a-z2-7]{16}$/);
    expect(readFileSync(join(dir, 'bundle.pem'), 'utf8')).toBe(t.bundle);
    expect(statSync(join(dir, 'node', 'key.pem')).mode & 0o777).toBe(0o600);
    const chain = readFileSync(join(dir, 'node', 'cert.pem'), 'utf8');
    const [leaf, intermediate] = chain.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    const f = writeFiles(dirs.path, { 'leaf.pem': leaf!, 'inter.pem': intermediate! });
    const verify = run('openssl', [
      'verify',
      '-x509_strict',
      '-purpose',
      'sslclient',
      '-CAfile',
      join(dir, 'bundle.pem'),
      '-untrusted',
      f['inter.pem']!,
      f['leaf.pem']!,
    ]);
    expect(verify).toEqual({ status: 0, out: `${f['leaf.pem']}: OK\n` });
    const text = opensslText(leaf!);
    expect(text).toContain(`URI:spiffe://test.example.org/node/${id}`);
    expect(text).toMatch(new RegExp(`Subject: O = test.example.org, OU = worker, CN = ${id}\\n`));
    expect(r.identity.spiffeId).toBe(`spiffe://test.example.org/node/${id}`);
    expect(new X509Certificate(leaf!).serialNumber.toLowerCase()).toBe(r.identity.serial);
    expect(spki(readFileSync(join(dir, 'node', 'key.pem'), 'utf8'))).toBe(
      new X509Certificate(leaf!).publicKey.export({ type: 'spki', format: 'der' }).toString('hex'),
    );
  });

  it('a first join is two requests: the bundle, then POST /v1/attest (issue 20)', async () => {
    /** Requests the server answered so far, by route. */
    const byRoute = async () => {
      const counts: Record<string, number> = {};
      for (const v of (await t.running.metrics.httpRequests.get()).values)
        counts[String(v.labels.route)] = (counts[String(v.labels.route)] ?? 0) + v.value;
      return counts;
    };
    const before = await byRoute();
    const r = await rotator({
      token: (await newToken(t)).token,
      at: join(dirs.path, 'node-count'),
    }).runOnce();
    expect(r.action).toBe('attested');
    const after = await byRoute();
    const delta = Object.fromEntries(
      Object.entries(after)
        .map(([route, n]) => [route, n - (before[route] ?? 0)])
        .filter(([, n]) => n !== 0),
    );
    expect(delta).toEqual({ '/v1/bundle': 1, '/v1/attest': 1 });
  });

  it('fail/the same 1-use token again is refused by the CA (401 ERR_TOKEN_INVALID)', async () => {
    const other = join(dirs.path, 'node-b');
    await expect(rotator({ token, at: other }).runOnce()).rejects.toMatchObject({
      code: 'ERR_TOKEN_INVALID',
      status: 401,
    });
    expect(existsSync(join(other, 'node', 'cert.pem'))).toBe(false);
  });

  it('fail/a rogue Baton with another root: ERR_PIN_MISMATCH, and the token never reaches it', async () => {
    const rogue = await startTestServer({ backend, trustDomain: 'rogue.example.org' });
    const rogueClient = new CaClient({ serverUrl: rogue.url });
    try {
      // A token row on the rogue too, carrying the real CA's pin: if the agent sent the token, the
      // rogue would see an attest request for it.
      const planted = await newToken(rogue, t.ca.keyring.pin);
      const at = join(dirs.path, 'node-rogue');
      await expect(
        rotator({ token: planted.token, at, server: rogue, client: rogueClient }).runOnce(),
      ).rejects.toMatchObject({
        code: 'ERR_PIN_MISMATCH',
        message: "the server's CA does not match the token's pin",
      });
      expect((await rogue.ca.storage.tokens.findById(planted.record.id))?.usesLeft).toBe(1);
      const routes = (await rogue.running.metrics.httpRequests.get()).values.map((v) => v.labels.route);
      expect(routes).toEqual(['/v1/bundle']);
      expect(existsSync(join(at, 'node'))).toBe(false);
    } finally {
      rogueClient.close();
      await rogue.close();
    }
  });

  it('fail/a man in the middle that serves the real bundle but its own TLS certificate never gets the token', async () => {
    const mitm = await recordingServer(t.bundle);
    const mitmClient = new CaClient({ serverUrl: mitm.url });
    try {
      const { token: fresh, record } = await newToken(t);
      await expect(
        rotator({ token: fresh, at: join(dirs.path, 'node-mitm'), client: mitmClient }).runOnce(),
      ).rejects.toMatchObject({ code: 'ERR_PIN_MISMATCH' });
      // The bundle holds the pinned root alone (no root rotation), so nothing else was asked for;
      // the token never left.
      expect(mitm.seen).toEqual(['GET /v1/bundle']);
      expect((await t.ca.storage.tokens.findById(record.id))?.usesLeft).toBe(1);
    } finally {
      mitmClient.close();
      await new Promise((r) => mitm.server.close(r));
    }
  });

  it('renews at refresh_at with a new key; the old certificate can no longer renew (ERR_CERT_SUPERSEDED)', async () => {
    const store = new NodeIdentityStore(dir);
    const before = store.load()!;
    expect((await rotator().runOnce()).action).toBe('none');
    t.clock.set(before.refreshAt!);
    const r = await rotator().runOnce();
    expect(r.action).toBe('renewed');
    const after = store.load()!;
    expect(after.serial).not.toBe(before.serial);
    expect(after.nodeId).toBe(before.nodeId);
    expect(spki(after.keyPem)).not.toBe(spki(before.keyPem));
    expect((await t.ca.storage.certificates.findBySerial(before.serial))?.status).toBe('superseded');

    const csr = await createCsr(await generateKeyPair());
    await expect(
      client.renew({
        csrPem: csr.pem,
        certificateChainPem: before.certificateChainPem,
        keyPem: before.keyPem,
        trustBundlePem: before.bundlePem,
      }),
    ).rejects.toMatchObject({ status: 403, code: 'ERR_CERT_SUPERSEDED' });
  });

  it('resumes after a restart from the files, without attesting again', async () => {
    const serial = new NodeIdentityStore(dir).load()!.serial;
    const unused = await newToken(t);
    const freshClient = new CaClient({ serverUrl: t.url });
    try {
      const r = await rotator({ token: unused.token, client: freshClient }).runOnce();
      expect(r.action).toBe('none');
      expect(r.identity.serial).toBe(serial);
      expect((await t.ca.storage.tokens.findById(unused.record.id))?.usesLeft).toBe(1);
    } finally {
      freshClient.close();
    }
  });

  it('an expired certificate needs a new token: a clear error without, re-attestation with one', async () => {
    const before = new NodeIdentityStore(dir).load()!;
    t.clock.set(new Date(before.notAfter.getTime() + HOUR));
    await expect(rotator().runOnce()).rejects.toMatchObject({
      code: 'ERR_CERT_EXPIRED',
      message: 'the node certificate has expired: a new token is needed',
    });
    expect(new NodeIdentityStore(dir).load()!.serial).toBe(before.serial);
    const r = await rotator({ token: (await newToken(t)).token }).runOnce();
    expect(r.action).toBe('re-attested');
    const after = new NodeIdentityStore(dir).load()!;
    expect(after.serial).not.toBe(before.serial);
    expect(after.notAfter.getTime()).toBeGreaterThan(t.clock.now().getTime());
  });
});
