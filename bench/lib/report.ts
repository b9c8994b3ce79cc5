/** The machine description, the ratios and issue 7's targets. */
import { cpus, release, totalmem } from 'node:os';
import { cfsslVersion } from './cfssl';
import type { BenchOptions } from './options';
import { type Figure, ratioOf } from './results';
import { round } from './stats';
import { execFileSync } from 'node:child_process';
import type { Context } from './context';
import { set } from './context';

export function machine(o: BenchOptions): Record<string, unknown> {
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

export function ratios(c: Context) {
  const f = c.figures;
  set(c, 'ratio_issuance_vs_cfssl_nodb_c16', ratioOf(f.issuance_c16_per_s, f.cfssl_nodb_c16_per_s));
  set(c, 'ratio_issuance_vs_cfssl_pg_c16', ratioOf(f.issuance_c16_per_s, f.cfssl_pg_c16_per_s));
  set(c, 'ratio_issuance_vs_crypto_ceiling', ratioOf(f.issuance_c16_per_s, f.crypto_ceiling_per_s));
  set(c, 'ratio_pipeline_vs_crypto_ceiling', ratioOf(f.pipeline_per_s, f.crypto_ceiling_per_s));
  set(c, 'ratio_crl_100k_vs_openssl', ratioOf(f.crl_100k_ms, f.openssl_crl_100k_ms));
  set(c, 'ratio_crl_100k_vs_cfssl', ratioOf(f.crl_100k_ms, f.cfssl_crl_100k_ms));
  set(c, 'ratio_issuance_vs_loadgen_ceiling', ratioOf(f.issuance_c16_per_s, f.loadgen_ceiling_per_s));
  // Issue 16: both measured in the same run, on the same server, by the same nodes.
  set(c, 'ratio_jwt_mint_vs_issuance_c16', ratioOf(f.jwt_mint_c16_per_s, f.issuance_c16_per_s));
  // Issue 18: keys in SoftHSM2 against KEK-wrapped keys, the same run on the same machine.
  set(c, 'ratio_issuance_pkcs11_vs_kek_c16', ratioOf(f.issuance_c16_pkcs11_per_s, f.issuance_c16_per_s));
}

export interface Target {
  what: string;
  met: boolean | null;
  value: string;
}

export function targets(f: Record<string, Figure>, stormNodes: number): Target[] {
  const m = (n: string) => f[n]?.median ?? null;
  const check = (what: string, value: string, ...conds: (boolean | null)[]): Target => ({
    what,
    value,
    met: conds.some((x) => x === null) ? null : conds.every(Boolean),
  });
  const ge = (a: number | null, b: number | null, k: number) =>
    a === null || b === null ? null : a >= k * b;
  const lt = (a: number | null, b: number | null) => (a === null || b === null ? null : a < b);
  /** A figure as the target line shows it: `not measured` where its section did not run. */
  const shown = (n: string, unit = '') => (m(n) === null ? 'not measured' : `${m(n)}${unit}`);
  // Against cfssl: the alternated comparison (section versus) when it ran, since it sees the same
  // machine; the sections' own figures, minutes apart, otherwise. Both are printed among the ratios.
  const versus = (name: string, separate: string, k: number): [string, boolean | null] => {
    const r = m(name) ?? m(separate);
    if (r === null) return ['not measured', null];
    return [`${r}x (${m(name) !== null ? 'alternated' : 'separate sections'})`, r >= k];
  };
  return [
    check(
      'issuance c16 >= 3x cfssl with PostgreSQL',
      ...versus('ratio_versus_cfssl_pg_c16', 'ratio_issuance_vs_cfssl_pg_c16', 3),
    ),
    check(
      'issuance c16 >= 0.5x cfssl without database',
      ...versus('ratio_versus_cfssl_nodb_c16', 'ratio_issuance_vs_cfssl_nodb_c16', 0.5),
    ),
    check('issuance c16 p99 < 25 ms', shown('issuance_c16_p99_ms', ' ms'), lt(m('issuance_c16_p99_ms'), 25)),
    check(
      'pipeline >= 50% of the crypto ceiling',
      shown('ratio_pipeline_vs_crypto_ceiling', 'x'),
      ge(m('pipeline_per_s'), m('crypto_ceiling_per_s'), 0.5),
    ),
    check(
      'CRL 100k < 300 ms, faster than openssl and cfssl',
      `${shown('crl_100k_ms', ' ms')} (openssl ${shown('openssl_crl_100k_ms')}, cfssl ${shown('cfssl_crl_100k_ms')})`,
      lt(m('crl_100k_ms'), 300),
      lt(m('crl_100k_ms'), m('openssl_crl_100k_ms')),
      lt(m('crl_100k_ms'), m('cfssl_crl_100k_ms')),
    ),
    check(
      'revocation to 100 watchers p99 < 1 s',
      shown('revocation_100_watchers_p99_ms', ' ms'),
      lt(m('revocation_100_watchers_p99_ms'), 1000),
    ),
    check(
      `storm of ${stormNodes.toLocaleString('en')} renewals within 30 s, no 5xx${stormNodes < 10_000 ? ' (quick size; the target is for 10,000)' : ''}`,
      `${shown('storm_10k_seconds', ' s')}, ${shown('storm_10k_5xx', ' 5xx')}`,
      lt(m('storm_10k_seconds'), 30.000001),
      m('storm_10k_5xx') === null ? null : m('storm_10k_5xx') === 0,
    ),
    check('server RSS < 300 MB', shown('server_rss_peak_mb', ' MB'), lt(m('server_rss_peak_mb'), 300)),
    check(
      'JWT-SVID mint c16 >= 2x workload SVID issuance c16 (same run)',
      `${shown('jwt_mint_c16_per_s', '/s')} vs ${shown('issuance_c16_per_s', '/s')} (${shown('ratio_jwt_mint_vs_issuance_c16', 'x')})`,
      ge(m('jwt_mint_c16_per_s'), m('issuance_c16_per_s'), 2),
    ),
    check(
      'issuance c16 with the keys in SoftHSM2 (--kms) >= 0.5x KEK-wrapped (same run)',
      `${shown('issuance_c16_pkcs11_per_s', '/s')} vs ${shown('issuance_c16_per_s', '/s')} (${shown('ratio_issuance_pkcs11_vs_kek_c16', 'x')})`,
      ge(m('issuance_c16_pkcs11_per_s'), m('issuance_c16_per_s'), 0.5),
    ),
    check(
      'JWT-SVID mint c16 p99 < 10 ms',
      shown('jwt_mint_c16_p99_ms', ' ms'),
      lt(m('jwt_mint_c16_p99_ms'), 10),
    ),
  ];
}
