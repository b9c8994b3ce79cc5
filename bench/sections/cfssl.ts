/** cfssl serve without a database and with its PostgreSQL store, under the same load generator. */
import { join } from 'node:path';
import { startCfssl } from '../lib/cfssl';
import { countRows, createDatabase, runSql } from '../lib/postgres';
import { figureOf } from '../lib/results';
import { readFileSync } from 'node:fs';
import { type Context, ROOT, set } from '../lib/context';
import { measureIssue, recordIssue } from './issue';

export async function cfsslSection(c: Context) {
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
