import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { authorizeTrustDomain, createMtlsServer, Identity, mtlsRequest } from '../../clients/identity/src';
import { baton, cliEnv, type ServerProcess, startServerProcess } from '../support/cli';
import { tempDir } from '../support/tools';

/**
 * Issue 18, root rotation "with no downtime": two agents (daemons, on a server with one-minute
 * node and workload lifetimes, so that everything renews during the test) and three services
 * using the client library (two on the agents' workload files, one on a node's own identity) call
 * each other over mutual TLS every 100 ms while the root is rotated: start, every node and
 * workload renewed under the new signing CA, finish, every one renewed again. Not one call fails;
 * a token of the old root is refused after the finish.
 */

const TD = 'e2e-rot.example.org';
const BIN = join(__dirname, '..', '..', 'bin', 'baton.js');
const CERT = /-----BEGIN CERTIFICATE-----/g;
const SLOW = 240_000;

interface Status {
  phase: string;
  old_root_only: { nodes: number; workload_certificates: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(
  what: string,
  check: () => boolean,
  timeoutMs = 120_000,
  state?: () => unknown,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${state ? `: ${JSON.stringify(state())}` : ''}`);
    await sleep(500);
  }
}

describe('root rotation with no downtime: agents and library peers calling each other every 100 ms', () => {
  const dir = tempDir('baton-rootrot-e2e-');
  const dataDir = join(dir.path, 'data');
  let server: ServerProcess;
  let admin: string[];
  const agents: ChildProcess[] = [];
  const identities: Identity[] = [];
  const servers: Server[] = [];
  const cli = (args: string[]) => baton([...args, ...admin]);
  const status = (): Status => JSON.parse(cli(['ca', 'status', '--json']).stdout) as Status;

  afterAll(async () => {
    for (const s of servers) s.close();
    for (const i of identities) i.close();
    for (const a of agents) a.kill('SIGTERM');
    await server?.stop();
    dir.cleanup();
  });

  it(
    'counts zero failed calls through start, renewals and finish',
    async () => {
      expect(
        baton([
          'ca',
          'init',
          '--trust-domain',
          TD,
          '--data-dir',
          dataDir,
          '--node-ttl',
          '1m',
          '--workload-ttl',
          '1m',
        ]).status,
      ).toBe(0);
      server = await startServerProcess(['--data-dir', dataDir], { BATON_BACKGROUND_INTERVAL: '1s' });
      admin = ['--server', server.url, '--admin-dir', join(dataDir, 'admin')];
      const oldToken = cli(['token', 'create', '--role', 'worker']).stdout.trim();

      // Two nodes, each with one workload entry (files only), then their agents as daemons.
      const nodeDirs = ['a', 'b'].map((n) => join(dir.path, `node-${n}`));
      const agentLog: string[] = [];
      for (const [i, nodeDir] of nodeDirs.entries()) {
        const token = cli(['token', 'create', '--role', 'worker']).stdout.trim();
        const once = baton([
          'agent',
          '--server',
          server.url,
          '--token',
          token,
          '--dir',
          nodeDir,
          '--once',
          '--socket',
          'none',
        ]);
        expect(once.status).toBe(0);
        const nodeId = (
          JSON.parse(readFileSync(join(nodeDir, 'node', 'state.json'), 'utf8')) as { node_id: string }
        ).node_id;
        const name = `svc-${'ab'[i]}`;
        expect(
          cli([
            'entry',
            'create',
            '--name',
            name,
            '--spiffe-id',
            `spiffe://${TD}/${name}`,
            '--parent',
            nodeId,
          ]).status,
        ).toBe(0);
        const child = spawn(
          process.execPath,
          [
            BIN,
            'agent',
            '--server',
            server.url,
            '--dir',
            nodeDir,
            '--socket',
            'none',
            '--sync-interval',
            '2s',
          ],
          { env: cliEnv() },
        );
        child.stdout?.on('data', (d) => agentLog.push(`${'ab'[i]}: ${d}`));
        child.stderr?.on('data', (d) => agentLog.push(`${'ab'[i]}! ${d}`));
        agents.push(child);
      }

      // The services: svc-a and svc-b on their agents' workload files, node-a on node a's identity.
      const opts = { pollIntervalMs: 500 };
      const peers: Array<{ name: string; identity: Identity; url: string }> = [];
      const errors: string[] = [];
      const sources: Array<[string, () => Promise<Identity>]> = [
        ['svc-a', () => Identity.fromAgentWorkload(nodeDirs[0]!, 'svc-a', opts)],
        ['svc-b', () => Identity.fromAgentWorkload(nodeDirs[1]!, 'svc-b', opts)],
        ['node-a', () => Identity.fromAgentNode(nodeDirs[0]!, opts)],
      ];
      for (const [name, load] of sources) {
        // The daemons write the workloads' files on their first pass.
        let identity: Identity | undefined;
        for (let k = 0; k < 60 && !identity; k++) {
          identity = await load().catch(() => undefined);
          if (!identity) await sleep(500);
        }
        expect(identity).toBeDefined();
        identity!.on('error', (e) => errors.push(`${name}: ${e.code} ${e.message}`)).watch();
        identities.push(identity!);
        const s = createMtlsServer(identity!, { authorize: authorizeTrustDomain(TD) }, (_req, res) => {
          res.end(name);
        });
        await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
        servers.push(s);
        peers.push({
          name,
          identity: identity!,
          url: `https://127.0.0.1:${(s.address() as AddressInfo).port}/`,
        });
      }

      // Every peer calls every other every 100 ms, a new connection (a full handshake) each time.
      let calls = 0;
      const failures: string[] = [];
      let running = true;
      const loops = peers.map(async (from) => {
        while (running) {
          await Promise.all(
            peers
              .filter((to) => to !== from)
              .map(async (to) => {
                calls++;
                try {
                  const r = await mtlsRequest(from.identity, to.url, {
                    authorize: authorizeTrustDomain(TD),
                    timeoutMs: 5000,
                  });
                  if (r.status !== 200 || r.body.toString() !== to.name)
                    failures.push(`${from.name}->${to.name}: ${r.status}`);
                } catch (e) {
                  failures.push(`${from.name}->${to.name}: ${(e as Error).message}`);
                }
              }),
          );
          await sleep(100);
        }
      });
      const bundleSize = (i: Identity) => (i.current().bundlePem.match(CERT) ?? []).length;

      await sleep(3000);
      const started = cli(['ca', 'rotate', '--root']);
      expect(started.stderr).toBe('');
      expect(started.status).toBe(0);
      // Every node and workload renews under the new signing CA (half of a minute), and every
      // peer holds both roots.
      await until('nothing left only under the old root', () => {
        const s = status().old_root_only;
        return s.nodes === 0 && s.workload_certificates === 0;
      });
      const sizes = () => ({
        sizes: identities.map(bundleSize),
        failures: failures.slice(0, 3),
        errors: errors.slice(0, 3),
        agents: agentLog.slice(-12),
      });
      await until(
        'every peer holding both roots',
        () => identities.every((i) => bundleSize(i) === 2),
        120_000,
        sizes,
      );
      const finished = cli(['ca', 'rotate', '--root', '--finish']);
      expect(finished.stderr).toBe('');
      expect(finished.status).toBe(0);
      // Then every peer renews again and holds the new root alone.
      await until('every peer holding the new root alone', () =>
        identities.every((i) => bundleSize(i) === 1),
      );
      await sleep(3000);
      running = false;
      await Promise.all(loops);

      expect(failures.slice(0, 5)).toEqual([]);
      // Three peers, two calls each, about every 100 ms for well over a minute.
      expect(calls).toBeGreaterThan(1000);

      // A token made before the start pins the old root: refused now.
      const late = baton([
        'agent',
        '--server',
        server.url,
        '--token',
        oldToken,
        '--dir',
        join(dir.path, 'late'),
        '--once',
        '--socket',
        'none',
      ]);
      expect(late.status).toBe(1);
      expect(late.stderr).toMatch(/ERR_PIN_MISMATCH/);
    },
    SLOW,
  );
});
