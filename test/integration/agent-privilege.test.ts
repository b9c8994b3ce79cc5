import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { CaClient, NodeAgent, WorkloadStore } from '../../clients/rotation/src';
import { cliEnv } from '../support/cli';
import { https } from '../support/https';
import { newToken } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { describeWith, rootUser, tempDir } from '../support/tools';

/**
 * Issue 14, findings 1 and 2: the agent runs as root beside workloads of lower privilege. Each
 * attack below is made as uid 1000 (setpriv; no passwd entry is needed for a numeric uid) against
 * an agent running as root, first as the reviewer made it, then in the variants of its class:
 * nothing outside the agent's directory may change, the agent may never block, and the node and
 * the other workloads keep rotating.
 */
const WORKLOAD_UID = 1000;
const TD = 'test.example.org';
const BIN = join(__dirname, '..', '..', 'bin', 'baton.js');

/** Runs a shell script as the workload user; its exit status and output. */
function asWorkload(script: string, cwd?: string): { status: number; out: string } {
  const r = spawnSync(
    'setpriv',
    ['--reuid', `${WORKLOAD_UID}`, '--regid', `${WORKLOAD_UID}`, '--clear-groups', '--', 'sh', '-c', script],
    { encoding: 'utf8', cwd, timeout: 60_000 },
  );
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** Everything under `dir` (names, kinds, owners, contents): what "nothing changed" compares. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    const kind = st.isSymbolicLink() ? `link→${readlinkSync(p)}` : st.isDirectory() ? 'dir' : 'file';
    out.push(`${p} ${kind} ${st.uid} ${(st.mode & 0o7777).toString(8)}`);
    if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
    else if (st.isFile()) out.push(readFileSync(p, 'utf8'));
  };
  walk(dir);
  return out;
}

/**
 * `baton agent --once` as root in a child process, killed after 60 s: a blocked agent fails the
 * test instead of hanging it. Asynchronous: the server answering it runs in this process.
 */
function agentOnce(server: string, dir: string): Promise<{ status: number; out: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'agent', '--server', server, '--dir', dir, '--once'], {
      env: cliEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, 60_000);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, out, timedOut });
    });
  });
}

