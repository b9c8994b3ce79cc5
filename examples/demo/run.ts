import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { authorizeIds, authorizePrefix, mtlsRequest } from '../../clients/identity/src';
import { callEvery, type Player, rogueCall, startPlayer } from './orchestra';
import {
  baton,
  batonDaemon,
  batonOk,
  Checks,
  cleanup,
  type Daemon,
  say,
  tempDir,
  waitUntil,
  workDir,
} from './stage';

/**
 * `npm run demo`: the orchestra (issue 5). A Baton CA and server, one manager and two worker nodes
 * (agents attested with join tokens), and on each a small service that uses the identity library
 * with a RevocationGuard. Workers call the manager over mTLS every 300 ms; a rogue conductor with a
 * certificate from another CA is refused by the workers; worker-1's node is revoked and is refused
 * everywhere within seconds while worker-2 keeps playing. Every step is checked: exit 0 when all
 * behaved, 1 otherwise. Every process and temporary directory goes at the end, whatever happens.
 *
 *   node dist/examples/demo/run.js [--deadline SECONDS]     (npm run demo; default 60 s)
 */

const TD = 'orchestra.test';
const id = (path: string) => `spiffe://${TD}/${path}`;
/** `--deadline SECONDS` (default 60): the whole run, cleanup excluded. */
const DEADLINE_MS = deadlineMs(process.argv.slice(2));

function deadlineMs(argv: string[]): number {
  const i = argv.indexOf('--deadline');
  if (i < 0) return 60_000;
  const s = Number(argv[i + 1]);
  if (!(s > 0)) {
    process.stderr.write('usage: run.js [--deadline SECONDS]\n');
    process.exit(2);
  }
  return s * 1000;
}
const NODES = [
  { name: 'manager', role: 'manager', entry: 'manager', spiffeId: id('manager') },
  { name: 'worker-1', role: 'worker', entry: 'worker-1', spiffeId: id('worker/worker-1') },
  { name: 'worker-2', role: 'worker', entry: 'worker-2', spiffeId: id('worker/worker-2') },
] as const;

/** `baton server --listen 127.0.0.1:0` on `dataDir`; resolves with its URL. */
function startServer(dataDir: string, who: string, quiet = false): Promise<{ url: string; daemon: Daemon }> {
  return new Promise((resolve, reject) => {
    const daemon = batonDaemon(
      ['server', '--listen', '127.0.0.1:0'],
      { BATON_DATA_DIR: dataDir },
      (line, stream) => {
        const m = /listening on (https:\/\/\S+)/.exec(line);
        if (m) resolve({ url: m[1]!, daemon });
        if (stream === 'stderr' && !quiet) say(who, line.slice(0, 200));
      },
    );
    void daemon.exited.then((code) => reject(new Error(`${who}: baton server exited with ${code}`)));
  });
}

/**
 * The rogue conductor's credential: a second CA for the same trust domain name, which issues it an
 * SVID for the manager's very SPIFFE ID through its own server and agent. Only the root differs.
 */
async function rogueCredential(): Promise<string> {
  const dataDir = tempDir('rogue-ca');
  const agentDir = tempDir('rogue-agent');
  await batonOk(['ca', 'init', '--trust-domain', TD], { BATON_DATA_DIR: dataDir });
  const { url, daemon } = await startServer(dataDir, 'rogue ca', true);
  const env = { BATON_DATA_DIR: dataDir, BATON_SERVER: url };
  const token = await batonOk(['token', 'create', '--role', 'manager', '--node-name', 'manager'], env);
  await batonOk(['agent', '--server', url, '--dir', agentDir, '--token', token, '--once'], env);
  await batonOk(
    ['entry', 'create', '--name', 'manager', '--spiffe-id', id('manager'), '--parent', 'manager'],
    env,
  );
  await batonOk(['agent', '--server', url, '--dir', agentDir, '--once'], env);
  await daemon.stop();
  return join(agentDir, 'workloads', 'manager');
}

