/** `npm run bench [-- --quick] [--workers N] [--runs N] [--log-level L] [--skip a,b]`. */
export interface BenchOptions {
  quick: boolean;
  /**
   * `baton server --workers` for the main PostgreSQL server (PGlite always runs one process).
   * Default 1: on this 2-core machine the load generator and PostgreSQL share the cores, and the
   * alternated comparison (section `workers`) measured a second worker as a loss here.
   */
  workers: number;
  runs: number;
  logLevel: string;
  /** Sections to leave out while iterating: crypto, crl, loadgen, baton, jwt, pkcs11, workers, pglite, cfssl, versus, storm, revocation, workload-api, tpm. */
  skip: Set<string>;
  resultsDir?: string;
  /** Writes CPU profiles of the Baton server processes (node --cpu-prof) into this directory. */
  profileDir?: string;
}

export interface Sizes {
  /** Timed runs per throughput figure. */
  runs: number;
  issueDurationMs: number;
  warmupRequests: number;
  attestPerRun: number;
  watchers: number;
  revocationRounds: number;
  stormNodes: number;
  stormRuns: number;
  stormGenerators: number;
  crlRuns: number;
  toolCrlRuns: number;
  cryptoMs: number;
  pipelineCsrs: number;
}

export function sizes(o: BenchOptions): Sizes {
  if (o.quick) {
    return {
      runs: Math.min(o.runs, 3),
      issueDurationMs: 1000,
      warmupRequests: 100,
      attestPerRun: 100,
      watchers: 100,
      revocationRounds: 3,
      stormNodes: 1000,
      stormRuns: 1,
      stormGenerators: 2,
      crlRuns: 3,
      toolCrlRuns: 1,
      cryptoMs: 300,
      pipelineCsrs: 1000,
    };
  }
  return {
    runs: o.runs,
    issueDurationMs: 3000,
    warmupRequests: 500,
    attestPerRun: 1000,
    watchers: 100,
    revocationRounds: 5,
    stormNodes: 10_000,
    stormRuns: 3,
    stormGenerators: 2,
    crlRuns: 5,
    toolCrlRuns: 3,
    cryptoMs: 1000,
    pipelineCsrs: 3000,
  };
}

export function parseOptions(argv: string[]): BenchOptions {
  const o: BenchOptions = { quick: false, workers: 1, runs: 5, logLevel: 'info', skip: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--workers') o.workers = Math.max(1, Math.min(16, Number(value()) || 1));
    else if (a === '--runs') o.runs = Math.max(1, Math.min(20, Number(value()) || 1));
    else if (a === '--log-level') o.logLevel = value();
    else if (a === '--skip') for (const s of value().split(',')) o.skip.add(s.trim());
    else if (a === '--results-dir') o.resultsDir = value();
    else if (a === '--cpu-prof') o.profileDir = value();
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: npm run bench [-- --quick] [--workers N (default 1)] [--runs N (default 5)] [--log-level info]\n' +
          '                     [--skip crypto,crl,loadgen,baton,jwt,pkcs11,workers,pglite,cfssl,versus,storm,revocation,workload-api,tpm] [--results-dir DIR] [--cpu-prof DIR]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  return o;
}
