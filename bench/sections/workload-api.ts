/**
 * Issue: the agent's SPIFFE Workload API under 1,000 concurrent FetchX509SVID streams, served by
 * the real WorkloadApiServer with the kernel's peer credentials in a process of its own
 * (bench/workload-api-host.ts), read by this process over grpc-js on its Unix socket.
 */
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  type Client,
  type ClientReadableStream,
  credentials,
  makeGenericClientConstructor,
  Metadata,
} from '@grpc/grpc-js';
import { WORKLOAD_METADATA_KEY, workloadApiService } from '../../clients/rotation/src/workload-api/proto';
import type { Target } from '../lib/report';
import { type Context, log, set } from '../lib/context';
import { onInterrupt, statusKb } from '../lib/proc';
import { figureOf, type Figure } from '../lib/results';
import { percentile } from '../lib/stats';
import { forkHost } from '../workload-api-host';

export const WORKLOAD_API_FIGURES = [
  'wlapi_first_message_p99_ms',
  'wlapi_rotation_fanout_p99_ms',
  'wlapi_agent_rss_mb',
];

const STREAMS = 1000;
/** Streams per connection: under the server's 1,024 (SETTINGS_MAX_CONCURRENT_STREAMS). */
const PER_CHANNEL = 250;
const WAIT_MS = 30_000;

/** Wall-clock milliseconds with sub-millisecond precision, comparable across local processes. */
const wallMs = () => performance.timeOrigin + performance.now();

type Fetch = Client & { FetchX509SVID(request: object, metadata: Metadata): ClientReadableStream<unknown> };

interface Watched {
  call: ClientReadableStream<unknown>;
  /** Arrival time of each message, the first one included. */
  arrivals: number[];
}

/**
 * `wlapi_first_message_p99_ms`: from a FetchX509SVID call to its first message, for each of the
 * last 500 of the 1,000 streams, opened one at a time beside those already open (the first 500 are
 * opened as one burst, whose p99 is a detail: it is the time to serve them all, not a wait). `wlapi_rotation_fanout_p99_ms`: from the host's publish() of a new SVID
 * to the last of the 1,000 streams receiving it, p99 over the rotations. `wlapi_agent_rss_mb`: the
 * host's VmRSS with the 1,000 streams open, after the rotations.
 */
