/** Baton with one process against several, and on the embedded PGlite. */
import { type BatonServer, startBaton } from '../lib/baton';
import { Generator } from '../lib/generator';
import { type BenchDatabase, createDatabase } from '../lib/postgres';
import { RssWatch, treeCpuMs } from '../lib/proc';
import { figureOf, ratioOf } from '../lib/results';
import { type Context, log, set } from '../lib/context';
import { BATON_ENV, batonIssuance, fleet } from './baton-setup';
import { issueJob } from './issue';

export async function workersAb(c: Context) {
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
      const { target, identities } = await fleet(server, 16, 'ab');
      gens.push(
        await Generator.start(issueJob(c, { target, api: 'baton-workload', identities, concurrency: 16 })),
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

export async function batonPglite(c: Context) {
  const server = await startBaton({ workers: 1, logLevel: c.o.logLevel, env: BATON_ENV });
  try {
    log(`   baton on PGlite: ${server.url}`);
    await batonIssuance(c, server, 'pglite_issuance', [1, 16]);
  } finally {
    await server.stop();
  }
}
