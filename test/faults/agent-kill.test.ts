import { type ChildProcess, spawn } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { cliEnv } from '../support/cli';
import { type Cluster, createToken, startCluster } from '../support/cluster';
import { serialOf } from '../support/load-client';
import { describePostgres, postgresAdminUrl } from '../support/database';
import { tempDir } from '../support/tools';

/**
 * Issue 8, item 2: the agent killed while writing files. `baton agent --once` runs again and again
 * and gets SIGKILL at a random moment; with 1-minute certificates every run renews the node and
 * both workloads (the agent renews once the refresh time leaves less than its safety margin), so
 * most kills land in a renewal. After each kill DIR/node and every DIR/workloads/<name> must hold a
 * key and the certificate of that key, the previous set or a newer one the CA issued, never a mix.
 *
 * Known exception, counted and printed: DIR/node's key and certificate are two renames
 * (clients/rotation/src/node-identity-store.ts), and a kill between them leaves the new key beside
 * the old certificate, with the new certificate staged as cert.pem.new; the agent's next run
 * completes the renames before anything else. On this machine about 1 kill in 100 lands there.
 * Workloads swap one symlink to a complete generation directory and have no such window.
 */
const TD = 'agentkill.example';
const NODE = 'agentnode';
const WORKLOADS = ['web', 'db'];
const KILLS = 30;
const BUDGET_MS = 60_000;
const BIN = join(__dirname, '..', '..', 'bin', 'baton.js');

/** A small seeded PRNG (mulberry32), so a failing sequence of kill times can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const spkiOfKey = (pem: string) =>
  createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'der' }).toString('hex');
const spkiOfCert = (pem: string) =>
  new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }).toString('hex');

const RENAME_WINDOW = 'key.pem renamed, cert.pem not yet';

interface PairState {
  serial: string;
  notBefore: number;
}

/** The pair in `dir` (cert.pem + key.pem), or a description of what is wrong with it. */
function readPair(dir: string): PairState | string {
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  if (!existsSync(certPath) || !existsSync(keyPath)) return `missing files in ${dir}`;
  const cert = readFileSync(certPath, 'utf8');
  const key = readFileSync(keyPath, 'utf8');
  let certSpki: string;
  let keySpki: string;
  try {
    certSpki = spkiOfCert(cert);
    keySpki = spkiOfKey(key);
  } catch (e) {
    return `unreadable pair in ${dir}: ${(e as Error).message}`;
  }
  if (certSpki !== keySpki) {
    // The one mix clients/rotation/node-identity-store.ts documents: killed between its renames of
    // key.pem.new and cert.pem.new. The staged certificate matching the new key must be there, and
    // the next run's load() finishes the renames.
    const staged = join(dir, 'cert.pem.new');
    if (existsSync(staged) && spkiOfCert(readFileSync(staged, 'utf8')) === keySpki) return RENAME_WINDOW;
    return `MIXED: ${dir}/key.pem does not belong to ${dir}/cert.pem`;
  }
  return { serial: serialOf(cert), notBefore: Date.parse(new X509Certificate(cert).validFrom) };
}

