/**
 * Baton against cfssl at c16, alternated: the issue's two cfssl targets are ratios, and this
 * machine's speed drifts by tens of percent over minutes (a VM whose second vCPU is a sibling), so
 * figures taken in sections minutes apart compare the machine as much as the servers. Here all three
 * servers are up at once and measured turn about, one run each per round; each round's ratio is
 * Baton's rate over cfssl's in that round, and the figure is the median round.
 */
import { join } from 'node:path';
import { type BatonServer, startBaton } from '../lib/baton';
import { type CfsslServer, startCfssl } from '../lib/cfssl';
import { Generator } from '../lib/generator';
import { type BenchDatabase, createDatabase, runSql } from '../lib/postgres';
import { figureOf } from '../lib/results';
import { readFileSync } from 'node:fs';
import { type Context, log, ROOT, set } from '../lib/context';
import { BATON_ENV, fleet } from './baton-setup';
import { issueJob } from './issue';

const NAMES = ['baton', 'cfssl_nodb', 'cfssl_pg'] as const;

export async function versusSection(c: Context) {
  if (c.cfsslReason || !c.cfsslCa) throw new Error(c.cfsslReason ?? 'no cfssl CA');
  const dbs: BenchDatabase[] = [];
  let baton: BatonServer | undefined;
  const cfssls: CfsslServer[] = [];
  const gens: Generator[] = [];
  try {
    const batonDb = await createDatabase('baton_bench_vs');
    dbs.push(batonDb);
    baton = await startBaton({
      databaseUrl: batonDb.url,
      workers: c.o.workers,
      logLevel: c.o.logLevel,
      env: BATON_ENV,
    });
    const { target, identities } = await fleet(baton, 16, 'vs');
    gens.push(
      await Generator.start(issueJob(c, { target, api: 'baton-workload', identities, concurrency: 16 })),
    );
    cfssls.push(await startCfssl(c.cfsslCa));
    const cfsslDb = await createDatabase('cfssl_bench_vs');
    dbs.push(cfsslDb);
    await runSql(cfsslDb.url, readFileSync(join(ROOT, 'bench', 'cfssl-pg-schema.sql'), 'utf8'));
    cfssls.push(await startCfssl(c.cfsslCa, cfsslDb.url));
    for (const s of cfssls)
      gens.push(await Generator.start(issueJob(c, { target: s.target, api: 'cfssl-sign', concurrency: 16 })));

    const rates: number[][] = NAMES.map(() => []);
    const p99s: number[][] = NAMES.map(() => []);
    for (let r = 0; r < c.s.runs; r++) {
      for (const [k, g] of gens.entries()) {
        const res = await g.run();
        rates[k]!.push(res.ok > 0 ? res.perSecond : 0);
        p99s[k]!.push(res.p99Ms);
      }
    }
    for (const [k, name] of NAMES.entries()) {
      set(c, `versus_${name}_c16_per_s`, figureOf(rates[k]!, 'certificates/s'));
      set(c, `versus_${name}_c16_p99_ms`, figureOf(p99s[k]!, 'ms'));
    }
    const perRound = (k: number) => rates[0]!.map((b, r) => b / (rates[k]![r] || Number.NaN));
    set(c, 'ratio_versus_cfssl_nodb_c16', figureOf(perRound(1), 'x'));
    set(c, 'ratio_versus_cfssl_pg_c16', figureOf(perRound(2), 'x'));
    log(
      `   c16, alternated: baton ${c.figures.versus_baton_c16_per_s!.median}/s, cfssl ${c.figures.versus_cfssl_nodb_c16_per_s!.median}/s without a database, ${c.figures.versus_cfssl_pg_c16_per_s!.median}/s with PostgreSQL; per-round ratios ${c.figures.ratio_versus_cfssl_nodb_c16!.median}x and ${c.figures.ratio_versus_cfssl_pg_c16!.median}x`,
    );
  } finally {
    await Promise.all(gens.map((g) => g.close()));
    for (const s of cfssls) await s.stop();
    await baton?.stop();
    for (const db of dbs) await db.drop().catch(() => undefined);
  }
}
