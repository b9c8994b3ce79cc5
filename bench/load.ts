/**
 * The load generator, a separate process from the server and from the orchestrator (run.ts forks
 * it). Everything a request needs (keys, CSRs, JSON bodies) is prepared before `ready`; the timed
 * part only sends, waits and records. Every loop is bounded by a request count and a deadline.
 */
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { createSecureContext } from 'node:tls';
import { csrPool, type KeyAndCsr } from './lib/csr';
import { type Reply, send, type TlsTarget } from './lib/http';
import type {
  AttestJob,
  Credential,
  FromLoad,
  IssueJob,
  LoadJob,
  RenewJob,
  RunResult,
  ToLoad,
  WatchJob,
} from './lib/load-protocol';
import { monoMs, sleep } from './lib/proc';
import { count, percentile } from './lib/stats';

const say = (m: FromLoad) => process.send?.(m);

/** Runs `fn` for indexes 0..n-1 with at most `concurrency` in flight. */
async function closedLoop(
  n: number,
  concurrency: number,
  deadline: number,
  fn: (i: number, worker: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (w: number) => {
    while (next < n && monoMs() < deadline) await fn(next++, w);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, (_x, w) => worker(w)));
}

function statusKey(r: Reply | Error): string {
  if (r instanceof Error) return `error:${(r as NodeJS.ErrnoException).code ?? r.message.slice(0, 40)}`;
  return String(r.status);
}

interface Timed {
  ok: number;
  latencies: number[];
  statuses: Record<string, number>;
}

function result(t: Timed, started: number, cpu0: NodeJS.CpuUsage, extra: Partial<RunResult> = {}): RunResult {
  const elapsedMs = monoMs() - started;
  const cpu = process.cpuUsage(cpu0);
  return {
    ok: t.ok,
    elapsedMs,
    perSecond: (t.ok * 1000) / elapsedMs,
    p50Ms: percentile(t.latencies, 50),
    p99Ms: percentile(t.latencies, 99),
    statuses: t.statuses,
    clientCpuMs: (cpu.user + cpu.system) / 1000,
    ...extra,
  };
}

/** One request, timed; a transport error is an answer too ("error:CODE"). */
async function timedSend(
  t: Timed,
  target: TlsTarget,
  p: Parameters<typeof send>[1],
  isOk: (r: Reply) => boolean,
): Promise<Reply | undefined> {
  const started = monoMs();
  try {
    const r = await send(target, p);
    t.latencies.push(monoMs() - started);
    count(t.statuses, statusKey(r));
    if (isOk(r)) t.ok++;
    return r;
  } catch (e) {
    count(t.statuses, statusKey(e as Error));
    return undefined;
  }
}

const is2xx = (r: Reply) => r.status >= 200 && r.status < 300;

/** The audience of the benchmark's JWT-SVIDs. */
const JWT_AUDIENCE = 'spiffe://bench.test/db';

