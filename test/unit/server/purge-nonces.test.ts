import type { NonceRepository } from '../../../services/ca/src/domain/ports';
import {
  NONCE_PURGE_BATCH,
  NONCE_PURGE_BATCHES,
  purgeNonces,
} from '../../../services/ca/src/server/background-jobs';

/** A repository holding `expired` expired nonces, recording each purge call. */
function fakeNonces(expired: number): { repo: NonceRepository; calls: [Date, number][] } {
  let left = expired;
  const calls: [Date, number][] = [];
  const repo: NonceRepository = {
    insert: async () => {},
    purgeExpired: async (now, limit) => {
      calls.push([now, limit]);
      const n = Math.min(left, limit);
      left -= n;
      return n;
    },
  };
  return { repo, calls };
}

describe('purgeNonces', () => {
  const now = new Date('2026-11-27T00:00:00Z');

  it('stops at the first short batch, passing the injected time', async () => {
    const { repo, calls } = fakeNonces(NONCE_PURGE_BATCH + 5);
    expect(await purgeNonces(repo, now)).toBe(NONCE_PURGE_BATCH + 5);
    expect(calls).toEqual([
      [now, NONCE_PURGE_BATCH],
      [now, NONCE_PURGE_BATCH],
    ]);
  });

  it('asks once when there is nothing to purge', async () => {
    const { repo, calls } = fakeNonces(0);
    expect(await purgeNonces(repo, now)).toBe(0);
    expect(calls).toHaveLength(1);
  });

  it('does a bounded amount of work per run after a flood; the rest waits for the next run', async () => {
    const { repo, calls } = fakeNonces(NONCE_PURGE_BATCH * NONCE_PURGE_BATCHES * 3);
    expect(await purgeNonces(repo, now)).toBe(NONCE_PURGE_BATCH * NONCE_PURGE_BATCHES);
    expect(calls).toHaveLength(NONCE_PURGE_BATCHES);
    expect(await purgeNonces(repo, now)).toBe(NONCE_PURGE_BATCH * NONCE_PURGE_BATCHES);
  });
});
