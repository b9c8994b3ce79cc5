import { verify } from 'node:crypto';
import type { MintCounter } from '../../../../services/ca/src/domain/jwt-mint-tally';
import { type JwtSvidDeps, mintJwtSvid } from '../../../../services/ca/src/domain/jwt-svid';
import type { Keyring } from '../../../../services/ca/src/domain/keyring';
import type { Storage } from '../../../../services/ca/src/domain/ports';
import { errorOf } from '../../../support/errors';
import { TEST_URL } from '../../../fixtures/test-ca';
import {
  AUDIT,
  addEntry,
  addNode,
  auditRows,
  dump,
  HOUR,
  withoutFastPaths,
  type World,
  world,
} from './world';

/** mintJwtSvid (domain/jwt-svid.ts): POST /v1/jwt-svids over the in-memory ports. */

type Node = Awaited<ReturnType<typeof addNode>>;

function counter(): MintCounter & { calls: [string, string, string][] } {
  const calls: [string, string, string][] = [];
  return {
    calls,
    record: (actor, node, spiffeId, at) =>
      void calls.push([`${actor.actor}`, node, `${spiffeId}@${at.toISOString()}`]),
  };
}

const deps = (
  w: World,
  o: { storage?: Storage; keyring?: Keyring; mints?: MintCounter } = {},
): JwtSvidDeps => ({
  clock: w.clock,
  storage: o.storage ?? w.storage,
  keyring: o.keyring ?? w.keyring,
  installation: w.installation,
  mints: o.mints ?? counter(),
});

const mint = (w: World, n: Node, spiffeId: string, o: Parameters<typeof deps>[1] & { ttlMs?: number } = {}) =>
  mintJwtSvid(deps(w, o), {
    claim: n.claim,
    spiffeId,
    audience: ['aud-1', 'aud-2'],
    ttlMs: o.ttlMs ?? 300_000,
    audit: AUDIT,
  });

const part = (token: string, i: number) =>
  JSON.parse(Buffer.from(token.split('.')[i]!, 'base64url').toString('utf8')) as Record<string, unknown>;

/** ES256 over the signing input, with the public key of the keyring's active JWT key. */
const verifies = (w: World, token: string) => {
  const [h, p, s] = token.split('.') as [string, string, string];
  return verify(
    'sha256',
    Buffer.from(`${h}.${p}`),
    { key: w.keyring.jwt.active!.publicKey, dsaEncoding: 'ieee-p1363' },
    Buffer.from(s, 'base64url'),
  );
};

