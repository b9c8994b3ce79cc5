/** Measured in the orchestrator's own process: the crypto ceiling, the pipeline, CRLs. */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { makeCfsslCa } from '../lib/cfssl';
import {
  batonCrl,
  cfsslCrl,
  opensslCrl,
  prepareCfsslCrl,
  prepareOpensslCrl,
  revokedEntries,
} from '../lib/crl';
import {
  benchKeyring,
  cryptoCeilingPerSecond,
  freshKeyCeilingPerSecond,
  pipelineCsrs,
  pipelinePerSecond,
} from '../lib/crypto';
import { figureOf, missing } from '../lib/results';
import { round } from '../lib/stats';
import { type Context, log, set } from '../lib/context';

export async function cryptoSection(c: Context) {
  const ceilings: number[] = [];
  const fresh: number[] = [];
  const pipelines: number[] = [];
  const csrs = pipelineCsrs(c.s.pipelineCsrs);
  await pipelinePerSecond(csrs.slice(0, 200)); // warm-up (JIT)
  cryptoCeilingPerSecond(100);
  // Alternated, so both see the same machine state.
  for (let r = 0; r < c.s.runs; r++) {
    ceilings.push(cryptoCeilingPerSecond(c.s.cryptoMs));
    fresh.push(freshKeyCeilingPerSecond(c.s.cryptoMs));
    pipelines.push(await pipelinePerSecond(csrs));
  }
  set(c, 'crypto_fresh_key_ceiling_per_s', figureOf(fresh, 'issuances/s'));
  set(c, 'crypto_ceiling_per_s', figureOf(ceilings, 'issuances/s'));
  set(c, 'pipeline_per_s', figureOf(pipelines, 'issuances/s'));
  log(
    `   crypto ceiling ${round(c.figures.crypto_ceiling_per_s!.median!)}/s (a fresh key each: ${round(c.figures.crypto_fresh_key_ceiling_per_s!.median!)}/s), pipeline ${round(c.figures.pipeline_per_s!.median!)}/s`,
  );
}

export async function crlSection(c: Context) {
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
