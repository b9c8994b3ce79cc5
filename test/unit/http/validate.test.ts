import { MINUTE } from '../../../services/ca/src/domain/duration';
import { jsonObject, oneOf, optionalDurationMs, optionalInt } from '../../../services/ca/src/http/validate';

const DAY_MS = 24 * 60 * MINUTE;
const ttl = (v: unknown) => optionalDurationMs({ ttl: v }, 'ttl', MINUTE, 30 * DAY_MS);
const refused = (f: () => unknown, message: RegExp) =>
  expect(f).toThrow(
    expect.objectContaining({ code: 'ERR_BAD_REQUEST', message: expect.stringMatching(message) }),
  );

describe('optionalDurationMs', () => {
  it('reads duration strings and whole seconds; absent and null mean the default', () => {
    expect(ttl('15m')).toBe(15 * MINUTE);
    expect(ttl('1h30m')).toBe(90 * MINUTE);
    expect(ttl(' 7d ')).toBe(7 * DAY_MS);
    expect(ttl(60)).toBe(MINUTE);
    expect(ttl(30 * 86_400)).toBe(30 * DAY_MS);
    expect(ttl(undefined)).toBeUndefined();
    expect(ttl(null)).toBeUndefined();
  });

  it('refuses fractional seconds: the milliseconds go into bigint columns (node_ttl 60.0005 was a 500)', () => {
    for (const v of [60.0005, 60.5, 3599.999, 1e-3]) refused(() => ttl(v), /^ttl: .*whole number of seconds/);
  });

  it('refuses non-finite, unsafe and non-numeric values with the field named', () => {
    for (const v of [
      Number.NaN,
      Number.POSITIVE_INFINITY,
      2 ** 53,
      true,
      [],
      {},
      '24',
      '15 m',
      'x'.repeat(33),
    ])
      refused(() => ttl(v), /^ttl: a duration/);
  });

  it('refuses durations outside the bounds, in either form', () => {
    for (const v of [59, '59s', 30 * 86_400 + 1, '31d', 0, -60, '0s'])
      refused(() => ttl(v), /^ttl: must be between 60s and 2592000s$/);
  });
});

describe('optionalInt, oneOf, jsonObject', () => {
  it('optionalInt takes integers within bounds only', () => {
    const uses = (v: unknown) => optionalInt({ uses: v }, 'uses', 1, 10_000);
    expect(uses(1)).toBe(1);
    expect(uses(10_000)).toBe(10_000);
    expect(uses(null)).toBeUndefined();
    for (const v of [0, 10_001, 1.5, '1', Number.NaN])
      refused(() => uses(v), /^uses: an integer from 1 to 10000$/);
  });

  it('oneOf takes only the listed strings, own or inherited names alike refused', () => {
    const role = (b: Record<string, unknown>) => oneOf(b, 'role', ['worker', 'manager'] as const);
    expect(role({ role: 'manager' })).toBe('manager');
    for (const b of [
      {},
      { role: 'admin' },
      { role: ['worker'] },
      JSON.parse('{"__proto__":{"role":"worker"}}'),
    ])
      refused(() => role(b), /^role: one of worker, manager$/);
  });

  it('jsonObject refuses everything that is not a plain JSON object', () => {
    for (const v of [undefined, null, 1, 'x', [], [{}]])
      refused(() => jsonObject(v), /JSON object body is required/);
    expect(jsonObject({ a: 1 })).toEqual({ a: 1 });
  });
});