describeWith([rootUser, 'setpriv'], 'the root agent beside a workload user (issue 14)', () => {
  const tmp = tempDir('baton-agent-priv-');
  const victim = join(tmp.path, 'victim');
  let t: TestServer;
  let admin: { cert: string; key: string };
  let victimBefore: string[];
  /** One node per variant below: v0, v1, … */
  let variant = 0;

  const createEntry = async (name: string, parent: string, selectors: string[]) => {
    const r = await https(`${t.url}/v1/admin/entries`, {
      method: 'POST',
      body: JSON.stringify({ name, spiffe_id: `spiffe://${TD}/${name}`, parent, selectors }),
      ca: t.bundle,
      ...admin,
    });
    expect(r.status).toBe(201);
  };

  /** An attested node dir with the entries web (uid 1000), api (uid 1000) and other (root). */
  const node = async (name: string): Promise<string> => {
    const dir = join(tmp.path, name);
    const client = new CaClient({ serverUrl: t.url });
    try {
      const agent = new NodeAgent({
        dir,
        clock: t.clock,
        client,
        random: () => 0.5,
        token: await newToken(t, { nodeName: name, nodeTtlMs: 3600_000 }),
      });
      await agent.runOnce();
      const uid = `unix:uid:${WORKLOAD_UID}`;
      await createEntry(`web-${name}`, name, [uid, `unix:gid:${WORKLOAD_UID}`]);
      await createEntry(`api-${name}`, name, [uid]);
      await createEntry(`other-${name}`, name, []);
      const r = await agent.runOnce();
      expect(r.workloads.map((w) => w.action)).toEqual(['issued', 'issued', 'issued']);
    } finally {
      client.close();
    }
    return dir;
  };

  beforeAll(async () => {
    // The workload must reach its files through the agent directories, as on a real node.
    chmodSync(tmp.path, 0o755);
    // Certificates are made 50 minutes in the past, with a node lifetime of 1 h, so that the
    // last test can make everything due by setting the CA's clock to now: TLS itself checks
    // validity against the wall clock, so the CA's clock must never run ahead of it.
    t = await startTestServer({
      backend: 'pglite',
      trustDomain: TD,
      now: new Date(Date.now() - 50 * 60_000).toISOString(),
    });
    const a = await t.issueAdmin('operator', 'ops');
    admin = { cert: a.cert, key: a.key };
    // Root's, out of the workload's reach: what the attacks try to have the agent delete or read.
    mkdirSync(join(victim, 'sub'), { recursive: true, mode: 0o700 });
    chmodSync(victim, 0o700);
    writeFileSync(join(victim, 'secret'), 'root only');
    writeFileSync(join(victim, 'sub', 'also'), 'root only too');
    victimBefore = snapshot(victim);
  });
  afterEach(() => expect(snapshot(victim)).toEqual(victimBefore));
  afterAll(async () => {
    await t.close();
    tmp.cleanup();
  });

  it('a workload can change no name where the agent reads, links or deletes: every attempt is refused by the kernel', async () => {
    const dir = await node('n1');
    const gen = realpathSync(join(dir, 'workloads', 'web-n1'));
    const st = lstatSync(gen);
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, WORKLOAD_UID, 0o750]);
    const before = snapshot(dir);
    const attempts = {
      'rm state.json (finding 2)': `rm -f ${gen}/state.json`,
      'a FIFO at state.json': `mkfifo ${gen}/state.json.new && mv ${gen}/state.json.new ${gen}/state.json`,
      'a symlink in the generation': `ln -s ${victim} ${gen}/d`,
      'a hardlink in the generation': `ln ${gen}/cert.pem ${gen}/hard`,
      'rename the generation': `mv ${gen} ${gen}.x`,
      'remove the generation': `rm -rf ${gen}`,
      'repoint the link': `ln -sfn ${victim} ${dir}/workloads/web-n1`,
      'a new generation name': `mkdir ${dir}/workloads/.web-n1.00ff`,
      'a FIFO at the agent state': `mkfifo ${dir}/state.json.x && mv ${dir}/state.json.x ${dir}/state.json`,
      'chmod the generation': `chmod 0777 ${gen}`,
      'the node key': `cat ${dir}/node/key.pem`,
      'another workload key': `cat ${dir}/workloads/other-n1/key.pem`,
    };
    for (const [what, script] of Object.entries(attempts)) {
      const r = asWorkload(script);
      expect({ what, refused: r.status !== 0 }).toEqual({ what, refused: true });
    }
    expect(snapshot(dir)).toEqual(before);
    // What the workload may do: read and write its own files (the agent never reads them).
    expect(asWorkload(`cat ${gen}/key.pem > /dev/null && echo garbage > ${gen}/cert.pem`).status).toBe(0);
    const r = await agentOnce(t.url, dir);
    expect(r).toMatchObject({ status: 0, timedOut: false });
  });

  /** Turns the current generation of `name` into what an agent before issue 14 left: the workload's. */
  const asLegacy = (dir: string, name: string): string => {
    const gen = realpathSync(join(dir, 'workloads', name));
    for (const f of ['', 'cert.pem', 'key.pem', 'bundle.pem', 'state.json'])
      chownSync(join(gen, f), WORKLOAD_UID, WORKLOAD_UID);
    chmodSync(gen, 0o755);
    return gen;
  };

  it('finding 2: a FIFO for state.json in a directory an earlier agent gave away does not block the root agent', async () => {
    const dir = join(tmp.path, 'n1');
    const gen = asLegacy(dir, 'web-n1');
    expect(
      asWorkload(
        `rm ${gen}/state.json && mkfifo ${gen}/state.json && mkfifo ${gen}/cert.pem.x && rm ${gen}/key.pem && mkfifo ${gen}/key.pem`,
      ).status,
    ).toBe(0);
    const r = await agentOnce(t.url, dir);
    expect(r).toMatchObject({ status: 0, timedOut: false });
    expect(r.out).toMatch(/renewed workload web-n1|issued workload web-n1/);
    // Issued anew into a directory of the agent's; the given-away one is gone from workloads/.
    const fresh = realpathSync(join(dir, 'workloads', 'web-n1'));
    expect(fresh).not.toBe(gen);
    expect(lstatSync(fresh).uid).toBe(0);
    expect(readdirSync(join(dir, 'workloads')).filter((e) => e.startsWith('.web-n1.'))).toEqual([
      fresh.split('/').pop(),
    ]);
  });

  it('finding 1: a subdirectory swapped for a symlink while the agent removes a given-away generation deletes nothing outside', async () => {
    const dir = join(tmp.path, 'n1');
    const gen = asLegacy(dir, 'api-n1');
    // The reviewer's setup: 5,000 planted files, and a watcher that swaps d for a symlink to the
    // victim as soon as the count drops; deleting state.json makes the agent reissue at once.
    expect(
      asWorkload(
        `mkdir ${gen}/d && cd ${gen}/d && i=0; while [ $i -lt 5000 ]; do : > f$i; i=$((i+1)); done; rm ${gen}/state.json`,
      ).status,
    ).toBe(0);
    const watcher: ChildProcess = spawn(
      'setpriv',
      [
        '--reuid',
        `${WORKLOAD_UID}`,
        '--regid',
        `${WORKLOAD_UID}`,
        '--clear-groups',
        '--',
        'timeout',
        '30',
        'sh',
        '-c',
        `cd ${gen} && while [ "$(ls d 2>/dev/null | wc -l)" -ge 5000 ]; do :; done; mv d d.old && ln -s ${victim} d && echo swapped`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const watched = new Promise<string>((resolve) => {
      let out = '';
      watcher.stdout!.on('data', (d) => (out += d));
      watcher.stderr!.on('data', (d) => (out += d));
      watcher.on('close', () => resolve(out));
    });
    const r = await agentOnce(t.url, dir);
    watcher.kill('SIGKILL');
    const watcherOut = await watched;
    expect(r).toMatchObject({ status: 0, timedOut: false });
    // The swap was refused: the agent had taken the directory before touching a name in it.
    expect(watcherOut).not.toMatch(/^swapped$/m);
    // What the workload planted is not deleted but moved whole to the quarantine, root's and 0700.
    const quarantined = readdirSync(join(dir, '.quarantine')).filter((e) => e.startsWith('.api-n1.'));
    expect(quarantined).toHaveLength(1);
    const q = join(dir, '.quarantine', quarantined[0]!);
    expect([lstatSync(q).uid, lstatSync(q).mode & 0o777]).toEqual([0, 0o700]);
    expect(readdirSync(join(q, 'd'))).toHaveLength(5000);
    expect(lstatSync(join(dir, 'workloads', 'api-n1')).isSymbolicLink()).toBe(true);
    expect(lstatSync(realpathSync(join(dir, 'workloads', 'api-n1'))).uid).toBe(0);
  });

  it.each([
    [
      'a symlink to the victim at key.pem',
      (g: string) => `rm ${g}/key.pem && ln -s ${victim}/secret ${g}/key.pem`,
    ],
    [
      'a directory at cert.pem',
      (g: string) => `rm ${g}/cert.pem && mkdir ${g}/cert.pem && : > ${g}/cert.pem/x`,
    ],
    [
      'a symlink to the victim directory at bundle.pem',
      (g: string) => `rm ${g}/bundle.pem && ln -s ${victim} ${g}/bundle.pem`,
    ],
    ['a 4 GiB sparse state.json', (g: string) => `truncate -s 4G ${g}/state.json`],
    [
      'a symlink to the victim at state.json',
      (g: string) => `rm ${g}/state.json && ln -s ${victim}/sub/also ${g}/state.json`,
    ],
  ])(
    'given-away generation with %s: the agent reissues, follows nothing, and removes only names',
    async (_w, plant) => {
      const dir = await node(`v${variant++}`);
      const name = readdirSync(join(dir, 'workloads')).find((e) => e.startsWith('web-'))!;
      const gen = asLegacy(dir, name);
      expect(asWorkload(plant(gen)).status).toBe(0);
      const r = await agentOnce(t.url, dir);
      expect(r).toMatchObject({ status: 0, timedOut: false });
      const fresh = realpathSync(join(dir, 'workloads', name));
      expect(fresh).not.toBe(gen);
      expect(lstatSync(fresh).uid).toBe(0);
    },
  );

  it('after all of it, the node and every workload still rotate when due', async () => {
    const dir = join(tmp.path, 'n1');
    const client = new CaClient({ serverUrl: t.url });
    try {
      const agent = new NodeAgent({ dir, clock: t.clock, client, random: () => 0.5 });
      const before = new WorkloadStore(dir).names().map((n) => new WorkloadStore(dir).load(n)!.serial);
      t.clock.set(new Date());
      const r = await agent.runOnce();
      expect(r.node?.action).toBe('renewed');
      expect(r.workloadsError).toBeUndefined();
      expect(r.workloads.map((w) => [w.name, w.action]).sort()).toEqual([
        ['api-n1', 'renewed'],
        ['other-n1', 'renewed'],
        ['web-n1', 'renewed'],
      ]);
      const after = new WorkloadStore(dir).names().map((n) => new WorkloadStore(dir).load(n)!.serial);
      expect(after.filter((s) => before.includes(s))).toEqual([]);
    } finally {
      client.close();
    }
  });
});