describe('mintJwtSvid', () => {
  it.each([
    ['the fast path (one guarded read)', false],
    ['the general path (the guard refused: the caller module, a fresh entry read)', true],
  ])('mints the entry’s SPIFFE ID, counted, nothing written: %s', async (_, general) => {
    const w = await world();
    w.clock.advance(123);
    const n = await addNode(w);
    const entry = await addEntry(w, n.node);
    const guardRefuses = withoutFastPaths(w.storage);
    const mints = counter();
    const before = await dump(w.storage);

    const m = await mint(w, n, entry.spiffeId, { storage: general ? guardRefuses : w.storage, mints });

    expect(guardRefuses.refused).toEqual(general ? ['jwt'] : []);
    const iat = Math.floor(w.clock.now().getTime() / 1000);
    expect(part(m.token, 0)).toEqual({ alg: 'ES256', kid: w.keyring.jwt.active!.kid, typ: 'JWT' });
    expect(part(m.token, 1)).toEqual({
      sub: entry.spiffeId,
      aud: ['aud-1', 'aud-2'],
      exp: iat + 300,
      iat,
      iss: TEST_URL,
    });
    expect(verifies(w, m.token)).toBe(true);
    expect(m).toMatchObject({ spiffeId: entry.spiffeId, expiresAt: new Date((iat + 300) * 1000) });
    expect(mints.calls).toEqual([
      [AUDIT.actor, n.node.id, `${entry.spiffeId}@${w.clock.now().toISOString()}`],
    ]);
    // A token is not recorded, nor audited one by one (MintTally aggregates).
    expect(await dump(w.storage)).toEqual(before);
  });

  it('ok/exp never passes the key’s notAfter (the signing CA’s), in whole seconds', async () => {
    const w = await world();
    const n = await addNode(w);
    const entry = await addEntry(w, n.node);
    const active = w.keyring.jwt.active!;
    const notAfter = new Date(w.clock.now().getTime() + 10 * 60_000 + 999);
    const keyring = { ...w.keyring, jwt: { ...w.keyring.jwt, active: { ...active, notAfter } } };
    const m = await mint(w, n, entry.spiffeId, { keyring, ttlMs: HOUR });
    expect(part(m.token, 1).exp).toBe(Math.floor(notAfter.getTime() / 1000));
    expect(m.expiresAt.getTime()).toBe(Math.floor(notAfter.getTime() / 1000) * 1000);
  });

  it.each([
    ['no active JWT key', (k: Keyring, _now: Date) => ({ ...k, jwt: { ...k.jwt, active: null } })],
    [
      'a key whose CA has expired',
      (k: Keyring, now: Date) => ({ ...k, jwt: { ...k.jwt, active: { ...k.jwt.active!, notAfter: now } } }),
    ],
  ])('fail/%s: 503 ERR_CA_UNAVAILABLE, after the caller rule; audited, not counted', async (_, spoil) => {
    const w = await world();
    const n = await addNode(w);
    const entry = await addEntry(w, n.node);
    const mints = counter();
    const keyring = spoil(w.keyring, w.clock.now());
    expect((await errorOf(mint(w, n, entry.spiffeId, { keyring, mints }))).code).toBe('ERR_CA_UNAVAILABLE');
    // A caller that may not mint learns only that.
    const other = await addNode(w);
    expect((await errorOf(mint(w, other, entry.spiffeId, { keyring }))).code).toBe('ERR_NOT_AUTHORIZED');
    expect(mints.calls).toEqual([]);
    expect((await auditRows(w.storage, 'jwt_svid.refused')).map((r) => r.details.code)).toEqual([
      'ERR_CA_UNAVAILABLE',
      'ERR_NOT_AUTHORIZED',
    ]);
  });

  it.each([
    ['another node’s entry', 'ERR_NOT_AUTHORIZED', async (w: World, _n: Node) => (await addNode(w)).claim],
    [
      'node revoked',
      'ERR_NODE_REVOKED',
      async (w: World, n: Node) => {
        await w.storage.nodes.markRevoked(n.node.id, w.clock.now(), 1);
        return n.claim;
      },
    ],
    [
      'node certificate superseded',
      'ERR_CERT_SUPERSEDED',
      async (w: World, n: Node) => {
        await w.storage.certificates.supersedeForNode(n.node.id, 'node');
        return n.claim;
      },
    ],
    [
      'node certificate revoked',
      'ERR_CERT_REVOKED',
      async (w: World, n: Node) => {
        await w.storage.revocations.revokeCertificates({ serial: n.cert.record.serial }, w.clock.now(), 1);
        return n.claim;
      },
    ],
    [
      'node certificate expired (by the injected clock)',
      'ERR_CERT_EXPIRED',
      async (w: World, n: Node) => {
        w.clock.advance(HOUR + 1);
        return n.claim;
      },
    ],
  ])('fail/%s: %s, one refused audit row, nothing minted or counted', async (_, code, arrange) => {
    const w = await world();
    const n = await addNode(w);
    const entry = await addEntry(w, n.node);
    const claim = await arrange(w, n);
    const mints = counter();
    const e = await errorOf(
      mintJwtSvid(deps(w, { mints }), {
        claim,
        spiffeId: entry.spiffeId,
        audience: ['a'],
        ttlMs: 300_000,
        audit: AUDIT,
      }),
    );
    expect(e.code).toBe(code);
    if (code === 'ERR_NOT_AUTHORIZED')
      expect(e.message).toBe('no entry for this SPIFFE ID is parented to this node');
    expect(mints.calls).toEqual([]);
    const rows = await auditRows(w.storage, 'jwt_svid.refused');
    expect(rows.map((r) => [r.actor, r.subject, r.outcome, r.details])).toEqual([
      [AUDIT.actor, null, 'failure', { code, spiffe_id: entry.spiffeId }],
    ]);
  });
});
