/**
 * Workload API abuse: "a client that opens 10,000 streams, sends garbage frames, disconnects
 * mid-stream, or calls with a huge metadata block gets a clean gRPC status or a closed connection,
 * the agent keeps serving everyone else, and its memory returns to its baseline after the clients
 * go." The agent is the real server in a child process (dist/bench/workload-api-host.js, built by
 * `npm test`), so that its heap can be measured and a crash is seen; a control stream opened first
 * must keep working, and receive a rotation, after each case.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Client,
  type ClientReadableStream,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  status,
} from '@grpc/grpc-js';
import type { Host, HostStats } from '../../bench/workload-api-host';
import { forkHost } from '../../bench/workload-api-host';
import { WORKLOAD_METADATA_KEY, workloadApiService } from '../../clients/rotation/src/workload-api/proto';
import { describeWith, rootUser } from '../support/tools';

const ROOT = join(__dirname, '..', '..');
const HOST_JS = join(ROOT, 'dist', 'bench', 'workload-api-host.js');
const MB = 2 ** 20;

type Fetch = Client & { FetchX509SVID(request: object, metadata?: Metadata): ClientReadableStream<unknown> };
const Ctor = makeGenericClientConstructor(workloadApiService(), 'SpiffeWorkloadAPI');

let dir: string;
let socketPath: string;
let host: Host;
let control: { client: Fetch; call: ClientReadableStream<unknown>; messages: number };
let baseline: HostStats;

/** A client on a connection of its own (grpc-js shares one between equal channels otherwise). */
const newClient = (): Fetch =>
  new Ctor(`unix://${socketPath}`, credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1,
  }) as unknown as Fetch;

const workloadMetadata = () => {
  const m = new Metadata();
  m.set(WORKLOAD_METADATA_KEY, 'true');
  return m;
};

/** How a call ended up: its first message, a status, or nothing within `ms`. */
function outcome(call: ClientReadableStream<unknown>, ms: number): Promise<'data' | 'timeout' | status> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms);
    call.once('data', () => {
      clearTimeout(timer);
      resolve('data');
    });
    call.on('error', (e: { code: status }) => {
      clearTimeout(timer);
      resolve(e.code);
    });
  });
}

async function until(what: string, check: (s: HostStats) => boolean, ms = 10_000): Promise<HostStats> {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = await host.stats();
    if (check(s)) return s;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Everything the abuser held is gone: only the control client's connection and stream remain. */
const backToBaseline = (s: HostStats) =>
  s.connections === baseline.connections &&
  s.streams === baseline.streams &&
  s.subscribers === baseline.subscribers;

/**
 * The host is up, the control stream receives a rotation, and (unless the abuser holds all of its
 * uid's streams, as the per-uid cap means) a new stream gets its SVID.
 */
async function othersStillServed({ fresh = true } = {}) {
  expect(host.alive()).toBe(true);
  const before = control.messages;
  await host.rotate();
  const deadline = Date.now() + 5000;
  while (control.messages === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(control.messages).toBe(before + 1);
  if (!fresh) return;
  const another = control.client.FetchX509SVID({}, workloadMetadata());
  expect(await outcome(another, 5000)).toBe('data');
  another.cancel();
}

/** Resolves when the server closes a raw connection that wrote `bytes`, or 'open' after `ms`. */
/**
 * Writes `bytes` on a raw connection: 'closed' when the agent closes it, 'goaway' when it answers
 * with an HTTP/2 GOAWAY (RFC 9113 §6.8: the connection is over; the client closes it, as this one
 * does then), 'open' when neither comes within `ms`.
 */
function closedAfter(bytes: Buffer, ms = 5000): Promise<'closed' | 'goaway' | 'open'> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    let received = Buffer.alloc(0);
    const finish = (how: 'closed' | 'goaway' | 'open') => {
      clearTimeout(timer);
      s.destroy();
      resolve(how);
    };
    const timer = setTimeout(() => finish('open'), ms);
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d]);
      if (hasGoaway(received)) finish('goaway');
    });
    s.once('close', () => finish('closed'));
    s.write(bytes);
  });
}

/** Whether the server's bytes hold a GOAWAY frame (type 7), walking the frames (RFC 9113 §4.1). */
function hasGoaway(b: Buffer): boolean {
  for (let at = 0; at + 9 <= b.length; at += 9 + b.readUIntBE(at, 3)) if (b[at + 3] === 7) return true;
  return false;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** An HTTP/2 frame header (RFC 9113 §4.1) and payload. */
const frame = (type: number, flags: number, streamId: number, payload: Buffer) => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
};
/** An HPACK literal header field without indexing, new name (RFC 7541 §6.2.2), lengths < 127. */
const literal = (name: string, value: string): Buffer => {
  const int = (n: number) => (n < 127 ? Buffer.from([n]) : Buffer.from([127, ...sevenBits(n - 127)]));
  return Buffer.concat([
    Buffer.from([0]),
    int(name.length),
    Buffer.from(name),
    int(value.length),
    Buffer.from(value),
  ]);
};
/** RFC 7541 §5.1 integer continuation bytes. */
function sevenBits(n: number): number[] {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) + 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
/** A request's HEADERS frame (END_HEADERS) on stream 1 with `extra` header fields after the pseudo-headers. */
const request = (extra: Buffer): Buffer =>
  frame(
    1,
    0x4,
    1,
    Buffer.concat([
      Buffer.from([0x83, 0x86]), // :method POST, :scheme http (static table)
      literal(':path', '/SpiffeWorkloadAPI/FetchX509SVID'),
      literal(':authority', 'localhost'),
      literal('content-type', 'application/grpc'),
      literal('workload.spiffe.io', 'true'),
      extra,
    ]),
  );

