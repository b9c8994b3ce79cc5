import type { NodeRecord, TokenForAttestation, TokenRecord } from '../../../services/ca/src/domain/ports';
import { tokenCache } from '../../../services/ca/src/domain/token-cache';

const token = (id: string, over: Partial<TokenRecord> = {}): TokenRecord => ({
  id,
  secretHash: Buffer.alloc(32, 1),
  role: 'worker',
  expiresAt: new Date(3_600_000),
  usesAllowed: 10,
  usesLeft: 10,
  nodeName: null,
  nodeTtlMs: null,
  createdBy: 'test',
  createdAt: new Date(0),
  ...over,
});

const node: NodeRecord = {
  id: 'web-1',
  role: 'worker',
  status: 'active',
  attestationMethod: 'join_token',
  certTtlMs: null,
  createdAt: new Date(0),
  lastAttestedAt: new Date(0),
  lastSeenAt: null,
  revokedAt: null,
  revocationReason: null,
};

/** A repository over a map, counting reads. */
function repo() {
  const rows = new Map<string, TokenForAttestation>();
  const r = {
    reads: 0,
    rows,
    findForAttestation: async (id: string) => {
      r.reads++;
      return rows.get(id) ?? null;
    },
  };
  return r;
}

describe('tokenCache', () => {
  let now = 0;
  const nowMs = () => now;

  it('ok/a multi-use token: read through once, then from memory until the TTL', async () => {
    const r = repo();
    r.rows.set('t1', { token: token('t1'), boundNode: null });
    const c = tokenCache(r, { nowMs, ttlMs: 1000 });
    expect(await c.lookup('t1')).toEqual({ token: token('t1'), boundNode: null });
    // The uses left as first read: the recording statement, not the cache, counts them.
    r.rows.set('t1', { token: token('t1', { usesLeft: 3 }), boundNode: null });
    expect((await c.lookup('t1'))!.token.usesLeft).toBe(10);
    expect(r.reads).toBe(1);
    now += 1000;
    expect((await c.lookup('t1'))!.token.usesLeft).toBe(3);
    expect(r.reads).toBe(2);
  });

  it.each([
    ['a 1-use token', { token: token('t1', { usesAllowed: 1, usesLeft: 1 }), boundNode: null }],
    [
      'a token bound to a node name (and that node)',
      { token: token('t1', { usesAllowed: 1, usesLeft: 1, nodeName: 'web-1' }), boundNode: node },
    ],
  ] as [string, TokenForAttestation][])('ok/%s is never kept', async (_name, found) => {
    const r = repo();
    r.rows.set('t1', found);
    const c = tokenCache(r, { nowMs });
    expect(await c.lookup('t1')).toEqual(found);
    expect(await c.lookup('t1')).toEqual(found);
    expect(r.reads).toBe(2);
    expect(c.size).toBe(0);
  });

  it('ok/a miss is never cached: a token created a moment later is found at once', async () => {
    const r = repo();
    const c = tokenCache(r, { nowMs });
    expect(await c.lookup('t2')).toBeNull();
    r.rows.set('t2', { token: token('t2'), boundNode: null });
    expect((await c.lookup('t2'))!.token.id).toBe('t2');
    expect(r.reads).toBe(2);
  });

  it('ok/forget drops a token that turned out spent: the next lookup reads again', async () => {
    const r = repo();
    r.rows.set('t1', { token: token('t1'), boundNode: null });
    const c = tokenCache(r, { nowMs });
    await c.lookup('t1');
    r.rows.set('t1', { token: token('t1', { usesLeft: 0 }), boundNode: null });
    c.forget('t1');
    expect((await c.lookup('t1'))!.token.usesLeft).toBe(0);
    expect(r.reads).toBe(2);
  });

  it('ok/bounded: when full it starts over', async () => {
    const r = repo();
    for (let i = 0; i < 5; i++) r.rows.set(`t${i}`, { token: token(`t${i}`), boundNode: null });
    const c = tokenCache(r, { nowMs, maxEntries: 3 });
    for (let i = 0; i < 5; i++) await c.lookup(`t${i}`);
    expect(c.size).toBeLessThanOrEqual(3);
  });
});
