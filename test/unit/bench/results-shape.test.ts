import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkShape,
  figureOf,
  formatTable,
  missing,
  ratioOf,
  REQUIRED_FIGURES,
  type Results,
  writeResults,
} from '../../../bench/lib/results';
import { targets } from '../../../bench/lib/report';
import { percentile } from '../../../bench/lib/stats';

/** Fake figures only: this checks the writer's shape, never a timing. */
function fakeResults(): Results {
  const figures = Object.fromEntries(
    REQUIRED_FIGURES.map((n, i) => [n, figureOf([i + 1, i + 2, i + 3], 'ms')]),
  );
  return { machine: { cpus: 2, node: 'v20' }, figures };
}

describe('bench results writer', () => {
  const dir = mkdtempSync(join(tmpdir(), 'baton-bench-shape-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('ok/writes latest.json and a dated copy with machine and every required figure', () => {
    const paths = writeResults(dir, fakeResults(), new Date('2026-01-02T03:04:05Z'));
    expect(paths.map((p) => p.slice(dir.length + 1))).toEqual(['latest.json', '2026-01-02T030405.json']);
    expect(readdirSync(dir).sort()).toEqual(['2026-01-02T030405.json', 'latest.json']);
    const written = JSON.parse(readFileSync(join(dir, 'latest.json'), 'utf8')) as Results;
    expect(written.machine).toEqual({ cpus: 2, node: 'v20' });
    for (const name of REQUIRED_FIGURES) {
      expect(written.figures[name]).toEqual({
        median: expect.any(Number),
        min: expect.any(Number),
        max: expect.any(Number),
        unit: 'ms',
        runs: 3,
      });
    }
    expect(written.figures.issuance_c1_per_s).toMatchObject({ median: 2, min: 1, max: 3 });
  });

  it('ok/a figure that could not be measured is null with a reason', () => {
    const r = fakeResults();
    r.figures.cfssl_pg_c16_per_s = missing(
      'certificates/s',
      'cfssl not installed (apt-get install golang-cfssl)',
    );
    expect(checkShape(r)).toEqual([]);
    expect(r.figures.cfssl_pg_c16_per_s).toEqual({
      median: null,
      min: null,
      max: null,
      unit: 'certificates/s',
      reason: 'cfssl not installed (apt-get install golang-cfssl)',
    });
  });

  it.each([
    [
      'fail/a required figure is missing',
      (r: Results) => delete r.figures.storm_10k_5xx,
      'storm_10k_5xx: missing',
    ],
    [
      'fail/a figure has no unit',
      (r: Results) => (r.figures.crl_1k_ms!.unit = ''),
      'crl_1k_ms.unit: missing',
    ],
    [
      'fail/null without a reason',
      (r: Results) => (r.figures.crl_1k_ms = { median: null, min: null, max: null, unit: 'ms' }),
      'crl_1k_ms: null without a reason',
    ],
  ])('%s', (_name, spoil, problem) => {
    const r = fakeResults();
    spoil(r);
    expect(checkShape(r)).toContain(problem);
    expect(() => writeResults(dir, r)).toThrow(problem);
  });

  it('ok/ratios carry the range the runs allow, and say why they are null', () => {
    const a = figureOf([100, 200, 300], 'certificates/s');
    const b = figureOf([50, 100, 150], 'certificates/s');
    expect(ratioOf(a, b)).toEqual({ median: 2, min: 0.667, max: 6, unit: 'x' });
    expect(ratioOf(a, missing('certificates/s', 'x'))).toMatchObject({
      median: null,
      reason: 'needs the denominator',
    });
  });

  it('ok/percentiles are nearest-rank and the table prints every named figure', () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([percentile(values, 50), percentile(values, 99), percentile([], 50)]).toEqual([
      50,
      99,
      Number.NaN,
    ]);
    const table = formatTable(fakeResults().figures);
    expect(table.split('\n')).toHaveLength(REQUIRED_FIGURES.length);
    expect(table).toContain('issuance_c16_p99_ms');
  });
});

describe('bench targets against cfssl', () => {
  const cfsslTargets = (figures: Record<string, ReturnType<typeof figureOf>>) =>
    targets(figures, 10_000).filter((t) => /cfssl with/.test(t.what));

  it('ok/judge the alternated ratios when the versus section ran', () => {
    const t = cfsslTargets({
      ratio_versus_cfssl_pg_c16: figureOf([3.2], 'x'),
      ratio_versus_cfssl_nodb_c16: figureOf([0.45], 'x'),
      // The separate sections' ratios say the opposite: they must not be the ones judged.
      ratio_issuance_vs_cfssl_pg_c16: figureOf([2], 'x'),
      ratio_issuance_vs_cfssl_nodb_c16: figureOf([0.6], 'x'),
    });
    expect(t.map((x) => [x.met, x.value])).toEqual([
      [true, '3.2x (alternated)'],
      [false, '0.45x (alternated)'],
    ]);
  });

  it('ok/fall back to the separate sections, and to n/a without either', () => {
    const t = cfsslTargets({
      ratio_versus_cfssl_pg_c16: missing('x', 'section versus skipped (--skip)'),
      ratio_issuance_vs_cfssl_pg_c16: figureOf([2], 'x'),
    });
    expect(t.map((x) => [x.met, x.value])).toEqual([
      [false, '2x (separate sections)'],
      [null, 'not measured'],
    ]);
  });
});

describe('bench target lines', () => {
  it('say "not measured" for a figure whose section did not run, never null', () => {
    const t = targets(
      {
        issuance_c16_p99_ms: missing('ms', 'section baton skipped (--skip)'),
        crl_100k_ms: figureOf([40], 'ms'),
        openssl_crl_100k_ms: figureOf([700], 'ms'),
        storm_10k_seconds: figureOf([28], 's'),
      },
      10_000,
    );
    const line = (what: RegExp) => t.find((x) => what.test(x.what))!;
    expect(line(/p99/)).toEqual(expect.objectContaining({ met: null, value: 'not measured' }));
    expect(line(/CRL/)).toEqual(
      expect.objectContaining({ met: null, value: '40 ms (openssl 700, cfssl not measured)' }),
    );
    expect(line(/storm/).value).toBe('28 s, not measured');
    for (const x of t) expect(x.value).not.toMatch(/null|undefined/);
  });
});