async function issueJob(job: IssueJob, next: () => Promise<ToLoad>): Promise<void> {
  const setup = monoMs();
  const { target } = job;
  // A JWT-SVID request carries no CSR: none is made (making keys is the slow part of setup).
  const csrs = job.api === 'baton-jwt' ? [''] : csrPool(job.csrPool, 'w').map((c) => c.csrPem);
  const route = {
    'baton-workload': {
      path: '/v1/workload-svids',
      body: (csr: string) => JSON.stringify({ spiffe_id: job.spiffeId, csr }),
      ok: is2xx,
    },
    // The audience a service would ask for; the ttl the server's default (5m).
    'baton-jwt': {
      path: '/v1/jwt-svids',
      body: (_csr: string) => JSON.stringify({ spiffe_id: job.spiffeId, audience: [JWT_AUDIENCE] }),
      ok: is2xx,
    },
    // cfssl's API (api/signhandler): {"certificate_request": PEM, "hosts": [...]}; 200 with success.
    'cfssl-sign': {
      path: '/api/v1/cfssl/sign',
      body: (csr: string) => JSON.stringify({ certificate_request: csr, hosts: ['web.bench.test'] }),
      ok: (r: Reply) => r.status === 200 && r.body.includes('"success":true'),
    },
    echo: { path: '/echo', body: (csr: string) => JSON.stringify({ csr }), ok: is2xx },
  }[job.api];
  // One client per identity: with several nodes, each connection has its node's certificate and
  // asks for that node's entry; otherwise all connections share the target's identity.
  const identities = job.identities?.length ? job.identities : [{ ...target, spiffeId: job.spiffeId }];
  // Bodies are concatenated per request from pre-escaped parts: one copy of each CSR, not one per node.
  const csrJson = csrs.map((csr) => JSON.stringify(csr));
  const fixedBodies = job.api === 'baton-workload' || job.api === 'baton-jwt' ? [] : csrs.map(route.body);
  const clients = identities.map((id) => ({
    agent: new Agent({
      keepAlive: true,
      maxSockets: job.identities?.length ? 1 : job.concurrency,
      ca: target.ca,
      cert: id.cert,
      key: id.key,
    }),
    // A new connection per request (newConnections) uses the identity's context made here, as the
    // renewal storm's nodes do; keep-alive connections have the agent's.
    target: job.newConnections
      ? { ...target, secureContext: createSecureContext({ ca: target.ca, cert: id.cert, key: id.key }) }
      : target,
    prefix: `{"spiffe_id":${JSON.stringify(id.spiffeId ?? '')},"csr":`,
    jwtBody: JSON.stringify({ spiffe_id: id.spiffeId ?? '', audience: [JWT_AUDIENCE] }),
  }));
  let cursor = 0;
  const request = (t: Timed, worker: number) => {
    const client = clients[worker % clients.length]!;
    const i = cursor++ % csrs.length;
    const body =
      job.api === 'baton-workload'
        ? `${client.prefix}${csrJson[i]}}`
        : job.api === 'baton-jwt'
          ? client.jwtBody
          : fixedBodies[i]!;
    const agent = job.newConnections ? false : client.agent;
    return timedSend(t, client.target, { method: 'POST', path: route.path, body, agent }, route.ok);
  };
  const warm: Timed = { ok: 0, latencies: [], statuses: {} };
  await closedLoop(job.warmupRequests, job.concurrency, monoMs() + 60_000, (_i, w) =>
    request(warm, w).then(() => {}),
  );
  if (warm.ok === 0 && job.warmupRequests > 0)
    throw new Error(`warm-up got no success: ${JSON.stringify(warm.statuses)}`);
  say({ type: 'ready', setupMs: monoMs() - setup });
  for (let msg = await next(); msg.type === 'go'; msg = await next()) {
    const t: Timed = { ok: 0, latencies: [], statuses: {} };
    const cpu0 = process.cpuUsage();
    const started = monoMs();
    await closedLoop(job.maxRequests, job.concurrency, started + job.durationMs, (_i, w) =>
      request(t, w).then(() => {}),
    );
    say({ type: 'result', result: result(t, started, cpu0) });
  }
  for (const c of clients) c.agent.destroy();
}

interface Issuance {
  node_id?: string;
  certificate_chain: string;
}

async function attestJob(job: AttestJob, next: () => Promise<ToLoad>): Promise<void> {
  const setup = monoMs();
  const pool = csrPool(job.perRun * job.runs, job.label);
  const agent = new Agent({ keepAlive: true, maxSockets: job.concurrency, ca: job.target.ca });
  say({ type: 'ready', setupMs: monoMs() - setup });
  let base = 0;
  for (let msg = await next(); msg.type === 'go'; msg = await next()) {
    const t: Timed = { ok: 0, latencies: [], statuses: {} };
    const creds: Credential[] = [];
    const cpu0 = process.cpuUsage();
    const started = monoMs();
    const slice = pool.slice(base, base + job.perRun);
    base += job.perRun;
    await closedLoop(slice.length, job.concurrency, started + 300_000, async (i) => {
      const kc = slice[i]!;
      const body = JSON.stringify({ method: 'join_token', token: job.token, csr: kc.csrPem });
      const r = await timedSend(t, job.target, { method: 'POST', path: '/v1/attest', body, agent }, is2xx);
      if (r && is2xx(r)) {
        const b = JSON.parse(r.body) as Issuance;
        creds.push({ nodeId: b.node_id!, cert: b.certificate_chain, key: kc.keyPem });
      }
    });
    const res = result(t, started, cpu0);
    if (job.credentialsOut && creds.length)
      appendFileSync(job.credentialsOut, `${creds.map((c) => JSON.stringify(c)).join('\n')}\n`);
    say({ type: 'result', result: res });
  }
  agent.destroy();
}

