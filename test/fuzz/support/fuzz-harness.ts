import { Agent, request } from 'node:https';
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { Flags } from '../../../services/ca/src/config';
import type { Backend } from '../../support/database';
import { attestedNode } from '../../support/node-client';
import { startTestServer, type TestServer } from '../../support/test-server';

/**
 * The fuzz suite's shared harness: a server with the abuse controls off (the fuzzer is one client
 * address sending thousands of requests; rate limits are tested on their own), a request function
 * that times each answer from the moment the request was completely written, the figures every
 * fuzz file prints (inputs per route, latency, 5xx count, event-loop delay, RSS), and
 * useFuzzServer, the beforeAll and afterAll every fuzz file shares.
 */

/** `baton server` flags of the fuzz server: rate limits, quotas and load shedding off. */
export const FUZZ_SERVER_FLAGS: Flags = { 'rate-limits': 'off', 'max-in-flight': 'off' };

/** The latency target of the issue, printed; the assertion uses the generous bound (no flaky suite). */
export const TARGET_MS = 100;
export const BOUND_MS = 1000;

function startFuzzServer(extraFlags: Flags = {}, backend: Backend = 'pglite'): Promise<TestServer> {
  return startTestServer({ backend, serverFlags: { ...FUZZ_SERVER_FLAGS, ...extraFlags } });
}

export interface Credential {
  cert: string;
  key: string;
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** From the request being completely written to the response being completely read. */
  ms: number;
  json<T = unknown>(): T;
}

export interface FuzzRequest {
  method?: string;
  path: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  as?: Credential;
}

/** Latency, status and volume figures of one fuzz file. */
export class FuzzStats {
  readonly perRoute = new Map<string, number>();
  readonly statuses = new Map<number, number>();
  total = 0;
  maxMs = 0;
  overTarget = 0;
  serverErrors = 0;

  record(route: string, status: number, ms: number): void {
    this.total += 1;
    this.perRoute.set(route, (this.perRoute.get(route) ?? 0) + 1);
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
    this.maxMs = Math.max(this.maxMs, ms);
    if (ms > TARGET_MS) this.overTarget += 1;
    if (status >= 500) this.serverErrors += 1;
  }

  lines(): string[] {
    const routes = [...this.perRoute.entries()].sort(([a], [b]) => a.localeCompare(b));
    const statuses = [...this.statuses.entries()].sort(([a], [b]) => a - b);
    return [
      `inputs tried: ${this.total}`,
      ...routes.map(([r, n]) => `  ${r}: ${n}`),
      `statuses: ${statuses.map(([s, n]) => `${s}×${n}`).join(' ')}`,
      `max latency: ${this.maxMs.toFixed(1)} ms (over ${TARGET_MS} ms: ${this.overTarget})`,
      `5xx: ${this.serverErrors}`,
    ];
  }
}

/** Event-loop delay and RSS over a fuzz file (the server runs in this process). */
export class ProcessWatch {
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });
  private readonly rssBefore = process.memoryUsage().rss;
  constructor() {
    this.histogram.enable();
  }

  stop(): { maxMs: number; p99Ms: number; rssBeforeMb: number; rssAfterMb: number } {
    this.histogram.disable();
    const mb = (n: number) => Math.round(n / 1024 / 1024);
    return {
      maxMs: this.histogram.max / 1e6,
      p99Ms: this.histogram.percentile(99) / 1e6,
      rssBeforeMb: mb(this.rssBefore),
      rssAfterMb: mb(process.memoryUsage().rss),
    };
  }
}

/**
 * One fuzz target: the server, keep-alive agents per identity, the figures. `send` never throws
 * on an HTTP status; it records it.
 */
export class FuzzClient {
  readonly stats = new FuzzStats();
  private readonly agents = new Map<string, Agent>();

  constructor(readonly t: TestServer) {}

  private agentFor(as: Credential | undefined): Agent {
    const id = as ? as.cert : 'anonymous';
    let agent = this.agents.get(id);
    if (!agent) {
      agent = new Agent({
        keepAlive: true,
        maxSockets: 8,
        ca: this.t.bundle,
        ...(as ? { cert: as.cert, key: as.key } : {}),
      });
      this.agents.set(id, agent);
    }
    return agent;
  }

