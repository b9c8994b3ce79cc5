/** Baton on PostgreSQL: issuance, attestation, renewal, revocation propagation, the renewal storm. */
import { type BatonServer, startBaton } from '../lib/baton';
import { Generator } from '../lib/generator';
import type { RunResult } from '../lib/load-protocol';
import { createDatabase, postgresReachable, postgresVersion } from '../lib/postgres';
import { monoMs, RssWatch } from '../lib/proc';
import { figureOf, missing } from '../lib/results';
import { count, mergeCounts, percentile } from '../lib/stats';
import { readFileSync } from 'node:fs';
import { type Context, log, section, set } from '../lib/context';
import { attestMany, BATON_ENV, batonIssuance } from './baton-setup';
import { JWT_FIGURES, jwtSection } from './jwt';

export async function batonPostgres(c: Context) {
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
    const issuanceFleet = await batonIssuance(c, server, 'issuance', [1, 16, 64], true);
    set(c, 'cpu_ms_per_certificate', c.figures.issuance_cpu_ms_per_certificate!);
    delete c.figures.issuance_cpu_ms_per_certificate;
    // JWT-SVIDs on the same server, by the same nodes, right after: the ratio compares like with like.
    await section(c, 'jwt', JWT_FIGURES, () => jwtSection(c, server!, issuanceFleet));

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

export async function revocationSection(c: Context, server: BatonServer) {
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

export async function stormSection(c: Context, server: BatonServer) {
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