export async function workloadApiSection(c: Context) {
  const socketPath = join(mkdtempSync(join(c.work, 'wlapi-')), 'api.sock');
  const host = await forkHost(
    socketPath,
    undefined,
    undefined,
    c.o.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${c.o.profileDir}`] : [],
  );
  const unregister = onInterrupt(() => host.stop());
  const Ctor = makeGenericClientConstructor(workloadApiService(), 'SpiffeWorkloadAPI');
  const clients: Fetch[] = [];
  for (let i = 0; i < STREAMS / PER_CHANNEL; i++)
    // Each its own connection: grpc-js shares a subchannel between equal channels otherwise.
    clients.push(
      new Ctor(`unix://${socketPath}`, credentials.createInsecure(), {
        'grpc.use_local_subchannel_pool': 1,
      }) as unknown as Fetch,
    );
  const streams: Watched[] = [];
  try {
    // One stream per connection first, so that connecting is not in the figure.
    await Promise.all(clients.map((client) => open(client, streams, () => undefined)));
    // Half opened as one burst (an agent restart: every workload reconnects at once), half one at a
    // time among them (a workload starting beside 500 others): the figure is the latter's p99.
    const burstMs: number[] = [];
    const opening: Promise<void>[] = [];
    for (let i = streams.length; i < STREAMS / 2; i++) {
      const started = performance.now();
      opening.push(
        open(clients[i % clients.length]!, streams, () => burstMs.push(performance.now() - started)),
      );
    }
    await Promise.all(opening);
    const firstMs: number[] = [];
    for (let i = streams.length; i < STREAMS; i++) {
      const started = performance.now();
      await open(clients[i % clients.length]!, streams, () => firstMs.push(performance.now() - started));
    }
    set(c, 'wlapi_first_message_p99_ms', figureOf([percentile(firstMs, 99)], 'ms'));
    c.details.wlapi_first_message_p50_ms = percentile(firstMs, 50);
    c.details.wlapi_first_message_burst_500_p99_ms = percentile(burstMs, 99);
    log(
      `   first message: p50 ${percentile(firstMs, 50).toFixed(1)} ms, p99 ${percentile(firstMs, 99).toFixed(1)} ms one at a time; burst of ${burstMs.length}: p99 ${percentile(burstMs, 99).toFixed(0)} ms`,
    );

    // One warm-up rotation, not counted: the first runs the rotation path unoptimised, among the
    // garbage of the burst.
    const rotations = c.o.quick ? 5 : 20;
    const fanout: number[] = [];
    for (let k = 0; k <= rotations; k++) {
      const r = await host.rotate();
      const lastAt = await allReceived(streams, k + 2);
      if (k > 0) fanout.push(lastAt - r.publishedAt);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    set(c, 'wlapi_rotation_fanout_p99_ms', figureOf([percentile(fanout, 99)], 'ms'));
    c.details.wlapi_rotation_fanout_ms = fanout.map((v) => Math.round(v * 10) / 10);
    log(`   rotation to the last of ${STREAMS} streams (ms): ${fanout.map((v) => v.toFixed(0)).join(' ')}`);
    const stats = await host.stats();
    if (stats.streams !== STREAMS)
      throw new Error(`the host counts ${stats.streams} streams, not ${STREAMS}`);
    set(c, 'wlapi_agent_rss_mb', figureOf([statusKb(host.pid, 'VmRSS') / 1024], 'MB'));
    c.details.wlapi_agent_heap_used_mb = stats.heapUsed / 2 ** 20;
    for (const t of workloadApiTargets(c.figures))
      log(`   ${t.met === null ? 'n/a ' : t.met ? 'MET ' : 'MISS'}  ${t.what}: ${t.value}`);
  } finally {
    for (const s of streams) s.call.cancel();
    for (const client of clients) client.close();
    await host.stop();
    unregister();
  }
}

/** Starts a stream on `client`; resolves at its first message (rejects on an early status). */
function open(client: Fetch, into: Watched[], first: () => void): Promise<void> {
  const metadata = new Metadata();
  metadata.set(WORKLOAD_METADATA_KEY, 'true');
  const call = client.FetchX509SVID({}, metadata);
  const w: Watched = { call, arrivals: [] };
  into.push(w);
  return new Promise((resolve, reject) => {
    call.on('data', () => {
      w.arrivals.push(wallMs());
      if (w.arrivals.length === 1) {
        first();
        resolve();
      }
    });
    call.on('error', (e: Error) => reject(new Error(`a stream ended: ${e.message}`)));
  });
}

/**
 * Waits until every stream has `count` messages (a stream is only sent a change, so message k+1 is
 * rotation k); the latest arrival among them.
 */
async function allReceived(streams: Watched[], count: number): Promise<number> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (streams.every((s) => s.arrivals.length >= count))
      return Math.max(...streams.map((s) => s.arrivals[count - 1]!));
    if (Date.now() > deadline) {
      const behind = streams.filter((s) => s.arrivals.length < count).length;
      throw new Error(
        `${behind} of ${streams.length} streams did not receive a rotation within ${WAIT_MS} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** The issue's targets for this section, printed beside issue 7's. */
export function workloadApiTargets(f: Record<string, Figure>): Target[] {
  const line = (name: string, what: string, limit: number, unit: string): Target => {
    const v = f[name]?.median ?? null;
    return { what, value: v === null ? 'not measured' : `${v} ${unit}`, met: v === null ? null : v < limit };
  };
  return [
    line('wlapi_first_message_p99_ms', 'Workload API first message p99 < 20 ms (1,000 streams)', 20, 'ms'),
    line('wlapi_rotation_fanout_p99_ms', 'Workload API rotation to 1,000 streams p99 < 250 ms', 250, 'ms'),
    line('wlapi_agent_rss_mb', 'Workload API agent RSS < 200 MB (1,000 streams)', 200, 'MB'),
  ];
}