function runAgent(args: string[]): {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: string | null; out: string }>;
} {
  const child = spawn(process.execPath, [BIN, 'agent', '--once', ...args], {
    env: cliEnv({ BATON_LOG_LEVEL: 'error' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const done = new Promise<{ code: number | null; signal: string | null; out: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, out })),
  );
  return { child, done };
}

if (!postgresAdminUrl) {
  describe.skip('faults: agent killed while writing (skipped: set BATON_TEST_DATABASE_URL to run on PostgreSQL)', () => {
    it('kills the agent mid-write', () => undefined);
  });
}

describePostgres('faults: the agent killed while writing its files', () => {
  let c: Cluster;
  // Made in beforeAll: a skipped suite must not leave a directory behind.
  let dir: ReturnType<typeof tempDir>;
  beforeAll(async () => {
    dir = tempDir('baton-agent-kill-');
    c = await startCluster({ replicas: 1, trustDomain: TD });
  }, 60_000);
  afterAll(async () => {
    await c?.close();
    dir?.cleanup();
  });

  it('leaves the old pair or the new pair after every SIGKILL, never a mix (the node rename window aside, repaired by the next run)', async () => {
    const url = c.urls()[0]!;
    const seed = Number(process.env.BATON_FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const random = prng(seed);
    console.log(`faults/agent: kill times from seed ${seed} (BATON_FAULT_SEED=${seed} replays them)`);
    // A bound token has one use; the agent needs one again only when a kill lost a renewal the CA
    // had already made (its certificate is then superseded), so each run gets a fresh one.
    const token = async () => (await createToken(c, url, { nodeName: NODE, nodeTtl: '1m' })).token;
    const args = async () => ['--server', url, '--dir', dir.path, '--token', await token()];

    const first = await runAgent(await args()).done;
    expect(first.code).toBe(0);
    for (const name of WORKLOADS) {
      const e = await c.adminCall(url, 'POST', '/v1/admin/entries', {
        name,
        spiffe_id: `spiffe://${TD}/${name}`,
        parent: NODE,
        ttl: '1m',
      });
      expect(e.status).toBe(201);
    }
    const t = performance.now();
    const second = await runAgent(await args()).done;
    const fullRunMs = performance.now() - t;
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/renewed node/);

    const known = async (serial: string, kind: string) =>
      (await c.knex('certificates').where({ serial, kind }).first()) !== undefined;
    const state = (): { node: PairState | string; workloads: Record<string, PairState | string> } => ({
      node: readPair(join(dir.path, 'node')),
      workloads: Object.fromEntries(
        WORKLOADS.map((n) => {
          const link = join(dir.path, 'workloads', n);
          let gen: string;
          try {
            gen = readlinkSync(link);
          } catch {
            return [n, `no link ${link}`];
          }
          return [n, readPair(join(dir.path, 'workloads', gen))];
        }),
      ),
    });
    let previous = state();
    const problems: string[] = [];
    const counts = {
      kills: 0,
      finished: 0,
      nodeChanged: 0,
      workloadsChanged: 0,
      reattested: 0,
      renameWindow: 0,
    };
    const checkAgainst = async (before: typeof previous, now: typeof previous, when: string) => {
      const sets: [string, PairState | string, PairState | string, string][] = [
        ['node', before.node, now.node, 'node'],
        ...WORKLOADS.map(
          (n) =>
            [n, before.workloads[n]!, now.workloads[n]!, 'workload'] as [
              string,
              PairState | string,
              PairState | string,
              string,
            ],
        ),
      ];
      for (const [name, old, cur, kind] of sets) {
        if (cur === RENAME_WINDOW && name === 'node' && when.startsWith('after SIGKILL')) {
          counts.renameWindow++;
          continue;
        }
        if (typeof cur === 'string') {
          problems.push(`${when}: ${name}: ${cur}`);
          continue;
        }
        if (!(await known(cur.serial, kind)))
          problems.push(`${when}: ${name}: serial ${cur.serial} unknown to the CA`);
        if (typeof old !== 'string' && cur.serial !== old.serial) {
          if (cur.notBefore < old.notBefore)
            problems.push(`${when}: ${name}: went back to an older certificate`);
          if (name === 'node') counts.nodeChanged++;
          else counts.workloadsChanged++;
        }
      }
    };
    await checkAgainst(previous, previous, 'start');

    const started = performance.now();
    // How long a run takes drifts with the machine's load: follow it, so that most runs are killed.
    let typicalMs = fullRunMs;
    for (let i = 0; i < KILLS && performance.now() - started < BUDGET_MS; i++) {
      const run = runAgent(await args());
      const t1 = performance.now();
      // Node takes a few hundred ms to start: kill anywhere from there to near the end of a run.
      const delay = Math.round(typicalMs * (0.4 + 0.65 * random()));
      const timer = setTimeout(() => run.child.kill('SIGKILL'), delay);
      const r = await run.done;
      clearTimeout(timer);
      if (r.signal === 'SIGKILL') counts.kills++;
      else {
        counts.finished++;
        typicalMs = 0.5 * typicalMs + 0.5 * (performance.now() - t1);
        if (r.code !== 0) problems.push(`run ${i}: exit ${r.code}: ${r.out.trim()}`);
      }
      if (/re-attested/.test(r.out)) counts.reattested++;
      const now = state();
      await checkAgainst(previous, now, `after ${r.signal ?? 'exit'} at ${delay} ms (run ${i})`);
      previous = now;
    }
    // The agent picks up after the last kill by itself.
    const last = await runAgent(await args()).done;
    expect(last.code).toBe(0);
    await checkAgainst(previous, state(), 'final run');
    expect(problems).toEqual([]);
    expect(counts.kills).toBeGreaterThanOrEqual(10);
    console.log(
      `faults/agent: seed ${seed}; a full run takes ${Math.round(fullRunMs)} ms; ${counts.kills + counts.finished} runs: ${counts.kills} SIGKILLs injected, ${counts.finished} finished first; node pair replaced ${counts.nodeChanged} times, workload pairs ${counts.workloadsChanged} times, re-attestations after a lost renewal ${counts.reattested}; kills between the node's key and cert renames (documented, repaired by the next run): ${counts.renameWindow}; records checked: ${3 * (counts.kills + counts.finished + 2)} pairs (key ↔ certificate, serial in the CA's table)`,
    );
  }, 120_000);
});
