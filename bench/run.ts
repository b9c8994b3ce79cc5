/**
 * `npm run bench [-- --quick]`: issue 7's benchmark. Starts Baton (PostgreSQL and PGlite), cfssl and
 * openssl on this machine, drives the servers from separate load-generator processes (load.ts) over
 * keep-alive mutual TLS on 127.0.0.1 only, and writes bench/results/latest.json plus a dated copy.
 * Figures are medians over several runs with min and max. Timings are printed, never asserted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { cfsslMissing, CFSSL_INSTALL_HINT, makeCfsslCa } from './lib/cfssl';
import { parseOptions, sizes } from './lib/options';
import { installInterruptHandler, onInterrupt } from './lib/proc';
import { formatTable, missing, REQUIRED_FIGURES, type Results, writeResults } from './lib/results';
import { type Context, log, ROOT, section, unitOf } from './lib/context';
import { machine, ratios, targets } from './lib/report';
import { cryptoSection, crlSection } from './sections/in-process';
import { loadgenSection } from './sections/issue';
import { batonPostgres } from './sections/baton';
import { batonPglite, workersAb } from './sections/baton-variants';
import { PKCS11_FIGURES, pkcs11Section } from './sections/pkcs11';
import { cfsslSection } from './sections/cfssl';
import { TPM_FIGURES, tpmSection } from './sections/tpm';
import { versusSection } from './sections/versus';
import { WORKLOAD_API_FIGURES, workloadApiSection, workloadApiTargets } from './sections/workload-api';

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
    // Issue 18: the same issuance with the CA keys in a PKCS#11 token, right after it.
    await section(c, 'pkcs11', PKCS11_FIGURES, () => pkcs11Section(c));
    await section(c, 'workers', ['one_worker_issuance_c16_per_s', 'workers_issuance_c16_per_s'], () =>
      workersAb(c),
    );
    await section(c, 'pglite', ['pglite_issuance_c16_per_s'], () => batonPglite(c));
    await section(c, 'cfssl', ['cfssl_nodb_c16_per_s', 'cfssl_pg_c16_per_s'], () => cfsslSection(c));
    await section(c, 'versus', ['ratio_versus_cfssl_nodb_c16', 'ratio_versus_cfssl_pg_c16'], () =>
      versusSection(c),
    );
    await section(c, 'workload-api', WORKLOAD_API_FIGURES, () => workloadApiSection(c));
    // Issue 19: the server's CPU per TPM attestation, the TPM excluded.
    await section(c, 'tpm', TPM_FIGURES, () => tpmSection(c));
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
      targets: [...targets(c.figures, c.s.stormNodes), ...workloadApiTargets(c.figures)],
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
  for (const t of [...targets(c.figures, c.s.stormNodes), ...workloadApiTargets(c.figures)])
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