  send(r: FuzzRequest, route = `${r.method ?? 'GET'} ${routeOf(r.path)}`): Promise<Answer> {
    return new Promise((resolve, reject) => {
      let writtenAt = 0;
      const req = request(
        `${this.t.url}${r.path}`,
        {
          method: r.method ?? 'GET',
          headers: {
            ...(r.body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...r.headers,
          },
          agent: this.agentFor(r.as),
          ca: this.t.bundle,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const ms = performance.now() - (writtenAt || performance.now());
            const body = Buffer.concat(chunks);
            const status = res.statusCode ?? 0;
            this.stats.record(route, status, ms);
            resolve({
              status,
              headers: res.headers,
              body,
              ms,
              json: () => JSON.parse(body.toString('utf8')),
            });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.on('finish', () => {
        writtenAt = performance.now();
      });
      req.end(r.body);
    });
  }

  close(): void {
    for (const a of this.agents.values()) a.destroy();
  }
}

/** Route label for the figures: the path up to a variable part, without the query. */
export function routeOf(path: string): string {
  const p = path.split('?')[0]!;
  if (p.startsWith('/v1/ocsp/')) return '/v1/ocsp/:b64';
  if (p.startsWith('/v1/admin/nodes/'))
    return p.endsWith('/revoke') ? '/v1/admin/nodes/:id/revoke' : '/v1/admin/nodes/:id';
  if (p.startsWith('/v1/admin/entries/')) return '/v1/admin/entries/:name';
  if (p.startsWith('/v1/admin/certificates/')) return '/v1/admin/certificates/:serial/revoke';
  return p.length > 40 ? `${p.slice(0, 40)}…` : p;
}

export const ERROR_CODE = /^ERR_[A-Z0-9_]+$/;

/** RFC 6960 §4.2.1: OCSPResponse { responseStatus malformedRequest (1) }, no responseBytes. */
export const OCSP_MALFORMED_REQUEST = Buffer.from('30030a0101', 'hex');

/**
 * The invariant of every hostile answer: not a 5xx; a 4xx (or one of `ok`) within the bound; a
 * 4xx with a body carries `{"error":{"code":"ERR_…","message"}}`, or, on the OCSP routes, is the
 * 400 whose body is the OCSP `malformedRequest` response. Throws (for fast-check to shrink) rather
 * than calling expect, and names the input.
 */
export function assertRefused(a: Answer, what: string, ok: readonly number[] = []): void {
  const show = () => `${what}: ${a.status} ${a.body.toString('utf8').slice(0, 300)}`;
  if (a.status >= 500) throw new Error(`server error for ${show()}`);
  if (a.ms > BOUND_MS) throw new Error(`answer took ${a.ms.toFixed(0)} ms for ${show()}`);
  if (ok.includes(a.status)) return;
  if (a.status < 400) throw new Error(`accepted ${show()}`);
  const type = a.headers['content-type'];
  if (type === 'application/ocsp-response' && a.status !== 400)
    throw new Error(`OCSP refusal not a 400: ${show()}`);
  assertErrorBody(a.body, show, typeof type === 'string' ? type : undefined);
}

/** A refusal's body: the JSON error, or (content type application/ocsp-response) OCSP's malformedRequest. */
export function assertErrorBody(body: Buffer, show: () => string, contentType?: string): void {
  if (contentType === 'application/ocsp-response') {
    if (!body.equals(OCSP_MALFORMED_REQUEST))
      throw new Error(`not the OCSP malformedRequest answer: ${show()}`);
    return;
  }
  if (body.length === 0) return;
  let parsed: { error?: { code?: unknown; message?: unknown } };
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new Error(`not a JSON error body: ${show()}`);
  }
  if (typeof parsed.error?.code !== 'string' || !ERROR_CODE.test(parsed.error.code))
    throw new Error(`no stable error code: ${show()}`);
  if (typeof parsed.error.message !== 'string') throw new Error(`no error message: ${show()}`);
}

/** The process is alive and the server answers: the "never a crash" check after each file. */
export async function expectServerAlive(c: FuzzClient): Promise<void> {
  const h = await c.send({ path: '/healthz' });
  expect(h.status).toBe(200);
}

/** Prints the figures of a fuzz file with console.log and returns the process figures. */
export function report(title: string, c: FuzzClient, watch: ProcessWatch): ReturnType<ProcessWatch['stop']> {
  const p = watch.stop();
  console.log(
    [
      `[fuzz] ${title}`,
      ...c.stats.lines(),
      `event-loop delay: max ${p.maxMs.toFixed(1)} ms, p99 ${p.p99Ms.toFixed(1)} ms`,
      `RSS: ${p.rssBeforeMb} MB before, ${p.rssAfterMb} MB after`,
    ].join('\n'),
  );
  return p;
}

/** Bounds asserted on the process figures: generous, so the suite is not flaky. */
export const EVENT_LOOP_BOUND_MS = 1000;
export const RSS_GROWTH_BOUND_MB = 512;

export function assertProcessBounded(p: ReturnType<ProcessWatch['stop']>): void {
  expect(p.maxMs).toBeLessThan(EVENT_LOOP_BOUND_MS);
  expect(p.rssAfterMb - p.rssBeforeMb).toBeLessThan(RSS_GROWTH_BOUND_MB);
}

/** The tables of the schema; a hostile string must never drop or alter one. */
export const TABLES = [
  'installation',
  'cas',
  'certificates',
  'nodes',
  'join_tokens',
  'attestation_nonces',
  'entries',
  'revocation_events',
  'crls',
  'audit_log',
  'tpm_enrollments',
  'tpm_manufacturer_cas',
  'tpm_challenges',
] as const;

export type Table = (typeof TABLES)[number];
export type RowCounts = Record<Table, number>;

export async function rowCounts(t: TestServer): Promise<RowCounts> {
  const out = {} as RowCounts;
  for (const table of TABLES) {
    const row = (await t.db.knex(table).count({ n: '*' }).first()) as { n: string | number };
    out[table] = Number(row.n);
  }
  return out;
}

export type AttestedNode = Awaited<ReturnType<typeof attestedNode>>;
export type AdminCredential = Awaited<ReturnType<TestServer['issueAdmin']>>;

/** What a fuzz file needs around its tests; see useFuzzServer. */
export interface FuzzServerOptions {
  /** `baton server` flags on top of FUZZ_SERVER_FLAGS. */
  serverFlags?: Flags;
  backend?: Backend;
  /** Attests one node before the tests: `f.node`. */
  node?: boolean;
  /** Issues an admin credential (role admin) of this name before the tests: `f.admin`. */
  admin?: string;
  /**
   * Tables that must hold as many rows after the file as before it, plus the rows the file said
   * it created (`created`): nothing hostile created a row.
   */
  unchangedTables?: readonly Table[];
  /** The file's own fixtures: after the node and admin, before the row counts and the process watch. */
  setup?: (f: FuzzSuite) => Promise<void>;
  /** Closes what the file opened itself, before the client and the server close. */
  teardown?: () => void;
}

/**
 * The server, client and fixtures of one fuzz file. They exist from the file's beforeAll on, so
 * tests read them at run time; asking for one the file did not request throws rather than
 * handing a test `undefined` (an anonymous request where a node's was meant would pass for the
 * wrong reason).
 */
export class FuzzSuite {
  private server?: TestServer;
  private client?: FuzzClient;
  private attested?: AttestedNode;
  private adminCredential?: AdminCredential;
  private counts?: RowCounts;
  private watch?: ProcessWatch;
  private readonly made: Partial<RowCounts> = {};

  constructor(
    private readonly title: string,
    private readonly opts: FuzzServerOptions,
  ) {}

  get t(): TestServer {
    return present(this.server, 'the fuzz server');
  }
  get c(): FuzzClient {
    return present(this.client, 'the fuzz client');
  }
  get node(): AttestedNode {
    return present(this.attested, 'the node (useFuzzServer { node: true })');
  }
  get admin(): AdminCredential {
    return present(this.adminCredential, 'the admin (useFuzzServer { admin: name })');
  }
  /** Row counts of every table once the fixtures exist, before the first hostile input. */
  get before(): RowCounts {
    return present(this.counts, 'the row counts');
  }

  /** A test created a row on purpose (an input the oracle called valid): the table may grow by one. */
  created(table: Table): void {
    this.made[table] = (this.made[table] ?? 0) + 1;
  }

  /** beforeAll: the fixtures are made before the counts and the watch start, so neither sees them. */
  async start(): Promise<void> {
    this.server = await startFuzzServer(this.opts.serverFlags, this.opts.backend);
    this.client = new FuzzClient(this.server);
    if (this.opts.node) this.attested = await attestedNode(this.server);
    if (this.opts.admin) this.adminCredential = await this.server.issueAdmin('admin', this.opts.admin);
    await this.opts.setup?.(this);
    this.counts = await rowCounts(this.server);
    this.watch = new ProcessWatch();
  }

  /** afterAll: the figures, then the checks every fuzz file makes; closes the server whatever failed. */
  async finish(): Promise<void> {
    const { server: t, client: c, watch } = this;
    if (!t || !c) return;
    try {
      // A beforeAll that stopped part way has already failed the file: there are no figures to check.
      if (!watch) return;
      const p = report(this.title, c, watch);
      await expectServerAlive(c);
      await this.expectTablesUnchanged(t);
      expect(c.stats.serverErrors).toBe(0);
      assertProcessBounded(p);
    } finally {
      this.opts.teardown?.();
      c.close();
      await t.close();
    }
  }

  private async expectTablesUnchanged(t: TestServer): Promise<void> {
    const tables = this.opts.unchangedTables ?? [];
    if (tables.length === 0) return;
    const after = await rowCounts(t);
    // The table is named in the failure, not just two numbers.
    for (const table of tables)
      expect(`${table}: ${after[table]}`).toBe(`${table}: ${this.before[table] + (this.made[table] ?? 0)}`);
  }
}

function present<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not there: not requested, or beforeAll has not run`);
  return value;
}

/**
 * The shared frame of a fuzz file, registered as its beforeAll and afterAll: a fuzz server with
 * the requested node and admin; afterwards the figures printed under `title`, the server still
 * answering, the unchanged tables unchanged, no 5xx and the process within bounds.
 */
export function useFuzzServer(title: string, opts: FuzzServerOptions = {}): FuzzSuite {
  const f = new FuzzSuite(title, opts);
  beforeAll(() => f.start());
  afterAll(() => f.finish());
  return f;
}