export function readCredentials(path: string, offset = 0, limit = Number.MAX_SAFE_INTEGER): Credential[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .slice(offset, offset + limit)
    .map((l) => JSON.parse(l) as Credential);
}

/** Retry-After in seconds (RFC 9110 §10.2.3), or undefined. */
function retryAfterMs(r: Reply): number | undefined {
  const v = r.headers['retry-after'];
  const s = Number(Array.isArray(v) ? v[0] : v);
  return Number.isFinite(s) && s >= 0 ? s * 1000 : undefined;
}

async function renewJob(job: RenewJob, next: () => Promise<ToLoad>): Promise<void> {
  const setup = monoMs();
  const creds = readCredentials(job.credentialsIn, job.offset, job.limit);
  // A renewal brings a new key (CONTRACT: same identity, new key); refreshed after every storm.
  let fresh: KeyAndCsr[] = csrPool(creds.length, 'renew');
  // Each node's TLS context (its certificate, key and the roots), made before timing and again
  // after every storm, as a running agent holds its own: the server's work per connection is what
  // is measured, and parsing PEM on every connection would double the generator's (which shares
  // this machine's two cores with the server).
  const contextOf = (c: Credential) => createSecureContext({ ca: job.target.ca, cert: c.cert, key: c.key });
  let contexts = creds.map(contextOf);
  say({ type: 'ready', setupMs: monoMs() - setup });
  let base = 0;
  const renewOne = async (t: Timed, i: number): Promise<Reply | undefined> => {
    const c = creds[i]!;
    const body = JSON.stringify({ csr: fresh[i]!.csrPem });
    const target = { ...job.target, secureContext: contexts[i] };
    const r = await timedSend(t, target, { method: 'POST', path: '/v1/renew', body, agent: false }, is2xx);
    if (r && is2xx(r)) {
      creds[i] = {
        nodeId: c.nodeId,
        cert: (JSON.parse(r.body) as Issuance).certificate_chain,
        key: fresh[i]!.keyPem,
      };
    }
    return r;
  };
  for (let msg = await next(); msg.type === 'go'; msg = await next()) {
    const t: Timed = { ok: 0, latencies: [], statuses: {} };
    const cpu0 = process.cpuUsage();
    if (!job.storm) {
      const started = monoMs();
      const from = base;
      const n = Math.min(job.perRun, creds.length - from);
      base += n;
      await closedLoop(n, job.concurrency, started + 300_000, (i) => renewOne(t, from + i).then(() => {}));
      say({ type: 'result', result: result(t, started, cpu0) });
      continue;
    }
    const storm = job.storm;
    const start = msg.startMono ?? monoMs();
    while (monoMs() < start) await sleep(Math.min(5, start - monoMs()));
    const deadline = start + storm.deadlineMs;
    let inFlight = 0;
    const queue: (() => void)[] = [];
    const acquire = async () => {
      while (inFlight >= storm.maxInFlight) await new Promise<void>((r) => queue.push(r));
      inFlight++;
    };
    const release = () => {
      inFlight--;
      queue.shift()?.();
    };
    let lastOk = start;
    let attempts = 0;
    await Promise.all(
      creds.map(async (_c, i) => {
        await sleep(Math.random() * storm.jitterMs);
        for (let attempt = 1; attempt <= storm.maxAttempts && monoMs() < deadline; attempt++) {
          await acquire();
          attempts++;
          const r = await renewOne(t, i).finally(release);
          if (r && is2xx(r)) {
            lastOk = Math.max(lastOk, monoMs());
            return;
          }
          // 429/503 say when to come back; anything else backs off exponentially with full jitter.
          const hinted = r && (r.status === 429 || r.status === 503) ? retryAfterMs(r) : undefined;
          const backoff = Math.random() * Math.min(5000, 100 * 2 ** attempt);
          await sleep(
            Math.min(hinted !== undefined ? hinted + Math.random() * 250 : backoff, deadline - monoMs()),
          );
        }
      }),
    );
    const res = result(t, start, cpu0, { startMono: start, lastOkMono: lastOk, attempts });
    // Untimed: the next storm renews every node again, with keys it has never used and its new
    // certificate.
    fresh = csrPool(creds.length, 'renew');
    contexts = creds.map(contextOf);
    say({ type: 'result', result: res });
  }
  if (job.credentialsOut)
    writeFileSync(job.credentialsOut, `${creds.map((c) => JSON.stringify(c)).join('\n')}\n`);
}

