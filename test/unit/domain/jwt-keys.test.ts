import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import { caSetVersion, rotateSigningCa } from '../../../services/ca/src/domain/ca-rotation';
import {
  createJwtKey,
  ensureJwtKey,
  JWT_KEY_GRACE_MS,
  jwksSequence,
  jwkThumbprint,
  jwtKeyLeavesAt,
  jwtPublicJwk,
  loadJwtKeyring,
  publishedJwtKeys,
  readKeyState,
} from '../../../services/ca/src/domain/jwt-keys';
import { loadKeyring } from '../../../services/ca/src/domain/keyring';
import type { CaRecord, JwtKeyRecord, Storage } from '../../../services/ca/src/domain/ports';
import { BatonError } from '../../../services/ca/src/ground/errors';
import { MAX_JWT_TTL_MS } from '../../../services/ca/src/ground/ttl';
import { kekFromBase64, unwrapKey } from '../../../services/ca/src/pki/kek';
import { TEST_URL, testCa } from '../../fixtures/test-ca';
import { errorOf } from '../../support/errors';
import { createMemoryStorage } from '../../support/memory-storage';
import { AUDIT, auditRows, DAY, HOUR, type World, world } from './use-cases/world';

/** domain/jwt-keys.ts: JWT-SVID signing keys, their publication in the JWKS and its sequence. */

const T0 = new Date('2026-12-07T12:00:00.000Z');
const MINUTE = 60_000;
const at = (ms: number) => new Date(T0.getTime() + ms);
const otherKek = () => kekFromBase64(randomBytes(32).toString('base64'), 'other');
const signingOf = (ca: ReturnType<typeof testCa>): CaRecord => ca.keyring.signing.record;
const testCaKek = testCa().kek;

