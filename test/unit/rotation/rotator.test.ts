import { readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  CaClientError,
  NodeIdentityStore,
  NodeRotator,
  type RotatorEvent,
  type RotatorOptions,
  type Timers,
} from '../../../clients/rotation/src';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { testCa } from '../../fixtures/test-ca';
import { tempDir } from '../../support/tools';
import { FakeCa } from './fake-ca';

const HOUR = 3600_000;
const root = tempDir('baton-rotator-');
afterAll(() => root.cleanup());
let dirs = 0;

/** Timers that only fire when the test says so; the clock moves with them. */
class FakeTimers implements Timers {
  pending: { fn: () => void; ms: number; handle: number }[] = [];
  #next = 0;
  constructor(readonly clock: FakeClock) {}
  setTimeout(fn: () => void, ms: number): unknown {
    const handle = ++this.#next;
    this.pending.push({ fn, ms, handle });
    return handle;
  }
  clearTimeout(handle: unknown): void {
    this.pending = this.pending.filter((t) => t.handle !== handle);
  }
  /** Moves the clock by the one pending delay and fires it. */
  fire(): number {
    const t = this.pending.shift();
    if (!t) throw new Error('no pending timer');
    this.clock.advance(t.ms);
    t.fn();
    return t.ms;
  }
}

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  if (!condition()) throw new Error('condition never became true');
}

function setup(opts: Partial<RotatorOptions> = {}) {
  const clock = new FakeClock(new Date().toISOString());
  const ca = new FakeCa(clock);
  const dir = join(root.path, `d${dirs++}`);
  const store = new NodeIdentityStore(dir);
  const events: RotatorEvent[] = [];
  const timers = new FakeTimers(clock);
  const make = (o: Partial<RotatorOptions> = {}) =>
    new NodeRotator({
      clock,
      client: ca,
      store,
      random: () => 0.5,
      timers,
      onEvent: (e) => events.push(e),
      ...opts,
      ...o,
    });
  return { clock, ca, dir, store, events, timers, make };
}

const files = (dir: string) => ({
  cert: readFileSync(join(dir, 'node', 'cert.pem'), 'utf8'),
  key: readFileSync(join(dir, 'node', 'key.pem'), 'utf8'),
});

