import fc from 'fast-check';
import {
  backoffDelay,
  type CertValidity,
  JITTER_FRACTION,
  nextRefreshAt,
  rotationState,
  safetyMarginMs,
  shouldRotate,
} from '../../../clients/rotation/src/rotation-strategy';

const T0 = '2025-01-01T00:00:00.000Z';
const at = (iso: string) => new Date(iso);
const MIN = 60_000;
const HOUR = 60 * MIN;
const plus = (ms: number, from = T0) => new Date(Date.parse(from) + ms);
const fixed = (r: number) => () => r;
/** For the server-driven cases: the random source must not be consulted at all. */
const noRandom = () => {
  throw new Error('random() must not be called when the server sent refresh_at');
};

/** A node certificate with the CONTRACT default lifetime (24h). */
const day: CertValidity = { notBefore: at(T0), notAfter: plus(24 * HOUR) };
const cert = (lifetimeMs: number, refreshAt?: Date): CertValidity => ({
  notBefore: at(T0),
  notAfter: plus(lifetimeMs),
  ...(refreshAt ? { refreshAt } : {}),
});

describe('nextRefreshAt', () => {
  it.each([
    // 24h: half-life 12h, jitter ±2.4h, safety margin 2.4h (10%).
    ['ok/24h-half-life-at-random-0.5', day, fixed(0.5), plus(12 * HOUR)],
    ['ok/24h-earliest-at-random-0', day, fixed(0), plus(9.6 * HOUR)],
    ['ok/24h-latest-at-random-1', day, fixed(1), plus(14.4 * HOUR)],
    ['ok/24h-random-0.75', day, fixed(0.75), plus(13.2 * HOUR)],
    // 1h workload: half-life 30m ± 6m.
    ['ok/1h-random-0.25', cert(HOUR), fixed(0.25), plus(27 * MIN)],
    // 5m: margin is the 1-minute floor, which does not bind at 2.5m ± 30s.
    ['ok/5m-random-1', cert(5 * MIN), fixed(1), plus(3 * MIN)],
    // 1m: the margin is capped at a quarter of the lifetime (15 s), so upward jitter still fits.
    ['ok/1m-random-1', cert(MIN), fixed(1), plus(36_000)],
    // The CONTRACT minimum as the CA issues it: 1m from issue, notBefore a minute before (backdated),
    // refresh_at at issue + 30 s. Followed, not clamped back to the moment of issue (a cap at half
    // the 2m lifetime did that, and the agent renewed without pause).
    [
      'ok/1m-ttl-backdated-follows-refresh-at',
      { notBefore: at(T0), notAfter: plus(2 * MIN), refreshAt: plus(MIN + 30_000) },
      noRandom,
      plus(MIN + 30_000),
    ],
    ['ok/1m-random-0', cert(MIN), fixed(0), plus(24_000)],
    [
      'ok/server-refresh-at-followed-exactly',
      cert(24 * HOUR, plus(11 * HOUR + 7)),
      noRandom,
      plus(11 * HOUR + 7),
    ],
    [
      'ok/server-refresh-at-late-clamped-to-margin',
      cert(24 * HOUR, plus(23 * HOUR)),
      noRandom,
      plus(21.6 * HOUR),
    ],
    ['ok/server-refresh-at-after-expiry-clamped', cert(HOUR, plus(2 * HOUR)), noRandom, plus(54 * MIN)],
    ['ok/server-refresh-at-before-not-before-clamped', cert(HOUR, plus(-HOUR)), noRandom, at(T0)],
    [
      'ok/invalid-server-refresh-at-falls-back',
      cert(24 * HOUR, new Date(Number.NaN)),
      fixed(0.5),
      plus(12 * HOUR),
    ],
    ['ok/zero-lifetime', cert(0), fixed(0.5), at(T0)],
    ['ok/random-out-of-range-is-clamped', day, fixed(7), plus(14.4 * HOUR)],
  ] as [string, CertValidity, () => number, Date][])('%s', (_n, c, random, expected) => {
    expect(nextRefreshAt(c, random).toISOString()).toBe(expected.toISOString());
  });

  it('fail/invalid-not-after', () => {
    expect(() => nextRefreshAt({ notBefore: at(T0), notAfter: new Date('nope') }, fixed(0.5))).toThrow(
      RangeError,
    );
  });

  it('ok/property: within half-life ± 10% and never later than notAfter minus the margin', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: MIN, max: 365 * 24 * HOUR }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (lifetime, r) => {
          const t = nextRefreshAt(cert(lifetime), fixed(r)).getTime() - Date.parse(T0);
          const jitter = JITTER_FRACTION * lifetime;
          return (
            t >= Math.floor(lifetime / 2 - jitter) &&
            t <= Math.ceil(lifetime / 2 + jitter) &&
            t <= Math.ceil(lifetime - safetyMarginMs(lifetime))
          );
        },
      ),
    );
  });
});

