/** Closed-loop issuance runs against any server, and the load generator's own ceiling. */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { makeCfsslCa } from '../lib/cfssl';
import { Generator } from '../lib/generator';
import type { TlsTarget } from '../lib/http';
import type { IssueJob, RunResult } from '../lib/load-protocol';
import { drain, stop, treeCpuMs, treeSystemCpuMs, waitForLine } from '../lib/proc';
import { figureOf } from '../lib/results';
import { mergeCounts } from '../lib/stats';
import { readFileSync } from 'node:fs';
import { type Context, log, set } from '../lib/context';

export interface IssueSummary {
  results: RunResult[];
  /** Server CPU ms per successful request, per run (when a server pid is given). */
  cpuPerOk: number[];
  /** The kernel's part of it (stime). */
  systemCpuPerOk: number[];
}

export function issueJob(
  c: Context,
  job: Omit<IssueJob, 'kind' | 'warmupRequests' | 'durationMs' | 'maxRequests' | 'csrPool'>,
): IssueJob {
  // A cap well above any rate seen here; each request has its own key (a key is certified once,
  // so a reused one would be refused with 409). The pool is sized so that a Baton run does not wrap
  // it: 60,000 covers five 3-second runs at 4,000/s (30,000 wrapped once Baton passed 2,000/s).
  const expected = Math.max(2000, Math.round((c.s.issueDurationMs / 1000) * 8000));
  return {
    kind: 'issue',
    warmupRequests: c.s.warmupRequests,
    durationMs: c.s.issueDurationMs,
    maxRequests: expected,
    csrPool: Math.min(60_000, c.s.warmupRequests + c.s.runs * expected),
    ...job,
  };
}

export async function measureIssue(
  c: Context,
  job: Omit<IssueJob, 'kind' | 'warmupRequests' | 'durationMs' | 'maxRequests' | 'csrPool'>,
  serverPid?: number,
): Promise<IssueSummary> {
  const g = await Generator.start(issueJob(c, job));
  const out: IssueSummary = { results: [], cpuPerOk: [], systemCpuPerOk: [] };
  try {
    for (let r = 0; r < c.s.runs; r++) {
      const cpu0 = serverPid ? treeCpuMs(serverPid) : 0;
      const sys0 = serverPid ? treeSystemCpuMs(serverPid) : 0;
      const res = await g.run();
      if (serverPid && res.ok) {
        out.cpuPerOk.push((treeCpuMs(serverPid) - cpu0) / res.ok);
        out.systemCpuPerOk.push((treeSystemCpuMs(serverPid) - sys0) / res.ok);
      }
      out.results.push(res);
    }
  } finally {
    await g.close();
  }
  return out;
}

export function recordIssue(c: Context, prefix: string, conc: number, s: IssueSummary) {
  const unit = prefix.startsWith('loadgen')
    ? 'requests/s'
    : prefix.startsWith('jwt')
      ? 'tokens/s'
      : 'certificates/s';
  set(
    c,
    `${prefix}_c${conc}_per_s`,
    figureOf(
      s.results.map((r) => r.perSecond),
      unit,
    ),
  );
  set(
    c,
    `${prefix}_c${conc}_p50_ms`,
    figureOf(
      s.results.map((r) => r.p50Ms),
      'ms',
    ),
  );
  set(
    c,
    `${prefix}_c${conc}_p99_ms`,
    figureOf(
      s.results.map((r) => r.p99Ms),
      'ms',
    ),
  );
  const ok = s.results.reduce((n, r) => n + r.ok, 0);
  set(
    c,
    `${prefix}_c${conc}_client_cpu_ms_per_request`,
    figureOf(
      s.results.map((r) => r.clientCpuMs / Math.max(1, r.ok)),
      'ms',
    ),
  );
  c.details[`${prefix}_c${conc}_statuses`] = mergeCounts(s.results.map((r) => r.statuses));
  log(
    `   ${prefix} c${conc}: ${c.figures[`${prefix}_c${conc}_per_s`]!.median}/s p50 ${c.figures[`${prefix}_c${conc}_p50_ms`]!.median} ms p99 ${c.figures[`${prefix}_c${conc}_p99_ms`]!.median} ms (${ok} ok; ${JSON.stringify(c.details[`${prefix}_c${conc}_statuses`])})`,
  );
}

/** The generator against a server that does nothing: how fast the client side alone can go. */
export async function loadgenSection(c: Context) {
  const ca = c.cfsslCa ?? makeCfsslCa(mkdtempSync(join(c.work, 'echo-ca-')));
  const child = spawn(
    process.execPath,
    [join(__dirname, '..', 'echo-server.js'), ca.serverCert, ca.serverKey, ca.caCert],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  try {
    const url = await waitForLine(child, /listening on (https:\/\/\S+)/, 10_000, 'echo server');
    drain(child);
    const target: TlsTarget = { url, ca: readFileSync(ca.caCert, 'utf8'), ...ca.client };
    const s = await measureIssue(c, { target, api: 'echo', concurrency: 16 }, child.pid);
    recordIssue(c, 'loadgen_echo', 16, s);
    // What a bare node:https server spends per keep-alive mTLS request: the floor under Baton's HTTP layer.
    set(c, 'loadgen_echo_server_cpu_ms_per_request', figureOf(s.cpuPerOk, 'ms'));
    // And per request on a new connection: a full mTLS handshake on each side, as in a renewal.
    const h = await measureIssue(
      c,
      { target, api: 'echo', concurrency: 16, newConnections: true },
      child.pid,
    );
    recordIssue(c, 'loadgen_echo_handshake', 16, h);
    set(c, 'loadgen_echo_handshake_server_cpu_ms_per_request', figureOf(h.cpuPerOk, 'ms'));
    // The generator's own CPU per request bounds what one generator process can drive on one core.
    const cpu = c.figures.loadgen_echo_c16_client_cpu_ms_per_request!;
    set(
      c,
      'loadgen_ceiling_per_s',
      figureOf(cpu.median ? [1000 / cpu.max!, 1000 / cpu.median, 1000 / cpu.min!] : [], 'requests/s'),
    );
  } finally {
    await stop(child);
  }
}
