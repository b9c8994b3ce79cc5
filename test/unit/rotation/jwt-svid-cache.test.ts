import {
  AgentError,
  CaClientError,
  JWT_SVID_CACHE_MAX_ENTRIES,
  JwtSvidCache,
  type JwtSvidCacheOptions,
} from '../../../clients/rotation/src';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { FakeJwtIssuer, spiffeIdOf } from './fake-agent-ca';

const WEB = spiffeIdOf('web');
const API = spiffeIdOf('api');
const S = 1000;

function setup(o: Partial<JwtSvidCacheOptions> = {}) {
  const clock = new FakeClock('2026-03-01T12:00:00Z');
  const ca = new FakeJwtIssuer(clock);
  const ids = { current: new Set([WEB, API]) as Set<string> | undefined };
  const cache = new JwtSvidCache({ clock, mint: ca.mint, entrySpiffeIds: () => ids.current, ...o });
  return { clock, ca, ids, cache };
}

/** Lets the promises that are ready run (a mint answered by the fake, its callers). */
const settle = () => new Promise((r) => setImmediate(r));

describe('JwtSvidCache', () => {
  it('ok/serves the cached token until half its lifetime, then mints a new one', async () => {
    const { clock, ca, cache } = setup();
    const first = await cache.get(WEB, ['https://db.example.org']);
    expect(ca.count).toBe(1);
    expect(first.spiffeId).toBe(WEB);
    expect(first.token.split('.')).toHaveLength(3);
    clock.advance(150 * S - 1); // the token lives 5 minutes: half is 150 s
    expect((await cache.get(WEB, ['https://db.example.org'])).token).toBe(first.token);
    expect(ca.count).toBe(1);
    clock.advance(1);
    const second = await cache.get(WEB, ['https://db.example.org']);
    expect(ca.count).toBe(2);
    expect(second.token).not.toBe(first.token);
    clock.advance(150 * S - 1);
    expect((await cache.get(WEB, ['https://db.example.org'])).token).toBe(second.token);
    expect(ca.count).toBe(2);
  });

  it("ok/half-life counts from the token's iat, or from the answer's arrival when iat is missing or later", async () => {
    const { clock, ca, cache } = setup();
    // Issued 60 s before it arrived, expires 300 s after: half-life is at iat + 180 s = arrival + 120 s.
    ca.iatOffsetMs = -60 * S;
    const early = await cache.get(WEB, ['a']);
    clock.advance(120 * S - 1);
    expect((await cache.get(WEB, ['a'])).token).toBe(early.token);
    clock.advance(1);
    expect((await cache.get(WEB, ['a'])).token).not.toBe(early.token);
    expect(ca.count).toBe(2);

    for (const offset of [null, 30 * S]) {
      // No iat, or an iat 30 s in our future (the CA's clock is ahead): from arrival, 150 s.
      ca.iatOffsetMs = offset;
      const t = await cache.get(API, [`b${offset}`]);
      clock.advance(150 * S - 1);
      expect((await cache.get(API, [`b${offset}`])).token).toBe(t.token);
      clock.advance(1);
      expect((await cache.get(API, [`b${offset}`])).token).not.toBe(t.token);
    }
    expect(ca.count).toBe(6);
  });

  it('ok/the key is the SPIFFE ID, the audience as a set, and the ttl', async () => {
    const { ca, cache } = setup();
    const t = await cache.get(WEB, ['b', 'a']);
    expect(ca.calls[0]).toEqual({ spiffeId: WEB, audience: ['a', 'b'] });
    expect((await cache.get(WEB, ['a', 'b', 'a'])).token).toBe(t.token);
    expect((await cache.get(WEB, ['b', 'b', 'a'])).token).toBe(t.token);
    expect(ca.count).toBe(1);
    // A subset, a superset, another SPIFFE ID and another ttl are each a token of their own.
    await cache.get(WEB, ['a']);
    await cache.get(WEB, ['a', 'b', 'c']);
    await cache.get(API, ['a', 'b']);
    await cache.get(WEB, ['a', 'b'], '10m');
    expect(ca.calls.slice(1)).toEqual([
      { spiffeId: WEB, audience: ['a'] },
      { spiffeId: WEB, audience: ['a', 'b', 'c'] },
      { spiffeId: API, audience: ['a', 'b'] },
      { spiffeId: WEB, audience: ['a', 'b'], ttl: '10m' },
    ]);
    expect(cache.size).toBe(5);
  });

  it('ok/concurrent gets of one key share one request', async () => {
    const { ca, cache } = setup();
    const release = ca.hold();
    const gets = [cache.get(WEB, ['a', 'b']), cache.get(WEB, ['b', 'a']), cache.get(WEB, ['a', 'b', 'b'])];
    const other = cache.get(API, ['a', 'b']);
    await settle();
    expect(ca.calls).toEqual([
      { spiffeId: WEB, audience: ['a', 'b'] },
      { spiffeId: API, audience: ['a', 'b'] },
    ]);
    release();
    const [x, y, z] = await Promise.all(gets);
    expect(y!.token).toBe(x!.token);
    expect(z!.token).toBe(x!.token);
    expect((await other).token).not.toBe(x!.token);
    expect((await cache.get(WEB, ['a', 'b'])).token).toBe(x!.token);
    expect(ca.count).toBe(2);
  });

  it('fail/a failed mint reaches every caller that shared it and is not cached', async () => {
    const { ca, cache } = setup();
    const release = ca.hold();
    ca.failures.push(new CaClientError('ERR_RATE_LIMITED', 'slow down', 429, 2000));
    const gets = [cache.get(WEB, ['a']), cache.get(WEB, ['a'])];
    await settle();
    release();
    for (const g of gets) await expect(g).rejects.toMatchObject({ code: 'ERR_RATE_LIMITED' });
    expect(ca.count).toBe(1);
    expect(cache.size).toBe(0);
    const t = await cache.get(WEB, ['a']);
    expect(ca.count).toBe(2);
    expect((await cache.get(WEB, ['a'])).token).toBe(t.token);
    expect(ca.count).toBe(2);
  });

  it('ok/past half-life, while the CA cannot answer, the token is served until it expires; a refusal drops it', async () => {
    const { clock, ca, cache } = setup();
    const t = await cache.get(WEB, ['a']);
    clock.advance(200 * S);
    ca.failures.push(new CaClientError('ERR_SERVER_UNREACHABLE', 'no route to host'));
    ca.failures.push(new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503));
    expect((await cache.get(WEB, ['a'])).token).toBe(t.token);
    expect((await cache.get(WEB, ['a'])).token).toBe(t.token);
    expect(ca.count).toBe(3); // each get past half-life asked again
    clock.advance(100 * S); // expired
    ca.failures.push(new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503));
    await expect(cache.get(WEB, ['a'])).rejects.toMatchObject({ code: 'ERR_CA_UNAVAILABLE' });

    const u = await cache.get(WEB, ['a']);
    expect(u.token).not.toBe(t.token);
    clock.advance(200 * S);
    ca.failures.push(new CaClientError('ERR_NOT_AUTHORIZED', 'no entry for this SPIFFE ID', 403));
    ca.failures.push(new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503));
    await expect(cache.get(WEB, ['a'])).rejects.toMatchObject({ code: 'ERR_NOT_AUTHORIZED' });
    expect(cache.size).toBe(0);
    // The refused token is gone: the outage that follows has nothing to fall back on.
    await expect(cache.get(WEB, ['a'])).rejects.toMatchObject({ code: 'ERR_CA_UNAVAILABLE' });
  });

  it('ok/expired tokens are dropped, and past maxEntries the oldest minted go first', async () => {
    const { clock, ca, cache } = setup({ maxEntries: 3 });
    await cache.get(WEB, ['old']);
    clock.advance(300 * S); // expired
    await cache.get(WEB, ['a1']);
    expect(cache.size).toBe(1);
    clock.advance(10 * S);
    await cache.get(WEB, ['a2']);
    clock.advance(10 * S);
    await cache.get(WEB, ['a3']);
    await cache.get(WEB, ['a1']); // served from the cache: it stays the oldest minted
    expect(ca.count).toBe(4);
    await cache.get(WEB, ['a4']);
    expect(cache.size).toBe(3);
    expect(ca.count).toBe(5);
    for (const a of ['a2', 'a3', 'a4']) await cache.get(WEB, [a]);
    expect(ca.count).toBe(5);
    await cache.get(WEB, ['a1']); // evicted: minted again, which evicts a2
    expect(ca.count).toBe(6);
    for (const a of ['a3', 'a4', 'a1']) await cache.get(WEB, [a]);
    expect(ca.count).toBe(6);
    await cache.get(WEB, ['a2']);
    expect(ca.count).toBe(7);
    expect(cache.size).toBe(3);
  });

  it('ok/the default bound is 1,000 tokens', async () => {
    const { ca, cache } = setup();
    expect(JWT_SVID_CACHE_MAX_ENTRIES).toBe(1000);
    for (let i = 0; i <= 1000; i++) await cache.get(WEB, [`aud-${i}`]);
    expect(cache.size).toBe(1000);
    await cache.get(WEB, ['aud-1000']);
    expect(ca.count).toBe(1001);
    await cache.get(WEB, ['aud-0']);
    expect(ca.count).toBe(1002);
  });

  it('ok/invalidate(spiffeId) drops the tokens of that SPIFFE ID, invalidate() all of them', async () => {
    const { ca, cache } = setup();
    await cache.get(WEB, ['a']);
    await cache.get(WEB, ['b']);
    const api = await cache.get(API, ['a']);
    cache.invalidate(WEB);
    expect(cache.size).toBe(1);
    expect((await cache.get(API, ['a'])).token).toBe(api.token);
    expect(ca.count).toBe(3);
    await cache.get(WEB, ['a']);
    expect(ca.count).toBe(4);
    cache.invalidate();
    expect(cache.size).toBe(0);
    await cache.get(API, ['a']);
    expect(ca.count).toBe(5);
  });

  it('ok/a mint in flight when invalidate() comes is handed to its callers but not kept', async () => {
    const { ca, cache } = setup();
    let release = ca.hold();
    const dropped = cache.get(WEB, ['a']);
    await settle();
    cache.invalidate();
    release();
    await dropped;
    await cache.get(WEB, ['a']);
    expect(ca.count).toBe(2);

    release = ca.hold();
    const before = cache.get(API, ['a']);
    await settle();
    cache.invalidate(API);
    const after = cache.get(API, ['a']); // does not join the detached request
    await settle();
    expect(ca.count).toBe(4);
    release();
    const [b, a] = await Promise.all([before, after]);
    expect(a.token).not.toBe(b.token);
    expect((await cache.get(API, ['a'])).token).toBe(a.token);
    expect(ca.count).toBe(4);
  });

  it("fail/refuses, without asking the CA, a SPIFFE ID that is not one of this node's entries", async () => {
    const { ca, ids, cache } = setup();
    const e = await cache.get(spiffeIdOf('db'), ['a']).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AgentError);
    expect(e).toMatchObject({ code: 'ERR_NOT_AUTHORIZED' });
    expect((e as Error).message).toContain(
      `${spiffeIdOf('db')} is not the SPIFFE ID of an entry of this node`,
    );
    // An entry deleted since: refused from the cache too.
    await cache.get(API, ['a']);
    ids.current = new Set([WEB]);
    await expect(cache.get(API, ['a'])).rejects.toMatchObject({ code: 'ERR_NOT_AUTHORIZED' });
    ids.current = undefined;
    await expect(cache.get(WEB, ['a'])).rejects.toMatchObject({ code: 'ERR_NOT_READY' });
    expect(ca.count).toBe(1);
  });

  it('fail/refuses an empty audience or ttl without asking the CA', async () => {
    const { ca, cache } = setup();
    for (const audience of [[], [''], ['a', ''], [7] as unknown as string[]])
      await expect(cache.get(WEB, audience)).rejects.toMatchObject({
        code: 'ERR_BAD_REQUEST',
        message: expect.stringMatching(/^audience: /),
      });
    await expect(cache.get(WEB, ['a'], '')).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST' });
    expect(ca.count).toBe(0);
    expect(
      () => new JwtSvidCache({ ...setup(), mint: ca.mint, entrySpiffeIds: () => undefined, maxEntries: 0 }),
    ).toThrow(RangeError);
  });

  it('fail/a token that has expired when it arrives is refused and not cached', async () => {
    const { clock, ca } = setup();
    const mint = ca.mint;
    const late = new JwtSvidCache({
      clock,
      entrySpiffeIds: () => new Set([WEB]),
      mint: async (r) => {
        const t = await mint(r);
        clock.advance(301 * S); // the answer took longer than the token lives
        return t;
      },
    });
    await expect(late.get(WEB, ['a'])).rejects.toMatchObject({ code: 'ERR_BAD_RESPONSE' });
    expect(late.size).toBe(0);
  });
});
