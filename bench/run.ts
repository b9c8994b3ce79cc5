/**
 * `npm run bench [-- --quick]`: issue 7's benchmark. Starts Baton (PostgreSQL and PGlite), cfssl and
 * openssl on this machine, drives the servers from separate load-generator processes (load.ts) over
 * keep-alive mutual TLS on 127.0.0.1 only, and writes bench/results/latest.json plus a dated copy.
 * Figures are medians over several runs with min and max. Timings are printed, never asserted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { type BatonServer, createEntry, createToken, startBaton } from './lib/baton';
import {
  cfsslMissing,
  cfsslVersion,
  CFSSL_INSTALL_HINT,
  makeCfsslCa,
  startCfssl,
  type CfsslCa,
} from './lib/cfssl';
import {
  batonCrl,
  cfsslCrl,
  opensslCrl,
  prepareCfsslCrl,
  prepareOpensslCrl,
  revokedEntries,
} from './lib/crl';
import { benchKeyring, cryptoCeilingPerSecond, pipelineCsrs, pipelinePerSecond } from './lib/crypto';
import { keyAndCsr } from './lib/csr';
import { Generator } from './lib/generator';
import { json, send, type TlsTarget } from './lib/http';
import type { IssueJob, RunResult } from './lib/load-protocol';
import { type BenchOptions, parseOptions, type Sizes, sizes } from './lib/options';
import {
  type BenchDatabase,
  countRows,
  createDatabase,
  postgresReachable,
  postgresVersion,
  runSql,
} from './lib/postgres';
import {
  drain,
  installInterruptHandler,
  monoMs,
  onInterrupt,
  RssWatch,
  stop,
  treeCpuMs,
  treeSystemCpuMs,
  waitForLine,
} from './lib/proc';
import {
  type Figure,
  figureOf,
  formatTable,
  missing,
  ratioOf,
  REQUIRED_FIGURES,
  type Results,
  writeResults,
} from './lib/results';
import { count, mergeCounts, percentile, round } from './lib/stats';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

const ROOT = join(__dirname, '..', '..');
const log = (m: string) => process.stdout.write(`${m}\n`);

interface Context {
  o: BenchOptions;
  s: Sizes;
  work: string;
  figures: Record<string, Figure>;
  details: Record<string, unknown>;
  cfsslReason?: string;
  cfsslCa?: CfsslCa;
}

const set = (c: Context, name: string, f: Figure) => {
  c.figures[name] = f;
};

/** Runs a section; a failure nulls its figures with the reason instead of ending the benchmark. */
async function section(c: Context, name: string, figureNames: string[], fn: () => Promise<void>) {
  if (c.o.skip.has(name)) {
    for (const f of figureNames) c.figures[f] ??= missing(unitOf(f), `section ${name} skipped (--skip)`);
    return;
  }
  const started = Date.now();
  log(`\n== ${name}`);
  try {
    await fn();
  } catch (e) {
    const reason = `${name} failed: ${(e as Error).message.split('\n')[0]!.slice(0, 300)}`;
    log(`   ${reason}`);
    for (const f of figureNames) c.figures[f] ??= missing(unitOf(f), reason);
  }
  log(`   (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

function unitOf(name: string): string {
  if (name.endsWith('_per_s'))
    return name.includes('crypto') || name.includes('pipeline') ? 'issuances/s' : 'certificates/s';
  if (name.endsWith('_ms') || name.includes('_ms_per_')) return 'ms';
  if (name.endsWith('_bytes')) return 'bytes';
  if (name.endsWith('_seconds')) return 's';
  if (name.endsWith('_mb')) return 'MB';
  if (name.startsWith('storm') || name.endsWith('_5xx')) return 'responses';
  return name.startsWith('ratio') ? 'x' : '';
}

function machine(o: BenchOptions): Record<string, unknown> {
  const cpu = cpus();
  let opensslVersion = '';
  try {
    opensslVersion = execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim();
  } catch {
    opensslVersion = 'missing';
  }
  return {
    cpus: cpu.length,
    cpu_model: cpu[0]?.model ?? 'unknown',
    memory_gb: round(totalmem() / 2 ** 30),
    os: `${process.platform} ${release()}`,
    node: process.version,
    openssl: opensslVersion,
    cfssl: cfsslVersion() ?? null,
    date: new Date().toISOString(),
    quick: o.quick,
    baton_workers: o.workers,
    baton_log_level: o.logLevel,
  };
}

// ---- in-process: crypto ceiling, pipeline, CRLs ------------------------------------------------

async function cryptoSection(c: Context) {
  const ceilings: number[] = [];
  const pipelines: number[] = [];
  const csrs = pipelineCsrs(c.s.pipelineCsrs);
  await pipelinePerSecond(csrs.slice(0, 200)); // warm-up (JIT)
  cryptoCeilingPerSecond(100);
  // Alternated, so both see the same machine state.
  for (let r = 0; r < c.s.runs; r++) {
    ceilings.push(cryptoCeilingPerSecond(c.s.cryptoMs));
    pipelines.push(await pipelinePerSecond(csrs));
  }
  set(c, 'crypto_ceiling_per_s', figureOf(ceilings, 'issuances/s'));
  set(c, 'pipeline_per_s', figureOf(pipelines, 'issuances/s'));
  log(
    `   crypto ceiling ${round(c.figures.crypto_ceiling_per_s!.median!)}/s, pipeline ${round(c.figures.pipeline_per_s!.median!)}/s`,
  );
}

async function crlSection(c: Context) {
  const ca = benchKeyring().signing;
  const tools = mkdtempSync(join(c.work, 'crl-'));
  const cfsslCa = c.cfsslCa;
  const caFiles = cfsslCa ?? makeCfsslCa(mkdtempSync(join(c.work, 'crl-ca-')));
  for (const [n, label] of [
    [1_000, '1k'],
    [10_000, '10k'],
    [100_000, '100k'],
  ] as const) {
    const entries = revokedEntries(n);
    batonCrl(ca, entries.slice(0, 1000)); // warm-up
    const runs = Array.from({ length: c.s.crlRuns }, () => batonCrl(ca, entries));
    set(
      c,
      `crl_${label}_ms`,
      figureOf(
        runs.map((r) => r.ms),
        'ms',
      ),
    );
    set(
      c,
      `crl_${label}_bytes`,
      figureOf(
        runs.map((r) => r.bytes),
        'bytes',
      ),
    );
    const oDir = join(tools, `openssl-${label}`);
    const oArgs = prepareOpensslCrl(oDir, caFiles.caCert, caFiles.caKey, entries);
    const o: { ms: number; bytes: number }[] = [];
    for (let r = 0; r < c.s.toolCrlRuns; r++) o.push(await opensslCrl(oDir, oArgs));
    set(
      c,
      `openssl_crl_${label}_ms`,
      figureOf(
        o.map((r) => r.ms),
        'ms',
      ),
    );
    set(
      c,
      `openssl_crl_${label}_bytes`,
      figureOf(
        o.map((r) => r.bytes),
        'bytes',
      ),
    );
    if (c.cfsslReason) {
      set(c, `cfssl_crl_${label}_ms`, missing('ms', c.cfsslReason));
    } else {
      const cArgs = prepareCfsslCrl(join(tools, `cfssl-${label}`), caFiles.caCert, caFiles.caKey, entries);
      const f: { ms: number; bytes: number }[] = [];
      for (let r = 0; r < c.s.toolCrlRuns; r++) f.push(await cfsslCrl(cArgs));
      set(
        c,
        `cfssl_crl_${label}_ms`,
        figureOf(
          f.map((r) => r.ms),
          'ms',
        ),
      );
      set(
        c,
        `cfssl_crl_${label}_bytes`,
        figureOf(
          f.map((r) => r.bytes),
          'bytes',
        ),
      );
    }
    log(
      `   ${label}: baton ${c.figures[`crl_${label}_ms`]!.median} ms, openssl ${c.figures[`openssl_crl_${label}_ms`]!.median} ms, cfssl ${c.figures[`cfssl_crl_${label}_ms`]!.median} ms`,
    );
  }
  rmSync(tools, { recursive: true, force: true });
}

// ---- load: a closed-loop issuance measurement ----------------------------------------------------

interface IssueSummary {
  results: RunResult[];
  /** Server CPU ms per successful request, per run (when a server pid is given). */
  cpuPerOk: number[];
  /** The kernel's part of it (stime). */
  systemCpuPerOk: number[];
}

function issueJob(
  c: Context,
  job: Omit<IssueJob, 'kind' | 'warmupRequests' | 'durationMs' | 'maxRequests' | 'csrPool'>,
): IssueJob {
  // A cap well above any rate seen here; each request has its own key (a key is certified once,
  // so a reused one would be refused: the pool is sized so a Baton run never wraps it).
  const expected = Math.max(2000, Math.round((c.s.issueDurationMs / 1000) * 8000));
  return {
    kind: 'issue',
    warmupRequests: c.s.warmupRequests,
    durationMs: c.s.issueDurationMs,
    maxRequests: expected,
    csrPool: Math.min(30_000, c.s.warmupRequests + c.s.runs * expected),
    ...job,
  };
}

async function measureIssue(
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

function recordIssue(c: Context, prefix: string, conc: number, s: IssueSummary) {
  set(
    c,
    `${prefix}_c${conc}_per_s`,
    figureOf(
      s.results.map((r) => r.perSecond),
      'certificates/s',
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
async function loadgenSection(c: Context) {
  const ca = c.cfsslCa ?? makeCfsslCa(mkdtempSync(join(c.work, 'echo-ca-')));
  const child = spawn(
    process.execPath,
    [join(__dirname, 'echo-server.js'), ca.serverCert, ca.serverKey, ca.caCert],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  try {
    const url = await waitForLine(child, /listening on (https:\/\/\S+)/, 10_000, 'echo server');
    drain(child);
    const target: TlsTarget = { url, ca: readFileSync(ca.caCert, 'utf8'), ...ca.client };
    const s = await measureIssue(c, { target, api: 'echo', concurrency: 16 });
    recordIssue(c, 'loadgen_echo', 16, s);
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

// ---- Baton ----------------------------------------------------------------------------------------

interface Issuance {
  node_id: string;
  certificate_chain: string;
}

/** Attests one node from the orchestrator (setup) and gives it an entry to mint. */
async function nodeWithEntry(server: BatonServer, token: string, name: string) {
  const kc = keyAndCsr(name);
  const r = json<Issuance>(
    await send(
      { url: server.url, ca: server.bundle },
      {
        method: 'POST',
        path: '/v1/attest',
        body: JSON.stringify({ method: 'join_token', token, csr: kc.csrPem }),
        agent: false,
      },
    ),
    'attest',
  );
  const spiffeId = await createEntry(server, name, r.node_id);
  return {
    target: { url: server.url, ca: server.bundle, cert: r.certificate_chain, key: kc.keyPem },
    spiffeId,
  };
}

const BATON_ENV = { BATON_RATE_LIMITS: 'off' };

/**
 * Workload SVID issuance at each concurrency. Connection k speaks for node k (its own client
 * certificate and entry), as a fleet of agents does; with `oneNode`, c16 is measured again with
 * all sixteen connections speaking for one node, which serializes on that node's row lock.
 */
async function batonIssuance(
  c: Context,
  server: BatonServer,
  prefix: string,
  concurrencies: number[],
  oneNode = false,
) {
  const nodes = Math.max(...concurrencies);
  const token = await createToken(server, nodes);
  const made: Awaited<ReturnType<typeof nodeWithEntry>>[] = [];
  for (let i = 0; i < nodes; i++)
    made.push(await nodeWithEntry(server, token, `${prefix.replace(/_/g, '-')}-web${i}`));
  const identities = made.map((n) => ({ cert: n.target.cert!, key: n.target.key!, spiffeId: n.spiffeId }));
  for (const conc of concurrencies) {
    const s = await measureIssue(
      c,
      {
        target: made[0]!.target,
        api: 'baton-workload',
        identities: identities.slice(0, conc),
        concurrency: conc,
      },
      server.pid,
    );
    recordIssue(c, prefix, conc, s);
    if (conc === 16) {
      set(c, `${prefix}_cpu_ms_per_certificate`, figureOf(s.cpuPerOk, 'ms'));
      set(c, `${prefix}_kernel_cpu_ms_per_certificate`, figureOf(s.systemCpuPerOk, 'ms'));
    }
  }
  if (oneNode) {
    const s = await measureIssue(
      c,
      { target: made[0]!.target, api: 'baton-workload', spiffeId: made[0]!.spiffeId, concurrency: 16 },
      server.pid,
    );
    recordIssue(c, `${prefix}_one_node`, 16, s);
  }
}

/** Attests `n` nodes with up to `generators` processes; returns the credentials files. */
async function attestMany(
  c: Context,
  server: BatonServer,
  n: number,
  generators: number,
  label: string,
  runs = 1,
) {
  const per = Math.ceil(n / generators);
  const files: string[] = [];
  const gens: Generator[] = [];
  try {
    for (let i = 0; i < generators; i++) {
      const file = join(c.work, `${label}-${i}.jsonl`);
      files.push(file);
      const token = await createToken(server, per * runs);
      gens.push(
        await Generator.start({
          kind: 'attest',
          target: { url: server.url, ca: server.bundle },
          token,
          concurrency: 16,
          perRun: Math.ceil(per),
          runs,
          credentialsOut: file,
          label: `${label}${i}`,
        }),
      );
    }
    const results: RunResult[][] = [];
    for (let r = 0; r < runs; r++) results.push(await Promise.all(gens.map((g) => g.run())));
    return { files, results };
  } finally {
    await Promise.all(gens.map((g) => g.close()));
  }
}

async function batonPostgres(c: Context) {
  if (!(await postgresReachable())) throw new Error('PostgreSQL does not answer on 127.0.0.1:5432');
  c.details.postgres = await postgresVersion();
  const db = await createDatabase('baton_bench');
  let server: BatonServer | undefined;
  let rss: RssWatch | undefined;
  try {
    server = await startBaton({
      databaseUrl: db.url,
      workers: c.o.workers,
      logLevel: c.o.logLevel,
      env: BATON_ENV,
      nodeArgs: c.o.profileDir ? ['--cpu-prof', '--cpu-prof-dir', c.o.profileDir] : [],
    });
    rss = new RssWatch(server.pid);
    log(`   baton on PostgreSQL: ${server.url} (${c.o.workers} worker(s))`);
    await batonIssuance(c, server, 'issuance', [1, 16, 64], true);
    set(c, 'cpu_ms_per_certificate', c.figures.issuance_cpu_ms_per_certificate!);
    delete c.figures.issuance_cpu_ms_per_certificate;

    // Attestation at c16; the nodes it makes then renew at c16, each over its own new connection.
    const attested = await attestMany(c, server, c.s.attestPerRun, 1, 'attest16', c.s.runs);
    set(
      c,
      'attest_c16_per_s',
      figureOf(
        attested.results.map((r) => r[0]!.perSecond),
        'certificates/s',
      ),
    );
    set(
      c,
      'attest_c16_p99_ms',
      figureOf(
        attested.results.map((r) => r[0]!.p99Ms),
        'ms',
      ),
    );
    c.details.attest_c16_statuses = mergeCounts(attested.results.map((r) => r[0]!.statuses));
    log(
      `   attest c16: ${c.figures.attest_c16_per_s!.median}/s p99 ${c.figures.attest_c16_p99_ms!.median} ms`,
    );
    const renew = await Generator.start({
      kind: 'renew',
      target: { url: server.url, ca: server.bundle },
      credentialsIn: attested.files[0]!,
      offset: 0,
      limit: c.s.attestPerRun * c.s.runs,
      perRun: c.s.attestPerRun,
      concurrency: 16,
    });
    const renewals: RunResult[] = [];
    try {
      for (let r = 0; r < c.s.runs; r++) renewals.push(await renew.run());
    } finally {
      await renew.close();
    }
    set(
      c,
      'renew_c16_per_s',
      figureOf(
        renewals.map((r) => r.perSecond),
        'certificates/s',
      ),
    );
    set(
      c,
      'renew_c16_p99_ms',
      figureOf(
        renewals.map((r) => r.p99Ms),
        'ms',
      ),
    );
    c.details.renew_c16_statuses = mergeCounts(renewals.map((r) => r.statuses));
    log(
      `   renew c16 (new mTLS connection each): ${c.figures.renew_c16_per_s!.median}/s p99 ${c.figures.renew_c16_p99_ms!.median} ms`,
    );

    await section(c, 'revocation', ['revocation_100_watchers_p50_ms', 'revocation_100_watchers_p99_ms'], () =>
      revocationSection(c, server!),
    );
    await section(c, 'storm', ['storm_10k_seconds', 'storm_10k_5xx'], () => stormSection(c, server!));
  } finally {
    rss?.stop();
    if (rss) {
      set(c, 'server_rss_peak_mb', figureOf([rss.hwmSumKb / 1024], 'MB'));
      set(c, 'server_rss_sampled_peak_mb', figureOf([rss.peakRssKb / 1024], 'MB'));
    }
    await server?.stop();
    await db.drop().catch(() => undefined);
  }
}

async function revocationSection(c: Context, server: BatonServer) {
  const { files } = await attestMany(c, server, c.s.watchers + c.s.revocationRounds, 1, 'watch');
  const lines = readFileSync(files[0]!, 'utf8').split('\n').filter(Boolean);
  const victims = lines.slice(c.s.watchers).map((l) => (JSON.parse(l) as { nodeId: string }).nodeId);
  const g = await Generator.start({
    kind: 'watch',
    target: { url: server.url, ca: server.bundle },
    credentialsIn: files[0]!,
    watchers: c.s.watchers,
    admin: { cert: server.admin.cert!, key: server.admin.key! },
    victims,
    settleMs: 1000,
  });
  const p50: number[] = [];
  const p99: number[] = [];
  const revokeCalls: number[] = [];
  const missed: number[] = [];
  try {
    for (let r = 0; r < c.s.revocationRounds; r++) {
      const res = await g.run(undefined, 120_000);
      const delays = res.delaysMs?.[0] ?? [];
      missed.push(c.s.watchers - delays.length);
      p50.push(percentile(delays, 50));
      p99.push(delays.length < c.s.watchers ? Number.POSITIVE_INFINITY : percentile(delays, 99));
      revokeCalls.push(res.revokeCallMs?.[0] ?? Number.NaN);
    }
  } finally {
    await g.close();
  }
  set(c, 'revocation_100_watchers_p50_ms', figureOf(p50, 'ms'));
  set(
    c,
    'revocation_100_watchers_p99_ms',
    missed.some((m) => m > 0)
      ? missing('ms', `watchers missed the revocation: ${missed.join(',')}`)
      : figureOf(p99, 'ms'),
  );
  set(c, 'revocation_revoke_call_ms', figureOf(revokeCalls, 'ms'));
  log(
    `   revocation to ${c.s.watchers} watchers: p50 ${c.figures.revocation_100_watchers_p50_ms!.median} ms, p99 ${c.figures.revocation_100_watchers_p99_ms!.median} ms`,
  );
}

async function stormSection(c: Context, server: BatonServer) {
  const setupStart = Date.now();
  const { files, results } = await attestMany(c, server, c.s.stormNodes, c.s.stormGenerators, 'storm');
  const attestedOk = results[0]!.reduce((n, r) => n + r.ok, 0);
  c.details.storm_setup = { nodes: attestedOk, attest_seconds: (Date.now() - setupStart) / 1000 };
  log(`   storm setup: ${attestedOk} nodes attested in ${((Date.now() - setupStart) / 1000).toFixed(1)} s`);
  const per = Math.ceil(c.s.stormNodes / c.s.stormGenerators);
  const gens = await Promise.all(
    files.map((file) =>
      Generator.start({
        kind: 'renew',
        target: { url: server.url, ca: server.bundle },
        credentialsIn: file,
        credentialsOut: file,
        offset: 0,
        limit: per,
        perRun: per,
        concurrency: 0,
        storm: { jitterMs: 1000, maxInFlight: 256, maxAttempts: 30, deadlineMs: 120_000 },
      }),
    ),
  );
  const seconds: number[] = [];
  const fiveXx: number[] = [];
  const statuses: Record<string, number>[] = [];
  try {
    for (let r = 0; r < c.s.stormRuns; r++) {
      const start = monoMs() + 500;
      const res = await Promise.all(gens.map((g) => g.run(start, 400_000)));
      const ok = res.reduce((n, x) => n + x.ok, 0);
      const all = mergeCounts(res.map((x) => x.statuses));
      statuses.push(all);
      const last = Math.max(...res.map((x) => x.lastOkMono ?? start));
      seconds.push(ok === attestedOk ? (last - start) / 1000 : Number.POSITIVE_INFINITY);
      fiveXx.push(
        Object.entries(all)
          .filter(([k]) => k.startsWith('5'))
          .reduce((n, [, v]) => n + v, 0),
      );
      log(
        `   storm ${r + 1}: ${ok}/${attestedOk} renewed in ${((last - start) / 1000).toFixed(1)} s; answers ${JSON.stringify(all)}`,
      );
    }
  } finally {
    await Promise.all(gens.map((g) => g.close()));
  }
  set(
    c,
    'storm_10k_seconds',
    seconds.some((s) => !Number.isFinite(s))
      ? missing('s', 'not every node renewed before the deadline')
      : figureOf(seconds, 's'),
  );
  set(c, 'storm_10k_5xx', figureOf(fiveXx, 'responses'));
  const non2xx: Record<string, number> = {};
  for (const [k, v] of Object.entries(mergeCounts(statuses))) if (!k.startsWith('2')) count(non2xx, k, v);
  c.details.storm = {
    nodes: attestedOk,
    runs: c.s.stormRuns,
    jitter_ms: 1000,
    max_in_flight_per_generator: 256,
    generators: c.s.stormGenerators,
    non_2xx_by_status: non2xx,
    statuses_per_run: statuses,
  };
}

/**
 * What `--workers` buys: a server with one process and one with N, each on its own database with
 * sixteen nodes, measured at c16 in alternation (one run each, turn about) so that both see the
 * same machine, which other work shares.
 */
async function workersAb(c: Context) {
  const configs = [1, Math.max(2, c.o.workers)];
  const names = ['one_worker', 'workers'];
  const dbs: BenchDatabase[] = [];
  const servers: BatonServer[] = [];
  const watches: RssWatch[] = [];
  const gens: Generator[] = [];
  try {
    for (const workers of configs) {
      const db = await createDatabase('baton_bench_ab');
      dbs.push(db);
      const server = await startBaton({
        databaseUrl: db.url,
        workers,
        logLevel: c.o.logLevel,
        env: BATON_ENV,
      });
      servers.push(server);
      watches.push(new RssWatch(server.pid));
      const token = await createToken(server, 16);
      const made: Awaited<ReturnType<typeof nodeWithEntry>>[] = [];
      for (let i = 0; i < 16; i++) made.push(await nodeWithEntry(server, token, `ab-web${i}`));
      const identities = made.map((n) => ({
        cert: n.target.cert!,
        key: n.target.key!,
        spiffeId: n.spiffeId,
      }));
      gens.push(
        await Generator.start(
          issueJob(c, { target: made[0]!.target, api: 'baton-workload', identities, concurrency: 16 }),
        ),
      );
    }
    const rates: number[][] = [[], []];
    const p99s: number[][] = [[], []];
    const cpu: number[][] = [[], []];
    for (let r = 0; r < c.s.runs; r++) {
      for (const k of [0, 1]) {
        const cpu0 = treeCpuMs(servers[k]!.pid);
        const res = await gens[k]!.run();
        rates[k]!.push(res.perSecond);
        p99s[k]!.push(res.p99Ms);
        if (res.ok) cpu[k]!.push((treeCpuMs(servers[k]!.pid) - cpu0) / res.ok);
      }
    }
    for (const k of [0, 1]) {
      set(c, `${names[k]}_issuance_c16_per_s`, figureOf(rates[k]!, 'certificates/s'));
      set(c, `${names[k]}_issuance_c16_p99_ms`, figureOf(p99s[k]!, 'ms'));
      set(c, `${names[k]}_cpu_ms_per_certificate`, figureOf(cpu[k]!, 'ms'));
    }
    set(
      c,
      'ratio_workers_vs_one_worker_c16',
      ratioOf(c.figures.workers_issuance_c16_per_s, c.figures.one_worker_issuance_c16_per_s),
    );
    log(
      `   c16, alternated: 1 process ${c.figures.one_worker_issuance_c16_per_s!.median}/s, ${configs[1]} workers ${c.figures.workers_issuance_c16_per_s!.median}/s`,
    );
  } finally {
    await Promise.all(gens.map((g) => g.close()));
    for (const [k, w] of watches.entries()) {
      w.stop();
      set(c, `${names[k]}_server_rss_peak_mb`, figureOf([w.hwmSumKb / 1024], 'MB'));
    }
    for (const s of servers) await s.stop();
    for (const db of dbs) await db.drop().catch(() => undefined);
  }
}

async function batonPglite(c: Context) {
  const server = await startBaton({ workers: 1, logLevel: c.o.logLevel, env: BATON_ENV });
  try {
    log(`   baton on PGlite: ${server.url}`);
    await batonIssuance(c, server, 'pglite_issuance', [1, 16]);
  } finally {
    await server.stop();
  }
}

// ---- cfssl ----------------------------------------------------------------------------------------

async function cfsslSection(c: Context) {
  if (c.cfsslReason || !c.cfsslCa) throw new Error(c.cfsslReason ?? 'no cfssl CA');
  const nodb = await startCfssl(c.cfsslCa);
  try {
    for (const conc of [1, 16, 64])
      recordIssue(
        c,
        'cfssl_nodb',
        conc,
        await measureIssue(c, { target: nodb.target, api: 'cfssl-sign', concurrency: conc }, nodb.pid),
      );
  } finally {
    await nodb.stop();
  }
  const db = await createDatabase('cfssl_bench');
  try {
    await runSql(db.url, readFileSync(join(ROOT, 'bench', 'cfssl-pg-schema.sql'), 'utf8'));
    const pg = await startCfssl(c.cfsslCa, db.url);
    try {
      for (const conc of [1, 16]) {
        const s = await measureIssue(c, { target: pg.target, api: 'cfssl-sign', concurrency: conc }, pg.pid);
        recordIssue(c, 'cfssl_pg', conc, s);
        if (conc === 16) {
          set(c, 'cfssl_pg_cpu_ms_per_certificate', figureOf(s.cpuPerOk, 'ms'));
          set(c, 'cfssl_pg_kernel_cpu_ms_per_certificate', figureOf(s.systemCpuPerOk, 'ms'));
        }
      }
    } finally {
      await pg.stop();
    }
    const rows = await countRows(db.url, 'certificates');
    c.details.cfssl_pg_rows = rows;
    if (rows === 0) throw new Error('cfssl wrote no certificate rows: its PostgreSQL store is not in use');
  } finally {
    await db.drop().catch(() => undefined);
  }
}

// ---- report ---------------------------------------------------------------------------------------

function ratios(c: Context) {
  const f = c.figures;
  set(c, 'ratio_issuance_vs_cfssl_nodb_c16', ratioOf(f.issuance_c16_per_s, f.cfssl_nodb_c16_per_s));
  set(c, 'ratio_issuance_vs_cfssl_pg_c16', ratioOf(f.issuance_c16_per_s, f.cfssl_pg_c16_per_s));
  set(c, 'ratio_issuance_vs_crypto_ceiling', ratioOf(f.issuance_c16_per_s, f.crypto_ceiling_per_s));
  set(c, 'ratio_pipeline_vs_crypto_ceiling', ratioOf(f.pipeline_per_s, f.crypto_ceiling_per_s));
  set(c, 'ratio_crl_100k_vs_openssl', ratioOf(f.crl_100k_ms, f.openssl_crl_100k_ms));
  set(c, 'ratio_crl_100k_vs_cfssl', ratioOf(f.crl_100k_ms, f.cfssl_crl_100k_ms));
  set(c, 'ratio_issuance_vs_loadgen_ceiling', ratioOf(f.issuance_c16_per_s, f.loadgen_ceiling_per_s));
}

interface Target {
  what: string;
  met: boolean | null;
  value: string;
}

function targets(f: Record<string, Figure>): Target[] {
  const m = (n: string) => f[n]?.median ?? null;
  const check = (what: string, value: string, ...conds: (boolean | null)[]): Target => ({
    what,
    value,
    met: conds.some((x) => x === null) ? null : conds.every(Boolean),
  });
  const ge = (a: number | null, b: number | null, k: number) =>
    a === null || b === null ? null : a >= k * b;
  const lt = (a: number | null, b: number | null) => (a === null || b === null ? null : a < b);
  return [
    check(
      'issuance c16 >= 3x cfssl with PostgreSQL',
      `${m('ratio_issuance_vs_cfssl_pg_c16')}x`,
      ge(m('issuance_c16_per_s'), m('cfssl_pg_c16_per_s'), 3),
    ),
    check(
      'issuance c16 >= 0.5x cfssl without database',
      `${m('ratio_issuance_vs_cfssl_nodb_c16')}x`,
      ge(m('issuance_c16_per_s'), m('cfssl_nodb_c16_per_s'), 0.5),
    ),
    check('issuance c16 p99 < 25 ms', `${m('issuance_c16_p99_ms')} ms`, lt(m('issuance_c16_p99_ms'), 25)),
    check(
      'pipeline >= 50% of the crypto ceiling',
      `${m('ratio_pipeline_vs_crypto_ceiling')}x`,
      ge(m('pipeline_per_s'), m('crypto_ceiling_per_s'), 0.5),
    ),
    check(
      'CRL 100k < 300 ms, faster than openssl and cfssl',
      `${m('crl_100k_ms')} ms (openssl ${m('openssl_crl_100k_ms')}, cfssl ${m('cfssl_crl_100k_ms')})`,
      lt(m('crl_100k_ms'), 300),
      lt(m('crl_100k_ms'), m('openssl_crl_100k_ms')),
      lt(m('crl_100k_ms'), m('cfssl_crl_100k_ms')),
    ),
    check(
      'revocation to 100 watchers p99 < 1 s',
      `${m('revocation_100_watchers_p99_ms')} ms`,
      lt(m('revocation_100_watchers_p99_ms'), 1000),
    ),
    check(
      'storm of 10,000 renewals within 30 s, no 5xx',
      `${m('storm_10k_seconds')} s, ${m('storm_10k_5xx')} 5xx`,
      lt(m('storm_10k_seconds'), 30.000001),
      m('storm_10k_5xx') === null ? null : m('storm_10k_5xx') === 0,
    ),
    check('server RSS < 300 MB', `${m('server_rss_peak_mb')} MB`, lt(m('server_rss_peak_mb'), 300)),
  ];
}

async function main() {
  const o = parseOptions(process.argv.slice(2));
  installInterruptHandler();
  const c: Context = {
    o,
    s: sizes(o),
    work: mkdtempSync(join(tmpdir(), 'baton-bench-work-')),
    figures: {},
    details: {},
  };
  onInterrupt(() => rmSync(c.work, { recursive: true, force: true }));
  const started = Date.now();
  log(`Baton benchmark${o.quick ? ' (quick)' : ''}: ${cpus().length} CPUs, node ${process.version}`);
  c.cfsslReason = cfsslMissing();
  if (c.cfsslReason)
    log(`cfssl figures will be null: ${c.cfsslReason}.\n  Install it with: ${CFSSL_INSTALL_HINT}`);
  else c.cfsslCa = makeCfsslCa(mkdtempSync(join(c.work, 'cfssl-ca-')));
  try {
    await section(c, 'crypto', ['crypto_ceiling_per_s', 'pipeline_per_s'], () => cryptoSection(c));
    await section(
      c,
      'crl',
      [
        'crl_1k_ms',
        'crl_10k_ms',
        'crl_100k_ms',
        'crl_100k_bytes',
        'openssl_crl_100k_ms',
        'cfssl_crl_100k_ms',
      ],
      () => crlSection(c),
    );
    await section(c, 'loadgen', ['loadgen_ceiling_per_s'], () => loadgenSection(c));
    await section(
      c,
      'baton',
      [
        'issuance_c1_per_s',
        'issuance_c16_per_s',
        'issuance_c64_per_s',
        'issuance_c16_p99_ms',
        'attest_c16_per_s',
        'renew_c16_per_s',
        'revocation_100_watchers_p50_ms',
        'revocation_100_watchers_p99_ms',
        'storm_10k_seconds',
        'storm_10k_5xx',
        'server_rss_peak_mb',
        'cpu_ms_per_certificate',
      ],
      () => batonPostgres(c),
    );
    await section(c, 'workers', ['one_worker_issuance_c16_per_s', 'workers_issuance_c16_per_s'], () =>
      workersAb(c),
    );
    await section(c, 'pglite', ['pglite_issuance_c16_per_s'], () => batonPglite(c));
    await section(c, 'cfssl', ['cfssl_nodb_c16_per_s', 'cfssl_pg_c16_per_s'], () => cfsslSection(c));
  } finally {
    rmSync(c.work, { recursive: true, force: true });
  }
  for (const name of REQUIRED_FIGURES) c.figures[name] ??= missing(unitOf(name), 'not measured');
  ratios(c);
  const results: Results = {
    machine: machine(o),
    figures: c.figures,
    details: {
      ...c.details,
      sizes: c.s,
      targets: targets(c.figures),
      seconds: (Date.now() - started) / 1000,
    },
  };
  const paths = writeResults(o.resultsDir ?? join(ROOT, 'bench', 'results'), results);
  log('\nRequired figures (median [min – max]):');
  log(formatTable(c.figures, [...REQUIRED_FIGURES]));
  log('\nMore:');
  log(
    formatTable(
      c.figures,
      Object.keys(c.figures).filter(
        (n) => !(REQUIRED_FIGURES as readonly string[]).includes(n) && !n.startsWith('ratio'),
      ),
    ),
  );
  log('\nRatios:');
  log(
    formatTable(
      c.figures,
      Object.keys(c.figures).filter((n) => n.startsWith('ratio')),
    ),
  );
  log('\nTargets (issue 7):');
  for (const t of targets(c.figures))
    log(`  ${t.met === null ? 'n/a ' : t.met ? 'MET ' : 'MISS'}  ${t.what}: ${t.value}`);
  log(`\nWrote ${paths.join(' and ')} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exit(1);
  },
);