describe('NodeRotator.runOnce', () => {
  it('fail/no identity and no token: asks for a token, talks to no one', async () => {
    const s = setup();
    await expect(s.make().runOnce()).rejects.toMatchObject({
      code: 'ERR_TOKEN_REQUIRED',
      message: 'no node identity yet: pass --token',
    });
    expect(s.ca.calls).toEqual([]);
  });

  it('ok/no identity: attests over TLS that trusts the pinned root only', async () => {
    const s = setup();
    const token = s.ca.token();
    const r = await s.make({ token }).runOnce();
    expect(r.action).toBe('attested');
    expect(r.identity.nodeId).toBe('node1');
    // One round trip after the bundle (issue 20): the CA certificates are asked for only during a
    // root rotation, when the bundle holds another root.
    expect(s.ca.calls.map((c) => c.op)).toEqual(['bundle', 'attest']);
    expect(s.ca.calls[1]!.trustBundlePem).toBe(s.ca.ca.keyring.roots[0]!.certPem);
    expect(s.store.load()!.serial).toBe(r.identity.serial);
    expect(s.events).toEqual([{ type: 'attested', identity: r.identity }]);
  });

  it('fail/pin mismatch: the token is never sent to a CA with another root', async () => {
    const s = setup();
    const token = s.ca.token();
    s.ca.bundleForBootstrap = testCa().keyring.bundlePem;
    await expect(s.make({ token }).runOnce()).rejects.toMatchObject({
      code: 'ERR_PIN_MISMATCH',
      message: "the server's CA does not match the token's pin",
    });
    expect(s.ca.calls.map((c) => c.op)).toEqual(['bundle']);
  });

  it('fail/a bundle that appends an impostor root is trusted for the pinned root only', async () => {
    const s = setup();
    const token = s.ca.token();
    const impostor = testCa().keyring.bundlePem;
    s.ca.bundleForBootstrap = `${impostor}${s.ca.ca.keyring.bundlePem}`;
    await s.make({ token }).runOnce();
    // Two roots look like a root rotation: the CA certificates are asked for, and of them only
    // what the pinned root issued is trusted beside it (common/src/trust-store.ts).
    expect(s.ca.calls.map((c) => c.op)).toEqual(['bundle', 'ca-certificates', 'attest']);
    expect(s.ca.calls[2]!.trustBundlePem).toBe(
      `${s.ca.ca.keyring.roots[0]!.certPem}${s.ca.ca.keyring.signing.certPem}`,
    );
  });

  it('ok/valid: nothing due until refresh_at, no call to the CA', async () => {
    const s = setup();
    const first = await s.make({ token: s.ca.token() }).runOnce();
    s.clock.advance(11 * HOUR);
    const r = await s.make().runOnce();
    expect(r).toEqual({ action: 'none', identity: first.identity });
    expect(s.ca.count('renew')).toBe(0);
  });

  it('ok/due: renews over mTLS with a new key; the token is not needed', async () => {
    const s = setup();
    const first = await s.make({ token: s.ca.token() }).runOnce();
    const before = files(s.dir);
    s.clock.set(first.identity.refreshAt);
    const r = await s.make().runOnce();
    expect(r.action).toBe('renewed');
    expect(r.identity.serial).not.toBe(first.identity.serial);
    expect(r.identity.nodeId).toBe(first.identity.nodeId);
    expect(files(s.dir).key).not.toBe(before.key);
    expect(s.ca.calls.at(-1)).toEqual({ op: 'renew', trustBundlePem: s.ca.ca.keyring.bundlePem });
    expect(r.identity.refreshAt.getTime()).toBeGreaterThan(s.clock.now().getTime());
  });

  it('fail/expired without a token: a clear error, no call, the files stay', async () => {
    const s = setup();
    await s.make({ token: s.ca.token() }).runOnce();
    const before = files(s.dir);
    s.clock.advance(25 * HOUR);
    await expect(s.make().runOnce()).rejects.toMatchObject({
      code: 'ERR_CERT_EXPIRED',
      message: 'the node certificate has expired: a new token is needed',
    });
    expect(s.ca.calls.map((c) => c.op)).toEqual(['bundle', 'attest']);
    expect(files(s.dir)).toEqual(before);
  });

  it('ok/expired with a new token: re-attests', async () => {
    const s = setup();
    await s.make({ token: s.ca.token() }).runOnce();
    s.clock.advance(25 * HOUR);
    const r = await s.make({ token: s.ca.token() }).runOnce();
    expect(r.action).toBe('re-attested');
    expect(s.ca.count('attest')).toBe(2);
  });

  it.each([
    ['fail/superseded', 'ERR_CERT_SUPERSEDED', 403, /replaced by one this agent does not have/],
    ['fail/cert revoked', 'ERR_CERT_REVOKED', 403, /the node certificate has been revoked/],
    ['fail/node revoked', 'ERR_NODE_REVOKED', 403, /this node has been revoked/],
    ['fail/expired per the CA', 'ERR_CERT_EXPIRED', 401, /has expired: a new token is needed/],
  ])('%s: the renewal refusal is reported, the current files stay', async (_n, code, status, message) => {
    const s = setup();
    const first = await s.make({ token: s.ca.token() }).runOnce();
    const before = files(s.dir);
    s.clock.set(first.identity.refreshAt);
    s.ca.failures.push(new CaClientError(code, 'refused', status));
    const err = await s
      .make()
      .runOnce()
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code, message: expect.stringMatching(message) });
    expect(files(s.dir)).toEqual(before);
  });

  it('ok/superseded with a token: re-attests', async () => {
    const s = setup();
    const first = await s.make({ token: s.ca.token() }).runOnce();
    s.clock.set(first.identity.refreshAt);
    s.ca.failures.push(new CaClientError('ERR_CERT_SUPERSEDED', 'superseded', 403));
    const r = await s.make({ token: s.ca.token() }).runOnce();
    expect(r.action).toBe('re-attested');
  });

  it('fail/revoked with a token: never re-attests behind the operator', async () => {
    const s = setup();
    const first = await s.make({ token: s.ca.token() }).runOnce();
    s.clock.set(first.identity.refreshAt);
    s.ca.failures.push(new CaClientError('ERR_NODE_REVOKED', 'revoked', 403));
    await expect(s.make({ token: s.ca.token(5) }).runOnce()).rejects.toMatchObject({
      code: 'ERR_NODE_REVOKED',
    });
    expect(s.ca.count('attest')).toBe(1);
  });

  it('ok/a refresh time computed locally (no state.json) does not move between checks', async () => {
    const s = setup();
    await s.make({ token: s.ca.token() }).runOnce();
    unlinkSync(join(s.dir, 'node', 'state.json'));
    let r = 0;
    const rotator = s.make({ random: () => (r = (r + 0.37) % 1) });
    const a = await rotator.runOnce();
    const b = await rotator.runOnce();
    expect(a.identity.refreshAt).toEqual(b.identity.refreshAt);
  });
});

