import { createPublicKey, type JsonWebKey, verify } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { OpenCa } from '../../services/ca/src/ca-service';
import { loadServerConfig } from '../../services/ca/src/config';
import { JWT_KEY_GRACE_MS } from '../../services/ca/src/domain/jwt-keys';
import type { JwtKeyRecord } from '../../services/ca/src/domain/ports';
import { MAX_JWT_TTL_MS } from '../../services/ca/src/ground/ttl';
import { createLogger } from '../../services/ca/src/logger';
import { unwrapKey } from '../../services/ca/src/pki/kek';
import { type RunningServer, startServer } from '../../services/ca/src/server/start-server';
import { describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { startTestServer, type TestServer, rotateCa } from '../support/test-server';

/**
 * Issue 16, items 1, 2 and 4: the CA's JWT-SVID signing keys (stored wrapped, rotated with the
 * signing CA, a retired key published until the last token it signed has expired), the SPIFFE
 * bundle's `jwt-svid` keys and `spiffe_sequence`, and the OIDC discovery document.
 */

type BundleKey = JWK & { use: string; kid?: string; x5c?: string[] };
interface Bundle {
  keys: BundleKey[];
  spiffe_sequence: number;
  spiffe_refresh_hint: number;
}

describeEachBackend('JWT signing keys, the JWKS and OIDC discovery', (backend) => {
  let t: TestServer;
  const replicas: RunningServer[] = [];

  const bundleOf = async (url = t.url): Promise<Bundle> => {
    const r = await https(`${url}/v1/bundle.jwks`, { ca: t.bundle });
    expect(r.status).toBe(200);
    return r.json<Bundle>();
  };
  const jwtKeysOf = (b: Bundle) => b.keys.filter((k) => k.use === 'jwt-svid');
  const rows = (): Promise<JwtKeyRecord[]> => t.ca.storage.jwtKeys.list();
  /** Another replica on the same database and KEK: its own keyring, read at its start. */
  const replica = async (): Promise<RunningServer> => {
    const ca: OpenCa = { ...t.ca };
    const running = await startServer({
      config: loadServerConfig(
        { listen: '127.0.0.1:0', 'rate-limits': 'off' },
        { BATON_DATA_DIR: '/nonexistent', BATON_BACKGROUND_INTERVAL: '1h' },
      ),
      ca,
      clock: t.clock,
      log: createLogger('silent'),
    });
    replicas.push(running);
    return running;
  };
  const rotate = () => rotateCa(t);

  beforeAll(async () => {
    t = await startTestServer({ backend });
  });
  afterAll(async () => {
    for (const r of replicas) await r.close();
    await t.close();
  });

  it('ok/after init the JWKS holds the root (x509-svid) and one jwt-svid key: its public part only, kid its RFC 7638 thumbprint', async () => {
    const b = await bundleOf();
    const [key] = await rows();
    expect(b.keys.map((k) => k.use)).toEqual(['x509-svid', 'jwt-svid']);
    expect(b.keys[0]!.x5c).toHaveLength(1);
    const [jwt] = jwtKeysOf(b);
    expect(Object.keys(jwt!).sort()).toEqual(['crv', 'kid', 'kty', 'use', 'x', 'y']);
    expect(jwt).toMatchObject({ kty: 'EC', crv: 'P-256', kid: key!.kid });
    expect(await calculateJwkThumbprint(jwt!, 'sha256')).toBe(jwt!.kid);
    expect(jwt!.kid).toBe(t.ca.keyring.jwt.active!.kid);
    // The published key is the signing key's public half.
    const data = Buffer.from('eyJhbGciOiJFUzI1NiJ9.e30');
    const signature = t.ca.keyring.jwt.active!.signJws(data);
    const published = createPublicKey({ key: jwt as unknown as JsonWebKey, format: 'jwk' });
    expect(verify('sha256', data, { key: published, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
    expect(b.spiffe_refresh_hint).toBe(300);
    expect(b.spiffe_sequence).toBe(2);
  });

  it('ok/the key is stored wrapped under the KEK: the row holds no plaintext PKCS#8', async () => {
    const raw = await t.ca.knex('jwt_keys').select('kid', 'spki', 'key_alg', 'key_kek_id', 'key_blob');
    expect(raw).toHaveLength(1);
    const row = raw[0] as {
      kid: string;
      spki: Uint8Array;
      key_alg: string;
      key_kek_id: string;
      key_blob: Uint8Array;
    };
    expect(row).toMatchObject({ key_alg: 'A256GCM', key_kek_id: t.ca.kek.id });
    const pkcs8 = t.ca.keyring.jwt.active!.privateKey!.export({ type: 'pkcs8', format: 'der' });
    const d = Buffer.from(t.ca.keyring.jwt.active!.privateKey!.export({ format: 'jwk' }).d!, 'base64url');
    const blob = Buffer.from(row.key_blob);
    expect(blob.includes(pkcs8)).toBe(false);
    expect(blob.includes(d)).toBe(false);
    expect(Buffer.from(row.spki).includes(d)).toBe(false);
    const [key] = await rows();
    expect(unwrapKey(t.ca.kek, key!.wrappedKey, key!.kid)).toEqual(pkcs8);
  });

  it('ok/GET /.well-known/openid-configuration: issuer the public URL exactly, jwks_uri the OIDC key set, ES256', async () => {
    const r = await https(`${t.url}/.well-known/openid-configuration`, { ca: t.bundle });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(r.headers['cache-control']).toBe('public, max-age=300');
    expect(r.json()).toEqual({
      issuer: t.ca.installation.publicUrl,
      jwks_uri: `${t.ca.installation.publicUrl}/v1/oidc/jwks`,
      id_token_signing_alg_values_supported: ['ES256'],
      response_types_supported: ['id_token'],
      subject_types_supported: ['public'],
    });
    expect(t.ca.keyring.publicUrl).toBe(t.ca.installation.publicUrl);
    // HEAD, as on every GET route; other methods are no route.
    expect(
      (await https(`${t.url}/.well-known/openid-configuration`, { ca: t.bundle, method: 'HEAD' })).status,
    ).toBe(200);
    const post = await https(`${t.url}/.well-known/openid-configuration`, { ca: t.bundle, method: 'POST' });
    expect(post.status).toBe(404);
  });

  it('ok/GET /v1/oidc/jwks: the jwt-svid keys of the bundle as `use: "sig"`, `alg: "ES256"`, no certificate, no private part', async () => {
    const r = await https(`${t.url}/v1/oidc/jwks`, { ca: t.bundle });
    expect(r.status).toBe(200);
    expect(r.headers['cache-control']).toBe('public, max-age=300');
    const { keys } = r.json<{ keys: Record<string, unknown>[] }>();
    const fromBundle = jwtKeysOf(await bundleOf()).map(({ use: _use, ...k }) => ({
      ...k,
      use: 'sig',
      alg: 'ES256',
    }));
    expect(keys).toEqual(fromBundle);
    expect(keys.length).toBeGreaterThan(0);
    for (const k of keys) {
      expect(Object.keys(k).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    }
  });

  it('ok/a rotation publishes the new key beside the old one with a higher sequence; the old one leaves after MAX_JWT_TTL + grace, and the sequence grows again', async () => {
    const before = await bundleOf();
    const oldKid = t.ca.keyring.jwt.active!.kid;
    // A minute after init: keys are listed oldest first.
    t.clock.advance(60_000);
    const created = await rotate();
    // Until the keyring reload (the background job), the replica publishes what it had.
    expect(await bundleOf()).toEqual(before);
    await t.running.jobs.runOnce();
    const newKey = (await rows()).find((k) => k.caId === created.id)!;
    expect(t.ca.keyring.jwt.active).toMatchObject({
      kid: newKey.kid,
      caId: created.id,
      notAfter: created.notAfter,
    });

    const both = await bundleOf();
    expect(jwtKeysOf(both).map((k) => k.kid)).toEqual([oldKid, newKey.kid]);
    expect(both.spiffe_sequence).toBeGreaterThan(before.spiffe_sequence);
    const retiredAt = (await rows()).find((k) => k.kid === oldKid)!.retiredAt!;
    expect(retiredAt).toEqual(t.clock.now());

    // Still published one hour after the retirement (a token signed just before lives that long)…
    t.clock.advance(MAX_JWT_TTL_MS);
    expect((await bundleOf()).spiffe_sequence).toBe(both.spiffe_sequence);
    expect(jwtKeysOf(await bundleOf()).map((k) => k.kid)).toEqual([oldKid, newKey.kid]);
    // …and the grace (a replica's keyring reload, clock differences); then it leaves.
    t.clock.advance(JWT_KEY_GRACE_MS);
    const later = await bundleOf();
    expect(jwtKeysOf(later).map((k) => k.kid)).toEqual([newKey.kid]);
    expect(later.spiffe_sequence).toBeGreaterThan(both.spiffe_sequence);
    expect(later.keys.filter((k) => k.use === 'x509-svid')).toEqual(
      before.keys.filter((k) => k.use === 'x509-svid'),
    );
    // Nothing is deleted: the row stays, retired.
    expect((await rows()).map((k) => k.kid)).toEqual([oldKid, newKey.kid]);
  });

  it('ok/an installation whose jwt_keys is emptied gets a key at start; replicas starting at once end with one', async () => {
    // Back to the wall clock: the replicas' TLS certificates are checked against it.
    t.clock.set(new Date());
    await t.ca.knex('jwt_keys').delete();
    const [a, b] = await Promise.all([replica(), replica()]);
    const keys = await rows();
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ caId: t.ca.keyring.signing.record.id, retiredAt: null });
    for (const r of [a, b])
      expect(jwtKeysOf(await bundleOf(r.url)).map((k) => k.kid)).toEqual([keys[0]!.kid]);
    const audit = await t.ca.storage.audit.list({ event: 'jwt.key_created' });
    expect(audit.map((e) => [e.actor, e.subject])).toEqual([['system', keys[0]!.kid]]);
    // The first server notices the new key at its next keyring reload.
    await t.running.jobs.runOnce();
    expect(t.ca.keyring.jwt.active!.kid).toBe(keys[0]!.kid);
    expect(jwtKeysOf(await bundleOf()).map((k) => k.kid)).toEqual([keys[0]!.kid]);
  });
});