describe('safetyMarginMs', () => {
  it.each([
    ['ok/24h-is-10-percent', 24 * HOUR, 2.4 * HOUR],
    ['ok/1h-is-10-percent', HOUR, 6 * MIN],
    ['ok/5m-is-the-1m-floor', 5 * MIN, MIN],
    ['ok/1m-is-capped-at-a-quarter', MIN, 15_000],
    ['ok/2m-is-capped-at-a-quarter', 2 * MIN, 30_000],
  ])('%s', (_n, lifetime, expected) => {
    expect(safetyMarginMs(lifetime)).toBe(expected);
  });
});

describe('rotationState and shouldRotate', () => {
  it.each([
    ['ok/valid-at-not-before', day, T0, 0.5, 'valid'],
    ['ok/valid-before-not-before (clock skew)', day, '2024-12-31T23:00:00.000Z', 0.5, 'valid'],
    ['ok/valid-just-before-half-life', day, '2025-01-01T11:59:59.999Z', 0.5, 'valid'],
    ['ok/due-at-half-life', day, '2025-01-01T12:00:00.000Z', 0.5, 'due'],
    ['ok/due-with-early-jitter', day, '2025-01-01T09:36:00.000Z', 0, 'due'],
    ['ok/valid-with-late-jitter', day, '2025-01-01T14:23:59.999Z', 1, 'valid'],
    ['ok/due-just-before-not-after', day, '2025-01-01T23:59:59.999Z', 0.5, 'due'],
    // SPIRE rotationutil.X509Expired: !now.Before(NotAfter), so expiry starts at notAfter itself.
    ['ok/expired-at-not-after', day, '2025-01-02T00:00:00.000Z', 0.5, 'expired'],
    ['ok/expired-long-after', day, '2025-03-01T00:00:00.000Z', 0.5, 'expired'],
    [
      'ok/server-refresh-at-valid-before',
      cert(24 * HOUR, plus(6 * HOUR)),
      '2025-01-01T05:59:59.999Z',
      0.5,
      'valid',
    ],
    ['ok/server-refresh-at-due-at', cert(24 * HOUR, plus(6 * HOUR)), '2025-01-01T06:00:00.000Z', 0.5, 'due'],
    [
      'ok/server-refresh-at-expired-wins',
      cert(HOUR, plus(10 * MIN)),
      '2025-01-01T01:00:00.000Z',
      0.5,
      'expired',
    ],
  ] as [string, CertValidity, string, number, string][])('%s', (_n, c, now, r, expected) => {
    expect(rotationState(at(now), c, fixed(r))).toBe(expected);
    expect(shouldRotate(at(now), c, fixed(r))).toBe(expected !== 'valid');
  });
});

describe('backoffDelay (exponential, full jitter)', () => {
  it.each([
    ['ok/first-retry-random-0', 0, 0, {}, 0],
    ['ok/first-retry-random-0.5', 0, 0.5, {}, 500],
    ['ok/second-retry-random-0.5', 1, 0.5, {}, 1000],
    ['ok/fourth-retry-random-0.999', 3, 0.999, {}, 7992],
    ['ok/ninth-retry-below-cap', 8, 0.5, {}, 128_000],
    ['ok/tenth-retry-capped-at-5m', 9, 0.5, {}, 150_000],
    ['ok/huge-attempt-does-not-overflow', 10_000, 0.5, {}, 150_000],
    ['ok/custom-base-and-max', 5, 1, { baseMs: 100, maxMs: 1000 }, 1000],
    ['ok/custom-base', 2, 0.5, { baseMs: 250 }, 500],
  ])('%s', (_n, attempt, r, options, expected) => {
    expect(backoffDelay(attempt, fixed(r), options)).toBe(expected);
  });

  it.each([
    ['fail/negative-attempt', -1, {}],
    ['fail/fractional-attempt', 1.5, {}],
    ['fail/nan-attempt', Number.NaN, {}],
    ['fail/zero-base', 1, { baseMs: 0 }],
    ['fail/negative-max', 1, { maxMs: -1 }],
  ])('%s throws RangeError', (_n, attempt, options) => {
    expect(() => backoffDelay(attempt, fixed(0.5), options)).toThrow(RangeError);
  });

  it('ok/property: an integer delay in [0, min(max, base·2^attempt))', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 64 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, r) => {
          const d = backoffDelay(attempt, fixed(r));
          const cap = Math.min(300_000, 1000 * 2 ** attempt);
          return Number.isInteger(d) && d >= 0 && d < cap;
        },
      ),
    );
  });
});
