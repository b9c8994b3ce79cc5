import { entryCache } from '../../../services/ca/src/domain/entry-cache';
import type { EntryRecord } from '../../../services/ca/src/domain/ports';

const entry = (name: string): EntryRecord => ({
  name,
  spiffeId: `spiffe://td/${name}`,
  parentNodeId: 'n1',
  selectors: [],
  dnsNames: [],
  allowWildcardDns: false,
  ttlMs: null,
  createdBy: 'test',
  createdAt: new Date(0),
});

/** A repository over a map, counting reads. */
function repo() {
  const rows = new Map<string, EntryRecord>();
  const r = {
    reads: 0,
    rows,
    findForNode: async (nodeId: string, spiffeId: string) => {
      r.reads++;
      return [...rows.values()].find((e) => e.parentNodeId === nodeId && e.spiffeId === spiffeId) ?? null;
    },
  };
  return r;
}

describe('entryCache', () => {
  let now = 0;
  const nowMs = () => now;

  it('ok/reads through once, then answers from memory until the TTL', async () => {
    const r = repo();
    r.rows.set('web', entry('web'));
    const c = entryCache(r, { nowMs, ttlMs: 1000 });
    expect(await c.lookup('n1', 'spiffe://td/web')).toEqual(entry('web'));
    expect(await c.lookup('n1', 'spiffe://td/web')).toEqual(entry('web'));
    expect(r.reads).toBe(1);
    now += 1000;
    await c.lookup('n1', 'spiffe://td/web');
    expect(r.reads).toBe(2);
  });

  it('ok/a miss is never cached: an entry created a moment later is found at once', async () => {
    const r = repo();
    const c = entryCache(r, { nowMs });
    expect(await c.lookup('n1', 'spiffe://td/api')).toBeNull();
    r.rows.set('api', entry('api'));
    expect(await c.lookup('n1', 'spiffe://td/api')).toEqual(entry('api'));
    expect(r.reads).toBe(2);
  });

  it('ok/forget drops a stale entry, and keys are per node and SPIFFE ID', async () => {
    const r = repo();
    r.rows.set('web', entry('web'));
    const c = entryCache(r, { nowMs });
    await c.lookup('n1', 'spiffe://td/web');
    expect(await c.lookup('n2', 'spiffe://td/web')).toBeNull();
    r.rows.set('web', { ...entry('web'), dnsNames: ['new.internal'] });
    expect((await c.lookup('n1', 'spiffe://td/web'))!.dnsNames).toEqual([]);
    c.forget('n1', 'spiffe://td/web');
    expect((await c.lookup('n1', 'spiffe://td/web'))!.dnsNames).toEqual(['new.internal']);
  });

  it('ok/bounded: when full it starts over', async () => {
    const r = repo();
    for (let i = 0; i < 5; i++) r.rows.set(`e${i}`, entry(`e${i}`));
    const c = entryCache(r, { nowMs, maxEntries: 3 });
    for (let i = 0; i < 5; i++) await c.lookup('n1', `spiffe://td/e${i}`);
    expect(c.size).toBeLessThanOrEqual(3);
  });
});
