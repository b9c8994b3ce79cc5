import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { round, type Spread, spread } from './stats';

/**
 * The results file (issue 7): `{"machine": {...}, "figures": {"<name>": {"median","min","max","unit"}}}`.
 * A figure that could not be measured keeps its name with null values and a reason, so a reader
 * can tell "not measured" from "zero".
 */
export interface Figure {
  median: number | null;
  min: number | null;
  max: number | null;
  unit: string;
  /** How many runs the median is over. */
  runs?: number;
  /** Why the figure is null. */
  reason?: string;
}

export interface Results {
  machine: Record<string, unknown>;
  figures: Record<string, Figure>;
  /** Free-form details: status counts, settings. */
  details?: Record<string, unknown>;
}

/** The names issue 7 requires, in the order the table prints them. */
export const REQUIRED_FIGURES = [
  'issuance_c1_per_s',
  'issuance_c16_per_s',
  'issuance_c64_per_s',
  'issuance_c16_p99_ms',
  'attest_c16_per_s',
  'renew_c16_per_s',
  'cfssl_nodb_c16_per_s',
  'cfssl_pg_c16_per_s',
  'pipeline_per_s',
  'crypto_ceiling_per_s',
  'crl_1k_ms',
  'crl_10k_ms',
  'crl_100k_ms',
  'crl_100k_bytes',
  'openssl_crl_100k_ms',
  'cfssl_crl_100k_ms',
  'revocation_100_watchers_p50_ms',
  'revocation_100_watchers_p99_ms',
  'storm_10k_seconds',
  'storm_10k_5xx',
  'server_rss_peak_mb',
  'cpu_ms_per_certificate',
] as const;

export function figureOf(values: readonly number[], unit: string): Figure {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return missing(unit, 'no run produced a value');
  const s: Spread = spread(finite);
  return { median: round(s.median), min: round(s.min), max: round(s.max), unit, runs: finite.length };
}

export function missing(unit: string, reason: string): Figure {
  return { median: null, min: null, max: null, unit, reason };
}

/**
 * a/b as a figure: the median ratio of the medians, and the widest range the runs allow
 * (a.min/b.max .. a.max/b.min).
 */
export function ratioOf(a: Figure | undefined, b: Figure | undefined): Figure {
  if (!a || !b || a.median === null || b.median === null || !b.median)
    return missing('x', `needs ${a?.median === null || !a ? 'the numerator' : 'the denominator'}`);
  const r = (x: number | null, y: number | null) => (x === null || !y ? null : round(x / y));
  return { median: r(a.median, b.median), min: r(a.min, b.max), max: r(a.max, b.min), unit: 'x' };
}

/** Every required name present, each with median/min/max/unit of the right types. */
export function checkShape(results: Results): string[] {
  const problems: string[] = [];
  if (typeof results.machine !== 'object' || results.machine === null)
    problems.push('machine: not an object');
  for (const name of REQUIRED_FIGURES) {
    const f = results.figures[name];
    if (!f) {
      problems.push(`${name}: missing`);
      continue;
    }
    for (const k of ['median', 'min', 'max'] as const) {
      if (f[k] !== null && typeof f[k] !== 'number') problems.push(`${name}.${k}: not a number or null`);
    }
    if (typeof f.unit !== 'string' || f.unit === '') problems.push(`${name}.unit: missing`);
    if (f.median === null && !f.reason) problems.push(`${name}: null without a reason`);
  }
  return problems;
}

/** Writes `latest.json` and `<YYYY-MM-DD>T<HHMMSS>.json`; returns both paths. */
export function writeResults(dir: string, results: Results, now = new Date()): string[] {
  const problems = checkShape(results);
  if (problems.length) throw new Error(`results do not have the required shape: ${problems.join('; ')}`);
  mkdirSync(dir, { recursive: true });
  const stamp = now.toISOString().replace(/:/g, '').replace(/\..*$/, '');
  const text = `${JSON.stringify(results, null, 2)}\n`;
  const paths = [join(dir, 'latest.json'), join(dir, `${stamp}.json`)];
  for (const p of paths) writeFileSync(p, text);
  return paths;
}

const fmt = (n: number | null): string => (n === null ? '—' : String(round(n)));

/** One line per figure: name, median, [min – max], unit. */
export function formatTable(figures: Record<string, Figure>, names = Object.keys(figures)): string {
  const rows = names
    .filter((n) => figures[n])
    .map((n) => {
      const f = figures[n]!;
      const range = f.median === null ? (f.reason ?? '') : `[${fmt(f.min)} – ${fmt(f.max)}]`;
      return [n, fmt(f.median), range, f.median === null ? '' : f.unit];
    });
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length), 4));
  return rows
    .map((r) => `  ${r[0]!.padEnd(w[0]!)}  ${r[1]!.padStart(w[1]!)}  ${r[2]!.padEnd(w[2]!)}  ${r[3]}`)
    .join('\n');
}
