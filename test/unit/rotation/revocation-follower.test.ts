import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AgentState,
  CaClientError,
  type RevocationEvent,
  RevocationFollower,
  type RevocationPage,
  type RevocationsParams,
} from '../../../clients/rotation/src';
import { tempDir } from '../../support/tools';

const root = tempDir('baton-follower-');
afterAll(() => root.cleanup());
let dirs = 0;

const event = (id: number, nodeId = 'n1'): RevocationEvent => ({
  id,
  kind: 'node',
  nodeId,
  serials: [`0${id}`],
  reason: 'unspecified',
  at: new Date('2026-01-01T00:00:00Z'),
});

/** Answers from a script, in order; once it runs out the follower is told to stop. */
function setup(script: (RevocationPage | CaClientError)[]) {
  const dir = join(root.path, `d${dirs++}`);
  const state = new AgentState(dir);
  const calls: { since: number; waitSeconds: number }[] = [];
  const sleeps: number[] = [];
  const seen: number[][] = [];
  const errors: { code?: string; retryInMs: number }[] = [];
  let done = false;
  const make = () =>
    new RevocationFollower({
      client: {
        revocations: async (p: RevocationsParams) => {
          calls.push({ since: p.since, waitSeconds: p.waitSeconds });
          const next = script.shift();
          if (!next) {
            done = true;
            return { events: [], last: p.since };
          }
          if (next instanceof Error) throw next;
          return next;
        },
      },
      state,
      random: () => 0.99,
      waitSeconds: 30,
      credential: () => ({ certificateChainPem: 'c', keyPem: 'k', trustBundlePem: 'b' }),
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      isDone: () => done,
      onEvents: async (events) => {
        seen.push(events.map((e) => e.id));
      },
      onError: (e, retryInMs) => errors.push({ code: (e as { code?: string }).code, retryInMs }),
    });
  return { dir, state, calls, sleeps, seen, errors, make, restart: () => (done = false) };
}

describe('RevocationFollower', () => {
  it('ok/first start: reads the feed from 0 with wait=0 until an empty page, then long-polls from the cursor', async () => {
    const s = setup([
      { events: [event(1), event(2)], last: 2 },
      { events: [event(3)], last: 3 },
      { events: [], last: 3 },
      { events: [event(4)], last: 4 },
    ]);
    await s.make().run();
    expect(s.calls).toEqual([
      { since: 0, waitSeconds: 0 },
      { since: 2, waitSeconds: 0 },
      { since: 3, waitSeconds: 0 },
      { since: 3, waitSeconds: 30 },
      { since: 4, waitSeconds: 30 },
    ]);
    expect(s.seen).toEqual([[1, 2], [3], [4]]);
    expect(JSON.parse(readFileSync(join(s.dir, 'state.json'), 'utf8'))).toEqual({ revocations_last: 4 });
  });

  it('ok/a restart resumes after the last event handled', async () => {
    const s = setup([{ events: [event(1)], last: 1 }]);
    await s.make().run();
    s.restart();
    await s.make().run();
    expect(s.calls.at(-1)).toEqual({ since: 1, waitSeconds: 0 });
  });

  it('ok/failures back off with full jitter, at least the Retry-After, then the cursor goes on', async () => {
    const s = setup([
      new CaClientError('ERR_SERVER_UNREACHABLE', 'down'),
      new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503, 9000),
      new CaClientError('ERR_SERVER_UNREACHABLE', 'down'),
      { events: [event(7)], last: 7 },
    ]);
    await s.make().run();
    // backoffDelay with random 0.99: 990, 1980, 3960 ms; at least 1 s; the second raised to Retry-After.
    expect(s.sleeps).toEqual([1000, 9000, 3960]);
    expect(s.errors.map((e) => e.code)).toEqual([
      'ERR_SERVER_UNREACHABLE',
      'ERR_CA_UNAVAILABLE',
      'ERR_SERVER_UNREACHABLE',
    ]);
    expect(s.seen).toEqual([[7]]);
    expect(s.state.read().revocationsLast).toBe(7);
  });
});