describe('jwkThumbprint (RFC 7638)', () => {
  it('ok/is the base64url SHA-256 of {"crv","kty","x","y"} in that order, without whitespace', () => {
    const jwk = {
      kty: 'EC',
      crv: 'P-256',
      x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU',
      y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',
    } as const;
    const json = `{"crv":"P-256","kty":"EC","x":"${jwk.x}","y":"${jwk.y}"}`;
    expect(jwkThumbprint(jwk)).toBe(createHash('sha256').update(json).digest('base64url'));
  });

  it("ok/agrees with jose's calculateJwkThumbprint on fresh keys", async () => {
    for (let i = 0; i < 5; i++) {
      const { record } = createJwtKey({ kek: testCa().kek, caId: 'ca-x', now: T0 });
      const jwk = jwtPublicJwk(record.spki);
      expect(record.kid).toBe(await calculateJwkThumbprint(jwk, 'sha256'));
      expect(record.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    }
  });
});

describe('createJwtKey', () => {
  it('ok/a P-256 key for the CA, kid its thumbprint, not retired, the PKCS#8 wrapped under the KEK with the kid bound', () => {
    const { kek } = testCa();
    const { record, privateKey: inMemory } = createJwtKey({ kek, caId: 'ca-0011', now: T0 });
    const privateKey = inMemory!;
    expect(privateKey.asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
    expect(record).toMatchObject({ caId: 'ca-0011', createdAt: T0, retiredAt: null });
    expect(record.spki).toEqual(createPublicKey(privateKey).export({ type: 'spki', format: 'der' }));
    expect(record.kid).toBe(jwkThumbprint(jwtPublicJwk(record.spki)));
    expect(record.wrappedKey).toMatchObject({ alg: 'A256GCM', kekId: kek.id });

    const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
    // Stored wrapped: the blob holds no plaintext PKCS#8, nor its private scalar.
    expect(record.wrappedKey.blob.includes(pkcs8)).toBe(false);
    const d = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
    expect(record.wrappedKey.blob.includes(d)).toBe(false);
    // Round trip under the KEK, bound to the kid.
    expect(unwrapKey(kek, record.wrappedKey, record.kid)).toEqual(pkcs8);
  });

  it.each([
    [
      'another kid as additional data (a blob moved to another row)',
      (r: JwtKeyRecord) => unwrapKey(testCaKek, r.wrappedKey, `${r.kid}x`),
    ],
    ['another KEK', (r: JwtKeyRecord) => unwrapKey(otherKek(), r.wrappedKey, r.kid)],
    [
      'a tampered blob',
      (r: JwtKeyRecord) => {
        const blob = Buffer.from(r.wrappedKey.blob);
        blob[20] = blob[20]! ^ 1;
        return unwrapKey(testCaKek, { ...r.wrappedKey, blob }, r.kid);
      },
    ],
  ])('fail/unwrapping with %s is ERR_KEK_INVALID', (_name, unwrap) => {
    const { record } = createJwtKey({ kek: testCaKek, caId: 'ca-0011', now: T0 });
    expect(errorOf(() => unwrap(record)).code).toBe('ERR_KEK_INVALID');
  });

  it('ok/the public JWK has exactly kty, crv, x, y: never d', () => {
    const { record } = createJwtKey({ kek: testCaKek, caId: 'ca-0011', now: T0 });
    expect(Object.keys(jwtPublicJwk(record.spki)).sort()).toEqual(['crv', 'kty', 'x', 'y']);
  });
});

describe('loadJwtKeyring', () => {
  it("ok/active: the signing CA's unretired key, unwrapped, signing ES256 that its published key verifies", () => {
    const ca = testCa({ now: T0.toISOString() });
    const signingCa = signingOf(ca);
    const older = createJwtKey({ kek: ca.kek, caId: 'ca-older', now: at(-DAY) }).record;
    const retired = { ...older, retiredAt: at(-HOUR) };
    const records = [ca.jwtKeys[0]!, retired];
    const jwt = loadJwtKeyring(records, ca.kek, signingCa);

    expect(jwt.active).toMatchObject({
      kid: ca.jwtKeys[0]!.kid,
      caId: signingCa.id,
      notAfter: signingCa.notAfter,
    });
    // Every key, retired ones included, oldest first; public parts only.
    expect(jwt.keys).toEqual([
      { kid: retired.kid, spki: retired.spki, retiredAt: retired.retiredAt },
      { kid: ca.jwtKeys[0]!.kid, spki: ca.jwtKeys[0]!.spki, retiredAt: null },
    ]);
    const data = Buffer.from('header.payload');
    const signature = jwt.active!.signJws(data);
    const published = createPublicKey({ key: jwt.keys[1]!.spki, format: 'der', type: 'spki' });
    expect(verify('sha256', data, { key: published, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
  });

  it('ok/no active key when the signing CA has none, or only a retired one', () => {
    const ca = testCa();
    expect(loadJwtKeyring([], ca.kek, signingOf(ca))).toEqual({ active: null, keys: [] });
    const retired = { ...ca.jwtKeys[0]!, retiredAt: T0 };
    expect(loadJwtKeyring([retired], ca.kek, signingOf(ca)).active).toBeNull();
    // Another CA's unretired key is published, but does not sign.
    expect(loadJwtKeyring(ca.jwtKeys, ca.kek, { ...signingOf(ca), id: 'ca-other' }).active).toBeNull();
  });

  it('fail/a wrong KEK is ERR_KEK_INVALID, as for the CA keys', () => {
    const ca = testCa();
    expect(errorOf(() => loadJwtKeyring(ca.jwtKeys, otherKek(), signingOf(ca))).code).toBe('ERR_KEK_INVALID');
  });

  it('fail/a row whose public key is not its private key is refused (ERR_CA_UNAVAILABLE)', () => {
    const ca = testCa();
    const other = createJwtKey({ kek: ca.kek, caId: 'x', now: T0 }).record;
    const load = () => loadJwtKeyring([{ ...ca.jwtKeys[0]!, spki: other.spki }], ca.kek, signingOf(ca));
    expect(errorOf(load).code).toBe('ERR_CA_UNAVAILABLE');
  });

  it('ok/loadKeyring carries it, with the public URL (the issuer)', () => {
    const ca = testCa();
    const keyring = loadKeyring(ca.records, ca.kek, TEST_URL, ca.jwtKeys);
    expect(keyring.publicUrl).toBe(TEST_URL);
    expect(keyring.jwt.active?.kid).toBe(ca.jwtKeys[0]!.kid);
  });
});

describe('publishedJwtKeys and jwksSequence, by the clock', () => {
  const ca = testCa({ now: T0.toISOString() });
  const first = ca.jwtKeys[0]!;
  const second = createJwtKey({ kek: ca.kek, caId: 'ca-second', now: at(DAY) }).record;
  const retiredAt = at(DAY);
  /** After a rotation at T0 + 1 day: the first key retired, the second current. */
  const rotated = [{ ...first, retiredAt }, second];
  const keyringOf = (records: JwtKeyRecord[]) =>
    loadJwtKeyring(records, ca.kek, { ...signingOf(ca), id: 'ca-second' });
  const kids = (records: JwtKeyRecord[], now: Date) =>
    publishedJwtKeys(keyringOf(records), now).map((k) => k.kid);

  it('ok/a retired key stays published MAX_JWT_TTL_MS (1 h) plus the grace after its retirement, then leaves', () => {
    expect(MAX_JWT_TTL_MS).toBe(HOUR);
    expect(jwtKeyLeavesAt(retiredAt)).toEqual(new Date(retiredAt.getTime() + HOUR + JWT_KEY_GRACE_MS));
    expect(kids([first], at(DAY))).toEqual([first.kid]);
    expect(kids(rotated, retiredAt)).toEqual([first.kid, second.kid]);
    expect(kids(rotated, new Date(jwtKeyLeavesAt(retiredAt).getTime() - 1))).toEqual([first.kid, second.kid]);
    expect(kids(rotated, jwtKeyLeavesAt(retiredAt))).toEqual([second.kid]);
    expect(kids(rotated, at(365 * DAY))).toEqual([second.kid]);
  });

  it('ok/the sequence grows on every change of the published set, and never goes back as time passes', () => {
    const leaves = jwtKeyLeavesAt(retiredAt).getTime();
    const before = jwksSequence(1, [first], at(DAY - 1));
    const afterRotation = jwksSequence(1, rotated, retiredAt);
    const afterLeaving = jwksSequence(1, rotated, new Date(leaves));
    expect(before).toBe(2);
    expect(afterRotation).toBeGreaterThan(before);
    expect(jwksSequence(1, rotated, new Date(leaves - 1))).toBe(afterRotation);
    expect(afterLeaving).toBeGreaterThan(afterRotation);
    // A sweep of the clock: the sequence changes exactly when the published set does.
    let last = 0;
    let lastSet = '';
    for (let t = retiredAt.getTime(); t < leaves + 10 * MINUTE; t += MINUTE / 2) {
      const seq = jwksSequence(1, rotated, new Date(t));
      const set = kids(rotated, new Date(t)).join(',');
      expect(seq).toBeGreaterThanOrEqual(last);
      if (last !== 0) expect(seq !== last).toBe(set !== lastSet);
      last = seq;
      lastSet = set;
    }
    // The keyring's keys serve as well as the rows (the route counts the keyring's).
    expect(jwksSequence(1, keyringOf(rotated).keys, new Date(leaves))).toBe(afterLeaving);
    // A new root counts too.
    expect(jwksSequence(2, rotated, new Date(leaves))).toBe(afterLeaving + 1);
  });
});

describe('ensureJwtKey', () => {
  /** An installation from before JWT-SVIDs: its CAs, no JWT key. */
  const legacy = async (): Promise<World> => {
    const w = await world();
    const storage = createMemoryStorage();
    await storage.cas.initialize(w.installation, w.ca.records);
    return { ...w, storage };
  };
  const ensure = (w: World, storage: Storage = w.storage) =>
    ensureJwtKey({ storage, kek: w.ca.kek, clock: w.clock });

  it('ok/makes the signing CA a key when it has none, audited, and returns the state read after', async () => {
    const w = await legacy();
    const state = await ensure(w);
    expect(state.jwtKeys).toHaveLength(1);
    expect(state.jwtKeys[0]).toMatchObject({
      caId: w.keyring.signing.record.id,
      retiredAt: null,
      createdAt: w.clock.now(),
    });
    expect(state).toEqual(await readKeyState(w.storage));
    const rows = await auditRows(w.storage, 'jwt.key_created');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      actor: 'system',
      subject: state.jwtKeys[0]!.kid,
      details: { ca: w.keyring.signing.record.id },
    });
    // It loads and signs.
    expect(loadKeyring(state.cas, w.ca.kek, TEST_URL, state.jwtKeys).jwt.active?.kid).toBe(
      state.jwtKeys[0]!.kid,
    );
  });

  it('ok/writes nothing when the signing CA has its key', async () => {
    const w = await world();
    const before = await readKeyState(w.storage);
    expect(await ensure(w)).toEqual(before);
    expect(await auditRows(w.storage, 'jwt.key_created')).toEqual([]);
  });

  it('ok/replicas starting at once end with one key', async () => {
    const w = await legacy();
    const states = await Promise.all([ensure(w), ensure(w), ensure(w)]);
    const keys = await w.storage.jwtKeys.list();
    expect(keys).toHaveLength(1);
    for (const s of states) expect(s.jwtKeys).toEqual(keys);
  });

  it('ok/a signing CA rotated by an older version gets a key, and the other keys are retired', async () => {
    const w = await world();
    const legacyRotation: Storage = {
      ...w.storage,
      // What an older `ca rotate` did: the new intermediate only.
      transaction: (fn) =>
        w.storage.transaction((tx) =>
          fn({
            ...tx,
            jwtKeys: { ...tx.jwtKeys, insert: async () => undefined, retireOthers: async () => 0 },
          }),
        ),
    };
    w.clock.advance(DAY);
    const created = await rotateSigningCa(
      {
        clock: w.clock,
        storage: legacyRotation,
        kek: w.ca.kek,
        keyring: w.keyring,
        installation: w.installation,
        publicUrl: TEST_URL,
      },
      AUDIT,
    );
    expect((await w.storage.jwtKeys.list()).map((k) => k.caId)).toEqual([w.keyring.signing.record.id]);
    w.clock.advance(MINUTE);
    const state = await ensure(w);
    expect(state.jwtKeys.map((k) => [k.caId, k.retiredAt])).toEqual([
      [w.keyring.signing.record.id, w.clock.now()],
      [created.id, null],
    ]);
  });

  it('ok/a rotation that committed meanwhile wins: the key is not added', async () => {
    const w = await legacy();
    const rotatedMeanwhile: Storage = {
      ...w.storage,
      transaction: (fn) =>
        w.storage.transaction((tx) =>
          fn({
            ...tx,
            cas: {
              ...tx.cas,
              listCas: async () => (await tx.cas.listCas()).map((c) => ({ ...c, active: c.kind === 'root' })),
            },
          }),
        ),
    };
    await ensure(w, rotatedMeanwhile);
    expect(await w.storage.jwtKeys.list()).toEqual([]);
    expect(await auditRows(w.storage, 'jwt.key_created')).toEqual([]);
  });

  it('ok/a replica whose KEK is not the CA keys’ makes no key (it could not be unwrapped where it matters)', async () => {
    const w = await legacy();
    await ensureJwtKey({ storage: w.storage, kek: otherKek(), clock: w.clock });
    expect(await w.storage.jwtKeys.list()).toEqual([]);
  });

  it('fail/another failure is thrown, and nothing is written', async () => {
    const w = await legacy();
    const broken: Storage = {
      ...w.storage,
      transaction: (fn) =>
        w.storage.transaction((tx) =>
          fn({
            ...tx,
            audit: {
              ...tx.audit,
              append: async () => Promise.reject(new BatonError('ERR_DATABASE_UNAVAILABLE', 'down')),
            },
          }),
        ),
    };
    expect((await errorOf(ensure(w, broken))).code).toBe('ERR_DATABASE_UNAVAILABLE');
    expect(await w.storage.jwtKeys.list()).toEqual([]);
  });
});

describe('rotation and the JWT keys', () => {
  it("ok/the new intermediate gets its key in the rotation's transaction; the old one is retired then, still published for an hour and the grace", async () => {
    const w = await world();
    const oldKid = w.keyring.jwt.active!.kid;
    const versionBefore = caSetVersion(await w.storage.cas.listCas(), await w.storage.jwtKeys.list());
    w.clock.advance(DAY);
    const now = w.clock.now();
    const created = await rotateSigningCa(
      {
        clock: w.clock,
        storage: w.storage,
        kek: w.ca.kek,
        keyring: w.keyring,
        installation: w.installation,
        publicUrl: TEST_URL,
      },
      AUDIT,
    );
    const { cas, jwtKeys } = await readKeyState(w.storage);
    expect(jwtKeys.map((k) => [k.caId, k.retiredAt])).toEqual([
      [w.keyring.signing.record.id, now],
      [created.id, null],
    ]);
    expect(caSetVersion(cas, jwtKeys)).not.toBe(versionBefore);
    const rows = await auditRows(w.storage, 'ca.rotated');
    expect(rows[0]!.details).toMatchObject({ jwt_kid: jwtKeys[1]!.kid });

    const reloaded = loadKeyring(cas, w.ca.kek, TEST_URL, jwtKeys);
    expect(reloaded.jwt.active).toMatchObject({
      kid: jwtKeys[1]!.kid,
      caId: created.id,
      notAfter: created.notAfter,
    });
    expect(publishedJwtKeys(reloaded.jwt, now).map((k) => k.kid)).toEqual([oldKid, jwtKeys[1]!.kid]);
    expect(publishedJwtKeys(reloaded.jwt, jwtKeyLeavesAt(now)).map((k) => k.kid)).toEqual([jwtKeys[1]!.kid]);
  });

  it('ok/a retirement alone changes the version (a replica reloads its keyring)', () => {
    const ca = testCa();
    const retired = [{ ...ca.jwtKeys[0]!, retiredAt: T0 }];
    expect(caSetVersion(ca.records, ca.jwtKeys)).not.toBe(caSetVersion(ca.records, retired));
    expect(caSetVersion(ca.records, ca.jwtKeys)).not.toBe(caSetVersion(ca.records));
  });
});
