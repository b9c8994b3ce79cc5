import { type Flags, loadServerConfig, parseRate } from '../../services/ca/src/config';
import { errorOf } from '../support/errors';

const load = (flags: Flags = {}, env: Record<string, string> = {}) => loadServerConfig(flags, env);

describe('parseRate', () => {
  it.each([
    ['ok/per minute: the count is the burst', '60/m', { perSecond: 1, burst: 60 }],
    ['ok/per second', '10/s', { perSecond: 10, burst: 10 }],
    ['ok/per hour', '3600/h', { perSecond: 1, burst: 3600 }],
    ['ok/explicit burst', '10/s,burst=50', { perSecond: 10, burst: 50 }],
    ['ok/spaces and case', ' 10/S, burst=5 ', { perSecond: 10, burst: 5 }],
    ['ok/off', 'off', null],
    ['ok/OFF', 'OFF', null],
  ])('%s: %p', (_name, text, want) => {
    expect(parseRate(text, '--rate-attest')).toEqual(want);
  });

  it.each([
    ['fail/bare number', '60'],
    ['fail/unknown unit', '60/d'],
    ['fail/zero', '0/m'],
    ['fail/zero burst', '1/s,burst=0'],
    ['fail/negative', '-1/s'],
    ['fail/fraction', '1.5/s'],
    ['fail/empty', ''],
    ['fail/garbage after', '60/m,x'],
  ])('%s: %p -> ERR_CONFIG_INVALID naming the flag', (_name, text) => {
    const e = errorOf(() => parseRate(text, '--rate-attest'));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toMatch(/^--rate-attest: /);
  });
});

describe('loadServerConfig: abuse limits and timeouts', () => {
  it('ok/defaults', () => {
    const c = load();
    expect(c.limits).toEqual({
      attest: { perSecond: 5, burst: 300 },
      public: { perSecond: 100, burst: 6000 },
      renew: { perSecond: 10 / 60, burst: 10 },
      workload: { perSecond: 5, burst: 300 },
      maxInFlight: 256,
      feedWaiters: 20_000,
      feedWaitersPerIdentity: 4,
    });
    expect(c.http).toEqual({
      requestTimeoutMs: 30_000,
      headersTimeoutMs: 10_000,
      keepAliveTimeoutMs: 65_000,
      idleTimeoutMs: 120_000,
      maxRequestsPerSocket: 1000,
      maxConnections: 25_000,
    });
    expect(Object.isFrozen(c.limits) && Object.isFrozen(c.http)).toBe(true);
  });

  it('ok/flags win over the environment', () => {
    const c = load({ 'rate-attest': '1/s' }, { BATON_RATE_ATTEST: '2/s', BATON_QUOTA_RENEW: '5/h' });
    expect(c.limits.attest).toEqual({ perSecond: 1, burst: 1 });
    expect(c.limits.renew).toEqual({ perSecond: 5 / 3600, burst: 5 });
  });

  it('ok/--rate-limits off turns the rates off, except one set explicitly; the in-flight limit stays', () => {
    const c = load({ 'rate-limits': 'off' }, { BATON_QUOTA_WORKLOAD: '3/m' });
    expect(c.limits).toEqual({
      attest: null,
      public: null,
      renew: null,
      workload: { perSecond: 0.05, burst: 3 },
      maxInFlight: 256,
      feedWaiters: 20_000,
      feedWaitersPerIdentity: 4,
    });
    expect(load({}, { BATON_RATE_LIMITS: 'off', BATON_MAX_IN_FLIGHT: 'off' }).limits.maxInFlight).toBeNull();
  });

  it('ok/timeouts and the per-socket limit from the environment', () => {
    const c = load(
      {},
      {
        BATON_REQUEST_TIMEOUT: '2s',
        BATON_HEADERS_TIMEOUT: '1s',
        BATON_KEEP_ALIVE_TIMEOUT: '5s',
        BATON_IDLE_TIMEOUT: '45s',
        BATON_MAX_REQUESTS_PER_SOCKET: 'off',
      },
    );
    expect(c.http).toEqual({
      requestTimeoutMs: 2000,
      headersTimeoutMs: 1000,
      keepAliveTimeoutMs: 5000,
      idleTimeoutMs: 45_000,
      maxRequestsPerSocket: null,
      maxConnections: 25_000,
    });
  });

  it('ok/issue 14: the revocation feed caps and the connection cap, from flags and the environment', () => {
    const c = load(
      { 'max-feed-waiters-per-identity': '2' },
      { BATON_MAX_FEED_WAITERS: '100', BATON_MAX_CONNECTIONS: '400', BATON_MAX_IN_FLIGHT: '50' },
    );
    expect([c.limits.feedWaiters, c.limits.feedWaitersPerIdentity, c.http.maxConnections]).toEqual([
      100, 2, 400,
    ]);
    const off = load({
      'max-feed-waiters': 'off',
      'max-feed-waiters-per-identity': 'off',
      'max-connections': 'off',
    });
    expect([off.limits.feedWaiters, off.limits.feedWaitersPerIdentity, off.http.maxConnections]).toEqual([
      null,
      null,
      null,
    ]);
    // Exactly one more connection than a full feed and a full in-flight limit take is enough.
    expect(
      load({ 'max-feed-waiters': '10', 'max-in-flight': '5', 'max-connections': '16' }).http.maxConnections,
    ).toBe(16);
  });

  it.each([
    ['fail/--rate-limits neither on nor off', { 'rate-limits': 'maybe' }, /^--rate-limits: /],
    ['fail/bad rate', { 'quota-workload': 'lots' }, /^--quota-workload: /],
    ['fail/bad in-flight', { 'max-in-flight': '0' }, /^--max-in-flight: /],
    ['fail/headers timeout not below request timeout', { 'headers-timeout': '30s' }, /^--headers-timeout: /],
    ['fail/idle timeout within the long-poll', { 'idle-timeout': '30s' }, /^--idle-timeout: .*long-poll/],
    ['fail/timeout too short', { 'request-timeout': '10ms' }, /^--request-timeout: /],
    ['fail/timeout without unit', { 'keep-alive-timeout': '65' }, /^--keep-alive-timeout: /],
    ['fail/zero feed waiters', { 'max-feed-waiters': '0' }, /^--max-feed-waiters: /],
    [
      'fail/feed waiters not a count',
      { 'max-feed-waiters-per-identity': '1.5' },
      /^--max-feed-waiters-per-identity: /,
    ],
    ['fail/bad connection cap', { 'max-connections': '-1' }, /^--max-connections: /],
    [
      'fail/per-identity above the total',
      { 'max-feed-waiters': '3', 'max-feed-waiters-per-identity': '4' },
      /^--max-feed-waiters-per-identity: must not exceed --max-feed-waiters/,
    ],
    [
      'fail/a full feed would take every connection',
      { 'max-feed-waiters': '10', 'max-in-flight': '5', 'max-connections': '15' },
      /^--max-connections: must be above --max-feed-waiters plus --max-in-flight/,
    ],
    [
      'fail/connections capped, long-polls not',
      { 'max-feed-waiters': 'off', 'max-connections': '1000' },
      /^--max-connections: needs --max-feed-waiters/,
    ],
  ])('%s -> ERR_CONFIG_INVALID', (_name, flags, message) => {
    const e = errorOf(() => load(flags as Flags));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toMatch(message);
  });
});