interface FeedAnswer {
  events: { node_id: string | null }[];
  last: number;
}

async function watchJob(job: WatchJob, next: () => Promise<ToLoad>): Promise<void> {
  const setup = monoMs();
  const creds = readCredentials(job.credentialsIn, 0, job.watchers);
  if (creds.length < job.watchers) throw new Error(`only ${creds.length} watcher credentials`);
  const agents = creds.map(
    (c) => new Agent({ keepAlive: true, maxSockets: 1, ca: job.target.ca, cert: c.cert, key: c.key }),
  );
  const first = await send(job.target, {
    method: 'GET',
    path: '/v1/revocations?since=0&wait=0',
    agent: agents[0]!,
  });
  if (first.status !== 200)
    throw new Error(`revocation feed: HTTP ${first.status} ${first.body.slice(0, 200)}`);
  let last = (JSON.parse(first.body) as FeedAnswer).last;
  const admin = { ...job.target, cert: job.admin.cert, key: job.admin.key };
  say({ type: 'ready', setupMs: monoMs() - setup });
  let round = 0;
  for (let msg = await next(); msg.type === 'go'; msg = await next()) {
    const victim = job.victims[round++];
    if (!victim) throw new Error('no victim node left for this round');
    const t: Timed = { ok: 0, latencies: [], statuses: {} };
    const cpu0 = process.cpuUsage();
    let t0 = Number.POSITIVE_INFINITY;
    const since = last;
    const answers = agents.map(async (agent) => {
      for (let tries = 0; tries < 3; tries++) {
        const r = await send(job.target, {
          method: 'GET',
          path: `/v1/revocations?since=${since}&wait=30`,
          agent,
        });
        const at = monoMs();
        count(t.statuses, String(r.status));
        if (r.status !== 200) return Number.NaN;
        const a = JSON.parse(r.body) as FeedAnswer;
        last = Math.max(last, a.last);
        // An empty answer is the 30 s timeout: poll again (bounded).
        if (a.events.some((e) => e.node_id === victim)) return at;
      }
      return Number.NaN;
    });
    await sleep(job.settleMs);
    const started = monoMs();
    t0 = started;
    const rv = await send(admin, {
      method: 'POST',
      path: `/v1/admin/nodes/${victim}/revoke`,
      body: JSON.stringify({ reason: 'key-compromise' }),
      agent: false,
    });
    const revokeCallMs = monoMs() - t0;
    count(t.statuses, `revoke:${rv.status}`);
    const at = await Promise.all(answers);
    const delays = at.filter((a) => Number.isFinite(a)).map((a) => a - t0);
    t.ok = delays.length;
    t.latencies = delays;
    say({
      type: 'result',
      result: result(t, started, cpu0, { delaysMs: [delays], revokeCallMs: [revokeCallMs] }),
    });
  }
  for (const a of agents) a.destroy();
}

function main(): void {
  const inbox: ToLoad[] = [];
  let wake: (() => void) | undefined;
  process.on('message', (m: ToLoad) => {
    inbox.push(m);
    wake?.();
  });
  // The orchestrator going away ends the generator: never a stray load loop.
  process.on('disconnect', () => process.exit(0));
  const next = async (): Promise<ToLoad> => {
    while (inbox.length === 0) await new Promise<void>((r) => (wake = r));
    return inbox.shift()!;
  };
  void (async () => {
    const first = await next();
    if (first.type !== 'job') throw new Error('expected a job');
    const job: LoadJob = first.job;
    if (job.kind === 'issue') await issueJob(job, next);
    else if (job.kind === 'attest') await attestJob(job, next);
    else if (job.kind === 'renew') await renewJob(job, next);
    else await watchJob(job, next);
  })().then(
    () => process.exit(0),
    (e: Error) => {
      say({ type: 'error', message: e.message });
      setTimeout(() => process.exit(1), 100);
    },
  );
}

if (require.main === module) main();