describeWith(rootUser, 'Workload API abuse (issue: streams, garbage, disconnects, metadata)', () => {
  beforeAll(async () => {
    if (!existsSync(HOST_JS)) execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: ROOT });
    dir = mkdtempSync(join(tmpdir(), 'baton-wlapi-abuse-'));
    socketPath = join(dir, 'api.sock');
    host = await forkHost(socketPath, HOST_JS);
    const client = newClient();
    control = { client, call: client.FetchX509SVID({}, workloadMetadata()), messages: 0 };
    control.call.on('data', () => control.messages++);
    control.call.on('error', () => undefined);
    expect(await outcome(control.call, 10_000)).toBe('data');
    // Warm up the paths the cases take, so that the baseline heap includes compiled code.
    const warm = newClient();
    const calls = Array.from({ length: 100 }, () => warm.FetchX509SVID({}, workloadMetadata()));
    await Promise.all(calls.map((c) => outcome(c, 10_000)));
    for (const c of calls) c.cancel();
    warm.close();
    await until('warm-up streams gone', (s) => s.streams === 1 && s.connections === 1);
    baseline = await host.stats();
  }, 60_000);

  afterAll(async () => {
    control?.call.cancel();
    control?.client.close();
    await host?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('10,000 streams from one user: each gets its SVID or ResourceExhausted, and memory returns', async () => {
    const clients = Array.from({ length: 10 }, newClient);
    const calls = Array.from({ length: 10_000 }, (_, i) =>
      clients[i % clients.length]!.FetchX509SVID({}, workloadMetadata()),
    );
    for (const c of calls) c.on('error', () => undefined);
    try {
      // Generous: on a loaded 2-core machine the client side reading 2,047 first messages is the slow part.
      const ends = await Promise.all(calls.map((c) => outcome(c, 90_000)));
      const tally: Record<string, number> = {};
      for (const e of ends) tally[String(e)] = (tally[String(e)] ?? 0) + 1;
      // 2,048 per uid, the control stream one of them.
      expect(tally).toEqual({ data: 2047, [String(status.RESOURCE_EXHAUSTED)]: 7953 });
      await othersStillServed({ fresh: false });
    } finally {
      for (const c of calls) c.cancel();
      for (const c of clients) c.close();
    }
    const after = await until('the streams are released', backToBaseline);
    await othersStillServed();
    expect(after.heapUsed).toBeLessThan(baseline.heapUsed + 5 * MB);
  }, 150_000);

  it.each([
    ['random bytes', randomBytes(64 * 1024)],
    ['an HTTP/1.1 request', Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n', 'latin1')],
    ['the HTTP/2 preface, then garbage', Buffer.concat([PREFACE, randomBytes(4096)])],
    [
      'the HTTP/2 preface, then a HEADERS frame of garbage',
      Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0)), frame(1, 0x5, 1, randomBytes(512))]),
    ],
    [
      'the HTTP/2 preface, then a frame on stream 0 that must not be there',
      Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0)), frame(0, 0, 0, randomBytes(64))]),
    ],
    [
      'a request whose metadata holds a 1 MB value',
      Buffer.concat([
        PREFACE,
        frame(4, 0, 0, Buffer.alloc(0)),
        request(literal('x-big', 'a'.repeat(1 << 20))),
      ]),
    ],
    [
      'a request with 10,000 metadata entries',
      Buffer.concat([
        PREFACE,
        frame(4, 0, 0, Buffer.alloc(0)),
        request(Buffer.concat(Array.from({ length: 10_000 }, (_, i) => literal(`x-m${i}`, 'v')))),
      ]),
    ],
  ])('bad input: %s ends the connection, and its slot is released', async (_, bytes) => {
    // Closed, or GOAWAY and then closed by the client: either way the agent releases it.
    expect(['closed', 'goaway']).toContain(await closedAfter(bytes));
    await othersStillServed();
    await until('the connection is released', backToBaseline);
  });

  it('one uid holds at most 128 connections: more are closed at accept, and the rest keep being served', async () => {
    const sockets = Array.from({ length: 200 }, () => connect(socketPath));
    let closed = 0;
    for (const s of sockets) {
      s.on('error', () => undefined);
      s.on('close', () => closed++);
    }
    try {
      // The control client's connection is the 128th of root's.
      await until('the extra connections are closed', (st) => st.connections === 128 && closed === 73);
      await othersStillServed({ fresh: false });
    } finally {
      for (const s of sockets) s.destroy();
    }
    await until('the connections are released', backToBaseline);
  });

  it('a client killed with 200 streams open: its streams are released', async () => {
    const script = `
      const grpc = require('@grpc/grpc-js');
      const { workloadApiService } = require('./dist/clients/rotation/src/workload-api/proto.js');
      const Ctor = grpc.makeGenericClientConstructor(workloadApiService(), 'S');
      const client = new Ctor('unix://' + process.argv[1], grpc.credentials.createInsecure());
      let n = 0;
      for (let i = 0; i < 200; i++) {
        const m = new grpc.Metadata(); m.set('workload.spiffe.io', 'true');
        const call = client.FetchX509SVID({}, m);
        call.once('data', () => { if (++n === 200) process.stdout.write('open\\n'); });
        call.on('error', (e) => { process.stdout.write('error ' + e.code + '\\n'); });
      }`;
    const child = spawn(process.execPath, ['-e', script, socketPath], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const said = await new Promise<string>((resolve) =>
      child.stdout.once('data', (d: Buffer) => resolve(d.toString())),
    );
    expect(said.trim()).toBe('open');
    expect((await host.stats()).streams).toBe(baseline.streams + 200);
    child.kill('SIGKILL');
    await until('the killed client is released', backToBaseline);
    await othersStillServed();
  }, 30_000);
});
