import { clientKey } from '../../../services/ca/src/http/abuse-controls';
import { TokenBuckets } from '../../../services/ca/src/http/token-bucket';

/** Monotonic time that moves only when told to. */
function fakeTime(): { now: () => number; advance(ms: number): void } {
  let ms = 1_000_000;
  return { now: () => ms, advance: (d) => (ms += d) };
}

describe('TokenBuckets', () => {
  it('ok/admits a burst, then one per interval, and says when the next token comes', () => {
    const time = fakeTime();
    const b = new TokenBuckets({ perSecond: 1 / 12, burst: 5 }, time.now);
    for (let i = 0; i < 5; i++) expect(b.take('a')).toEqual({ ok: true });
    expect(b.take('a')).toEqual({ ok: false, retryAfterS: 12 });
    time.advance(6000);
    expect(b.take('a')).toEqual({ ok: false, retryAfterS: 6 });
    time.advance(6000);
    expect(b.take('a')).toEqual({ ok: true });
    expect(b.take('a')).toEqual({ ok: false, retryAfterS: 12 });
  });

  it('ok/keys are independent', () => {
    const b = new TokenBuckets({ perSecond: 1, burst: 1 }, fakeTime().now);
    expect(b.take('a').ok).toBe(true);
    expect(b.take('a').ok).toBe(false);
    expect(b.take('b').ok).toBe(true);
  });

  it('ok/Retry-After is at least 1 s even for fast rates', () => {
    const b = new TokenBuckets({ perSecond: 100, burst: 1 }, fakeTime().now);
    b.take('a');
    expect(b.take('a')).toEqual({ ok: false, retryAfterS: 1 });
  });

  it('ok/never refills past the burst, and a monotonic source that stalls gives nothing back', () => {
    const time = fakeTime();
    const b = new TokenBuckets({ perSecond: 1, burst: 2 }, time.now);
    time.advance(3_600_000);
    expect([b.take('a').ok, b.take('a').ok, b.take('a').ok]).toEqual([true, true, false]);
  });

  it('ok/sweeps buckets that have refilled, so idle keys cost no memory', () => {
    const time = fakeTime();
    const b = new TokenBuckets({ perSecond: 1, burst: 10 }, time.now);
    for (let i = 0; i < 1000; i++) b.take(`k${i}`);
    expect(b.size).toBe(1000);
    time.advance(10_000);
    b.take('fresh');
    expect(b.size).toBe(1);
  });

  it('ok/caps the number of keys, dropping the least recently used', () => {
    const time = fakeTime();
    const b = new TokenBuckets({ perSecond: 0.001, burst: 1 }, time.now, 3);
    b.take('a');
    b.take('b');
    b.take('c');
    expect(b.take('a').ok).toBe(false); // a is now the most recently used
    b.take('d'); // drops b
    expect(b.size).toBe(3);
    expect(b.take('a').ok).toBe(false);
    expect(b.take('b').ok).toBe(true); // forgotten: a fresh bucket
  });
});

describe('clientKey', () => {
  it.each([
    ['ok/IPv4', '203.0.113.7', '203.0.113.7'],
    ['ok/IPv4-mapped IPv6 is the IPv4 address', '::ffff:203.0.113.7', '203.0.113.7'],
    ['ok/IPv6 counts per /64', '2001:db8:1:2:aaaa:bbbb:cccc:dddd', '2001:db8:1:2::/64'],
    ['ok/IPv6 with :: in the host part', '2001:db8:1:2::1', '2001:db8:1:2::/64'],
    ['ok/IPv6 with :: in the prefix', '2001:db8::1', '2001:db8:0:0::/64'],
    ['ok/IPv6 leading zeros', '2001:0db8:0001:0002::1', '2001:db8:1:2::/64'],
    ['ok/loopback IPv6', '::1', '0:0:0:0::/64'],
    ['ok/no address', undefined, 'unknown'],
  ])('%s', (_name, address, key) => {
    expect(clientKey(address)).toBe(key);
  });
});
