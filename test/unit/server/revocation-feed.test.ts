import { BatonError } from '../../../services/ca/src/ground/errors';
import type { RevocationEvent, RevocationRepository } from '../../../services/ca/src/domain/ports';
import { createLogger } from '../../../services/ca/src/logger';
import { FEED_RETRY_AFTER_S } from '../../../services/ca/src/http/abuse-controls';
import { type FeedLimits, RevocationFeed } from '../../../services/ca/src/server/revocation-feed';

/** The two reads the feed makes, over events held in memory. */
function fakeRevocations(): { repo: RevocationRepository; append(): RevocationEvent } {
  const events: RevocationEvent[] = [];
  const repo = {
    eventsSince: async (id: number, limit: number) => events.filter((e) => e.id > id).slice(0, limit),
    lastEventId: async () => events.at(-1)?.id ?? 0,
  } as unknown as RevocationRepository;
  const append = () => {
    const e: RevocationEvent = {
      id: events.length + 1,
      kind: 'certificate',
      nodeId: null,
      serials: ['0a'],
      reason: 0,
      actor: 'test',
      createdAt: new Date('2026-11-27T00:00:00Z'),
    };
    events.push(e);
    return e;
  };
  return { repo, append };
}

async function rejection(p: Promise<unknown>): Promise<BatonError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BatonError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

/** Lets the waits started so far reach the feed (each first reads the repository). */
async function settle(feed: RevocationFeed, waiting: number): Promise<void> {
  for (let i = 0; i < 20 && feed.waiting !== waiting; i++) await new Promise((r) => setImmediate(r));
  expect(feed.waiting).toBe(waiting);
}

describe('RevocationFeed: waiting caps (issue 14, finding 6)', () => {
  const limits: FeedLimits = { total: 3, perIdentity: 2 };
  let feed: RevocationFeed;
  let store: ReturnType<typeof fakeRevocations>;
  const hold = (identity: string, signal?: AbortSignal) => feed.wait(0, 30_000, { identity, signal });

  beforeEach(() => {
    store = fakeRevocations();
    feed = new RevocationFeed(store.repo, createLogger('silent'), { limits, pollMs: 3_600_000 });
  });
  afterEach(() => feed.close());

  it('fail/one identity past its cap is refused; another still waits', async () => {
    const held = [hold('a'), hold('a')];
    await settle(feed, 2);
    const e = await rejection(hold('a'));
    expect(e.code).toBe('ERR_RATE_LIMITED');
    expect(e.message).toMatch(
      /^revocation feed: 2 long-polls already wait for this caller, retry after 30s$/,
    );
    held.push(hold('b'));
    await settle(feed, 3);
    expect([feed.waitingFor('a'), feed.waitingFor('b')]).toEqual([2, 1]);
    const event = store.append();
    feed.notify();
    expect(await Promise.all(held)).toEqual([[event], [event], [event]]);
    expect([feed.waiting, feed.waitingFor('a'), feed.waitingFor('b')]).toEqual([0, 0, 0]);
  });

  it('fail/past the total cap a new identity is refused', async () => {
    const held = [hold('a'), hold('a'), hold('b')];
    await settle(feed, 3);
    const e = await rejection(hold('c'));
    expect(e.code).toBe('ERR_RATE_LIMITED');
    expect(e.message).toMatch(/server busy \(3 long-polls waiting\), retry after 30s$/);
    expect(FEED_RETRY_AFTER_S).toBe(30);
    feed.close();
    expect(await Promise.all(held)).toEqual([[], [], []]);
  });

  it('ok/a catch-up read (wait 0) and a read with events to answer are never refused', async () => {
    const held = [hold('a'), hold('a'), hold('b')];
    await settle(feed, 3);
    expect(await feed.wait(0, 0, { identity: 'a' })).toEqual([]);
    expect(await feed.wait(0, 0, { identity: 'c' })).toEqual([]);
    const event = store.append();
    expect(await feed.wait(0, 30_000, { identity: 'a' })).toEqual([event]);
    expect(await feed.wait(0, 30_000, { identity: 'c' })).toEqual([event]);
    feed.notify();
    await Promise.all(held);
  });

  it('fail/an aborted wait frees its slot at once, for its identity and in total', async () => {
    const gone = new AbortController();
    const first = hold('a', gone.signal);
    const rest = [hold('a'), hold('b')];
    await settle(feed, 3);
    gone.abort();
    expect(await first).toEqual([]);
    expect([feed.waiting, feed.waitingFor('a')]).toEqual([2, 1]);
    rest.push(hold('a'));
    await settle(feed, 3);
    // Aborting again, or after the wait ended, changes nothing.
    gone.abort();
    expect([feed.waiting, feed.waitingFor('a')]).toEqual([3, 2]);
    feed.close();
    await Promise.all(rest);
  });

  it('ok/a wait whose signal is already aborted returns without taking a slot', async () => {
    const gone = new AbortController();
    gone.abort();
    expect(await hold('a', gone.signal)).toEqual([]);
    expect(feed.waiting).toBe(0);
  });

  it('ok/a wait that times out frees its slot', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      const short = feed.wait(0, 1000, { identity: 'a' });
      await settle(feed, 1);
      jest.advanceTimersByTime(1000);
      expect(await short).toEqual([]);
      expect([feed.waiting, feed.waitingFor('a')]).toEqual([0, 0]);
    } finally {
      jest.useRealTimers();
    }
  });

  it('ok/no limits: everyone waits', async () => {
    const open = new RevocationFeed(store.repo, createLogger('silent'), { pollMs: 3_600_000 });
    const held = Array.from({ length: 10 }, () => open.wait(0, 30_000, { identity: 'a' }));
    await settle(open, 10);
    open.close();
    await Promise.all(held);
  });
});
