/** What every benchmark section shares: options, sizes, the figures so far, and how a section runs. */
import { join } from 'node:path';
import type { CfsslCa } from './cfssl';
import type { BenchOptions, Sizes } from './options';
import { type Figure, missing } from './results';

/** The repository root (this file runs from dist/bench/lib). */
export const ROOT = join(__dirname, '..', '..', '..');
export const log = (m: string) => process.stdout.write(`${m}\n`);

export interface Context {
  o: BenchOptions;
  s: Sizes;
  work: string;
  figures: Record<string, Figure>;
  details: Record<string, unknown>;
  cfsslReason?: string;
  cfsslCa?: CfsslCa;
}

export const set = (c: Context, name: string, f: Figure) => {
  c.figures[name] = f;
};

/** Runs a section; a failure nulls its figures with the reason instead of ending the benchmark. */
export async function section(c: Context, name: string, figureNames: string[], fn: () => Promise<void>) {
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

export function unitOf(name: string): string {
  if (name.endsWith('_per_s') && name.startsWith('jwt')) return 'tokens/s';
  if (name.endsWith('_per_s'))
    return name.includes('crypto') || name.includes('pipeline') ? 'issuances/s' : 'certificates/s';
  if (name.endsWith('_ms') || name.includes('_ms_per_')) return 'ms';
  if (name.endsWith('_bytes')) return 'bytes';
  if (name.endsWith('_seconds')) return 's';
  if (name.endsWith('_mb')) return 'MB';
  if (name.startsWith('storm') || name.endsWith('_5xx')) return 'responses';
  return name.startsWith('ratio') ? 'x' : '';
}