describe('NodeRotator.run', () => {
  it('ok/sleeps until refresh_at, renews, and stops on the signal', async () => {
    const s = setup({ token: undefined });
    await s.make({ token: s.ca.token() }).runOnce();
    s.events.length = 0;
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const running = s.make({ maxSleepMs: 30 * HOUR }).run(stopped);
    await until(() => s.timers.pending.length === 1);
    const first = s.store.load()!;
    expect(s.timers.pending[0]!.ms).toBe(first.refreshAt!.getTime() - s.clock.now().getTime());
    s.timers.fire();
    await until(() => s.events.some((e) => e.type === 'renewed'));
    await until(() => s.timers.pending.length === 1);
    expect(s.store.load()!.serial).not.toBe(first.serial);
    stop();
    await running;
    expect(s.timers.pending).toEqual([]);
    expect(s.events.map((e) => e.type)).toEqual(['waiting', 'renewed', 'waiting']);
  });

  it('ok/wakes at least every maxSleepMs to look at the clock again', async () => {
    const s = setup();
    await s.make({ token: s.ca.token() }).runOnce();
    let stop!: () => void;
    const running = s.make({ maxSleepMs: HOUR }).run(new Promise<void>((r) => (stop = r)));
    await until(() => s.timers.pending.length === 1);
    expect(s.timers.pending[0]!.ms).toBe(HOUR);
    stop();
    await running;
  });

  it('ok/retries failures with backoff, at least the Retry-After, then succeeds', async () => {
    const s = setup();
    const first = await s.make({ token: s.ca.token() }).runOnce();
    s.clock.set(first.identity.refreshAt);
    s.ca.failures.push(
      new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503, 5000),
      new CaClientError('ERR_SERVER_UNREACHABLE', 'connection refused'),
      new CaClientError('ERR_SERVER_UNREACHABLE', 'connection refused'),
    );
    let stop!: () => void;
    const running = s.make({ random: () => 0.99 }).run(new Promise<void>((r) => (stop = r)));
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      await until(() => s.timers.pending.length === 1);
      delays.push(s.timers.fire());
    }
    await until(() => s.events.some((e) => e.type === 'renewed'));
    // backoffDelay with random 0.99: 990, 1980, 3960 ms; the first is raised to Retry-After.
    expect(delays).toEqual([5000, 1980, 3960]);
    expect(s.events.filter((e) => e.type === 'retry').map((e) => (e as { attempt: number }).attempt)).toEqual(
      [0, 1, 2],
    );
    stop();
    await running;
  });

  it('fail/stops on a terminal refusal without touching the files', async () => {
    const s = setup();
    const first = await s.make({ token: s.ca.token() }).runOnce();
    const before = files(s.dir);
    s.clock.set(first.identity.refreshAt);
    s.ca.failures.push(new CaClientError('ERR_CERT_REVOKED', 'revoked', 403));
    await expect(s.make().run(new Promise(() => undefined))).rejects.toMatchObject({
      code: 'ERR_CERT_REVOKED',
    });
    expect(files(s.dir)).toEqual(before);
  });
});
