import { Agent } from 'node:https';
import { connect } from 'node:tls';
import { BatonError } from '../../services/ca/src/ground/errors';
import { describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { startTestServer, type TestServer } from '../support/test-server';

describeEachBackend('HTTPS foundation', (backend) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ backend });
  });
  afterAll(() => t.close());

  it('answers unknown routes with the JSON error shape and a stable code', async () => {
    const r = await https(`${t.url}/v1/nope`, { ca: t.bundle });
    expect(r.status).toBe(404);
    expect(r.json()).toEqual({ error: { code: 'ERR_NOT_FOUND', message: 'no such route' } });
    expect(r.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.headers['x-content-type-options']).toBe('nosniff');
  });

  it.each([
    ['fail/malformed JSON', '{"csr":', 400, 'ERR_BAD_REQUEST'],
    ['fail/body over 64 KiB', JSON.stringify({ csr: 'x'.repeat(70_000) }), 413, 'ERR_BODY_TOO_LARGE'],
  ])('%s gives a clear 4xx, never a 500', async (_name, body, status, code) => {
    const r = await https(`${t.url}/v1/attest`, { method: 'POST', body, ca: t.bundle });
    expect(r.status).toBe(status);
    expect(r.json()).toEqual({ error: { code, message: expect.any(String) } });
  });

  it('serves the SPIFFE bundle as a JWK set with x509-svid keys', async () => {
    const r = await https(`${t.url}/v1/bundle.jwks`, { ca: t.bundle });
    const jwks = r.json<{
      keys: { use: string; kty: string; crv: string; x5c: string[] }[];
      spiffe_refresh_hint: number;
    }>();
    // The roots; the JWT-SVID signing keys (`use: "jwt-svid"`) follow: test/integration/jwt-keys.test.ts.
    const roots = jwks.keys.filter((k) => k.use === 'x509-svid');
    expect(roots).toHaveLength(1);
    expect(roots[0]).toMatchObject({ use: 'x509-svid', kty: 'EC', crv: 'P-256' });
    expect(
      Buffer.from(roots[0]!.x5c[0]!, 'base64').equals(t.ca.keyring.roots[0]!.record.certificateDer),
    ).toBe(true);
    expect(jwks.spiffe_refresh_hint).toBeGreaterThan(0);
  });

  it('exposes Prometheus metrics with the CA expiry gauge', async () => {
    const r = await https(`${t.url}/metrics`, { ca: t.bundle });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toMatch(
      /baton_ca_expiry_seconds\{ca_id="ca-[0-9a-f]{16}",kind="intermediate"\} \d+/,
    );
    expect(r.body.toString()).toMatch(
      /baton_http_requests_total\{route="\/v1\/bundle.jwks",method="GET",status="200"\} 1/,
    );
  });

  /** One TLS handshake (no HTTP): the error, or whether a given session was resumed. */
  const handshake = (opts: import('node:tls').ConnectionOptions) =>
    new Promise<{ err?: Error; reused?: boolean; session?: Buffer }>((resolve) => {
      let session: Buffer | undefined;
      const s = connect({ host: '127.0.0.1', port: Number(new URL(t.url).port), ca: t.bundle, ...opts });
      // TLS 1.3 delivers tickets after the handshake: wait a moment for them before closing.
      s.on('session', (x: Buffer) => (session = x));
      s.on('secureConnect', () =>
        setTimeout(() => {
          const reused = s.isSessionReused();
          s.destroy();
          resolve({ reused, session });
        }, 50),
      );
      s.on('error', (err) => resolve({ err }));
    });
  const refusesTls11 = async () => {
    const r = await handshake({ maxVersion: 'TLSv1.1', minVersion: 'TLSv1', rejectUnauthorized: false });
    expect(r.err?.message).toMatch(/protocol|version/i);
  };
  /** Offers the server the session (ticket or id) of a first connection on a second one. */
  const resumes = async (version: 'TLSv1.2' | 'TLSv1.3') => {
    const first = await handshake({ maxVersion: version, minVersion: version });
    expect(first.err).toBeUndefined();
    // Something to offer: without a session from the first connection the check would be empty.
    expect(first.session).toBeDefined();
    const second = await handshake({ maxVersion: version, minVersion: version, session: first.session });
    expect(second.err).toBeUndefined();
    return second.reused;
  };

  it('refuses TLS 1.1', refusesTls11);

  it('resumes no TLS session, so every handshake verifies the client certificate again', async () => {
    expect(await resumes('TLSv1.3')).toBe(false);
    expect(await resumes('TLSv1.2')).toBe(false);
  });

  it('renews its certificate without a restart: an open connection stays, new ones get the new certificate', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: t.bundle });
    const serialOf = (sock: unknown) =>
      (sock as import('node:tls').TLSSocket).getPeerCertificate().serialNumber.toLowerCase();
    const first = await https(`${t.url}/healthz`, { agent, ca: t.bundle });
    expect(first.status).toBe(200);
    const oldSerial = t.running.currentCertificateSerial();
    let socketSerial = '';
    agent.once('free', (sock) => (socketSerial = serialOf(sock)));
    await https(`${t.url}/healthz`, { agent, ca: t.bundle });
    expect(socketSerial).toBe(oldSerial);
    await t.running.renewCertificate();
    const newSerial = t.running.currentCertificateSerial();
    expect(newSerial).not.toBe(oldSerial);
    // The kept-alive socket still answers, on the old certificate.
    agent.once('free', (sock) => (socketSerial = serialOf(sock)));
    expect((await https(`${t.url}/healthz`, { agent, ca: t.bundle })).status).toBe(200);
    expect(socketSerial).toBe(oldSerial);
    agent.destroy();
    // A new connection gets the new certificate.
    const fresh = new Agent({ keepAlive: true, ca: t.bundle });
    fresh.once('free', (sock) => (socketSerial = serialOf(sock)));
    expect((await https(`${t.url}/healthz`, { agent: fresh, ca: t.bundle })).status).toBe(200);
    expect(socketSerial).toBe(newSerial);
    fresh.destroy();
    const rec = await t.ca.storage.certificates.findBySerial(newSerial);
    expect(rec?.kind).toBe('server');
    // The renewed secure context keeps every TLS option of the first.
    await refusesTls11();
    expect(await resumes('TLSv1.3')).toBe(false);
    expect(await resumes('TLSv1.2')).toBe(false);
  });

  it('reports not ready with 503 and Retry-After when the database is gone', async () => {
    const ok = await https(`${t.url}/readyz`, { ca: t.bundle });
    expect(ok.status).toBe(200);
    const original = t.ca.storage.ping;
    t.ca.storage.ping = async () => {
      throw new BatonError('ERR_DATABASE_UNAVAILABLE', 'down');
    };
    try {
      const r = await https(`${t.url}/readyz`, { ca: t.bundle });
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('5');
      expect(r.json()).toEqual({ status: 'not ready', checks: { database: false, ca_keys: true } });
    } finally {
      t.ca.storage.ping = original;
    }
  });
});