async function main(checks: Checks): Promise<void> {
  say('demo', `the orchestra: a Baton CA, one manager and two workers, trust domain ${TD}`);
  say('demo', `working in ${workDir()} (removed at the end)`);
  const caDir = tempDir('ca');
  const agentsDir = tempDir('agents');
  const rogue = rogueCredential();
  // Settled here so that a failure is reported where the rogue enters, not as an unhandled rejection.
  rogue.catch(() => undefined);

  const init = await batonOk(['ca', 'init', '--trust-domain', TD], { BATON_DATA_DIR: caDir });
  say('ca', `baton ca init: ${init.split('\n').slice(0, 2).join(', ')}`);
  const { url } = await startServer(caDir, 'ca');
  say('ca', `baton server: listening on ${url}`);
  const env = { BATON_DATA_DIR: caDir, BATON_SERVER: url };
  const agentDir = (node: string) => join(agentsDir, node);

  // The nodes join with a token each; their entries are registered; their agents keep running.
  await Promise.all(
    NODES.map(async (n) => {
      const token = await batonOk(['token', 'create', '--role', n.role, '--node-name', n.name], env);
      const out = await batonOk(
        ['agent', '--server', url, '--dir', agentDir(n.name), '--token', token, '--once'],
        env,
      );
      say(`agent ${n.name}`, out.split('\n')[0]!);
    }),
  );
  await Promise.all(
    NODES.map(async (n) => {
      await batonOk(
        ['entry', 'create', '--name', n.entry, '--spiffe-id', n.spiffeId, '--parent', n.name],
        env,
      );
      say('ca', `entry ${n.entry}: ${n.spiffeId}, minted by node ${n.name}`);
    }),
  );
  const agents = new Map<string, { daemon: Daemon; exit?: number | null; stderr: string[] }>();
  for (const n of NODES) {
    const a: { daemon?: Daemon; exit?: number | null; stderr: string[] } = { stderr: [] };
    // The services read their files; without the socket a revoked node's agent exits at once.
    a.daemon = batonDaemon(
      ['agent', '--server', url, '--dir', agentDir(n.name), '--socket', 'none'],
      env,
      (line, stream) => {
        if (stream === 'stderr') a.stderr.push(line);
        if (!line.startsWith('next renewal')) say(`agent ${n.name}`, line.replace(/^baton: /, ''));
      },
    );
    void a.daemon.exited.then((code) => (a.exit = code));
    agents.set(n.name, a as { daemon: Daemon; exit?: number | null; stderr: string[] });
  }
  await waitUntil(
    'the agents to write the workload SVIDs',
    () => NODES.every((n) => existsSync(join(agentDir(n.name), 'workloads', n.entry, 'cert.pem'))),
    30_000,
  );

  // The services: the manager takes workers; each worker takes only the manager.
  const [manager, w1, w2] = (await Promise.all(
    NODES.map((n) =>
      startPlayer({
        name: n.name,
        agentDir: agentDir(n.name),
        entry: n.entry,
        serverUrl: url,
        authorize: n.role === 'manager' ? authorizePrefix(id('worker')) : authorizeIds([id('manager')]),
      }),
    ),
  )) as [Player, Player, Player];
  for (const p of [manager, w1, w2]) say(p.name, `${p.identity.current().spiffeId} serving on ${p.url}`);

  const to = { name: 'manager', url: manager.url, id: id('manager') };
  const c1 = callEvery(w1, to, 300);
  const c2 = callEvery(w2, to, 300);
  await checks.within('both workers reach the manager over mTLS', () => c1.ok >= 3 && c2.ok >= 3, 10_000);

  for (const w of [w1, w2]) {
    const r = await mtlsRequest(manager.identity, w.url, {
      authorize: authorizeIds([w.identity.current().spiffeId]),
      revocation: manager.guard,
      timeoutMs: 3000,
    }).catch((e: Error) => ({ status: 0, error: e.message }));
    say(
      'manager',
      `→ ${w.name}: ${r.status ? `HTTP ${r.status}` : `failed (${(r as { error: string }).error})`}`,
    );
    checks.that(`${w.name} lets the manager in`, r.status === 200, `got ${JSON.stringify(r)}`);
  }

  // The rogue conductor: the manager's SPIFFE ID, signed by another CA.
  const rogueDir = await rogue;
  say('rogue', `a conductor with a certificate for ${id('manager')} from another CA`);
  for (const w of [w1, w2]) {
    const before = w.handshakeErrors.length;
    const outcome = await rogueCall(rogueDir, w.url);
    say('rogue', `→ ${w.name}: ${outcome}`);
    await checks.within(
      `${w.name} refuses the rogue conductor`,
      () => outcome.startsWith('refused') && w.handshakeErrors.length > before,
      3000,
    );
  }

  // worker-1 is revoked.
  const revoker = await baton(['node', 'revoke', 'worker-1', '--reason', 'key-compromise'], env);
  const revokedAt = Date.now();
  say('ca', `baton node revoke worker-1: ${(revoker.stdout || revoker.stderr).trim()}`);
  if (!checks.that('the CA revokes worker-1', revoker.status === 0, revoker.stderr.trim())) return;
  const after = () => `${((Date.now() - revokedAt) / 1000).toFixed(1)} s after the revocation`;
  const w1Id = id('worker/worker-1');

  if (
    await checks.within(
      "the manager closes worker-1's open connection",
      () => manager.refused.some((r) => r.open && r.spiffeId === w1Id),
      5000,
    )
  )
    say('demo', `(${after()})`);
  await checks.within(
    "worker-1's new calls are refused by the manager",
    () =>
      manager.refused.some((r) => !r.open && r.spiffeId === w1Id && r.code === 'ERR_PEER_REVOKED') &&
      c1.last.startsWith('refused'),
    5000,
  );
  const seenBy = (p: Player) => p.guard.status().feedSerials > 0;
  await checks.within('worker-2 learned of the revocation too', () => seenBy(w2), 5000);
  await checks.within(
    "worker-1's agent stops: the CA refuses the revoked node",
    () => agents.get('worker-1')!.exit === 1,
    10_000,
  );
  const mark = Date.now();
  await checks.within('worker-2 keeps playing', () => c2.okSince(mark) >= 5, 5000);
  checks.that(
    'worker-1 has not been answered since',
    c1.okSince(revokedAt + 1000) === 0,
    `${c1.okSince(revokedAt + 1000)} answers`,
  );
  c1.stop();
  c2.stop();
  for (const n of ['manager', 'worker-2']) {
    const a = agents.get(n)!;
    checks.that(
      `the agent of ${n} is still running`,
      a.exit === undefined,
      a.stderr.slice(-1)[0] ?? `exit ${a.exit}`,
    );
  }
  say(
    'demo',
    `worker-1: ${c1.ok} calls answered, ${c1.failed} refused; worker-2: ${c2.ok} answered, ${c2.failed} refused`,
  );
}

let finishing = false;

async function finish(checks: Checks, error?: Error): Promise<void> {
  if (finishing) return;
  finishing = true;
  if (error) checks.fail('the demo ran to the end', error.message);
  say('demo', 'cleaning up: services, agents, servers, temporary directories');
  await cleanup();
  const total = checks.passed + checks.failed.length;
  if (checks.failed.length === 0) say('demo', `every step behaved (${total} checks)`);
  else say('demo', `${checks.failed.length} of ${total} checks failed: ${checks.failed.join('; ')}`);
  process.exit(checks.failed.length === 0 ? 0 : 1);
}

const checks = new Checks();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void finish(checks, new Error(`interrupted by ${signal}`)));
}
setTimeout(() => void finish(checks, new Error(`still running after ${DEADLINE_MS / 1000} s`)), DEADLINE_MS);
main(checks).then(
  () => finish(checks),
  (e: Error) => finish(checks, e),
);
