import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { baton, cliEnv, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { tempDir } from '../support/tools';

const BIN = join(__dirname, '..', '..', 'bin', 'baton.js');

describeEachBackend('baton agent (CLI)', (backend: Backend) => {
  const dir = tempDir('baton-agent-cli-');
  const dataDir = join(dir.path, 'data');
  let env: Env = {};
  let drop: () => Promise<void> = async () => {};
  let server: ServerProcess;

  const token = (): string => {
    const r = baton(
      ['token', 'create', '--role', 'worker', '--server', server.url, '--admin-dir', join(dataDir, 'admin')],
      env,
    );
    expect(r.stderr).toBe('');
    return r.stdout.trim();
  };

  beforeAll(async () => {
    if (backend === 'postgres') {
      const pg = await createPostgresDatabase();
      drop = pg.drop;
      env = { BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
    }
    const init = baton(['ca', 'init', '--trust-domain', 'agent.example.org', '--data-dir', dataDir], env);
    expect(init.status).toBe(0);
    server = await startServerProcess(['--data-dir', dataDir], env);
  });
  afterAll(async () => {
    await server?.stop();
    await drop();
    dir.cleanup();
  });

  it('--once attests, writes the files, and never prints the token; the same token again exits 1 with one line', () => {
    const t = token();
    expect(t).toMatch(/^BATON1-[a-z2-7]{52}-[0-9a-f]{16}\.[a-z2-7]+$/);
    const node = join(dir.path, 'node-1');
    const r = baton(['agent', '--server', server.url, '--token', t, '--dir', node, '--once'], env);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(
      /^attested node [a-z2-7]{16} \(serial [0-9a-f]+, refresh at \S+Z\)\ncrl updated \(2 CRLs\)\n$/,
    );
    expect(readFileSync(join(node, 'crl.pem'), 'utf8')).toMatch(/^-----BEGIN X509 CRL-----\n/);
    expect(statSync(join(node, 'node', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(node, 'node', 'cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(readFileSync(join(node, 'bundle.pem'), 'utf8')).toBe(
      readFileSync(join(dataDir, 'admin', 'bundle.pem'), 'utf8'),
    );

    const again = baton(
      ['agent', '--server', server.url, '--token', t, '--dir', join(dir.path, 'node-2'), '--once'],
      env,
    );
    expect(again.status).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toBe('baton: invalid join token (ERR_TOKEN_INVALID)\n');
    expect(`${r.stdout}${again.stderr}`).not.toContain(t.split('.')[1]);
    expect(existsSync(join(dir.path, 'node-2', 'node', 'cert.pem'))).toBe(false);

    const resume = baton(['agent', '--server', server.url, '--dir', node, '--once'], env);
    expect(resume.status).toBe(0);
    expect(resume.stdout).toMatch(/^nothing due until \S+Z \(node [a-z2-7]{16}, serial [0-9a-f]+\)\n$/);
  });

  it('takes the server and token from BATON_SERVER and BATON_TOKEN, and prints JSON with --json', () => {
    const node = join(dir.path, 'node-env');
    const r = baton(['agent', '--dir', node, '--once', '--json'], {
      ...env,
      BATON_SERVER: server.url,
      BATON_TOKEN: token(),
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      action: 'attested',
      node_id: expect.stringMatching(/^[a-z2-7]{16}$/),
      serial: expect.stringMatching(/^[0-9a-f]+$/),
      spiffe_id: expect.stringMatching(/^spiffe:\/\/agent\.example\.org\/node\/[a-z2-7]{16}$/),
      expires_at: expect.any(String),
      refresh_at: expect.any(String),
      workloads: [],
      crl: { action: 'updated', crls: 2 },
    });
  });

  it('--once keeps the workload SVIDs of the entries parented to the node: one line each, or JSON', () => {
    const node = join(dir.path, 'node-workloads');
    const first = baton(['agent', '--server', server.url, '--token', token(), '--dir', node, '--once'], env);
    expect(first.status).toBe(0);
    const id = /^attested node ([a-z2-7]{16})/.exec(first.stdout)![1]!;
    const admin = ['--server', server.url, '--admin-dir', join(dataDir, 'admin')];
    const created = baton(
      [
        'entry',
        'create',
        '--name',
        'web',
        '--spiffe-id',
        'spiffe://agent.example.org/web',
        '--parent',
        id,
        ...admin,
      ],
      env,
    );
    expect(created.status).toBe(0);

    const r = baton(['agent', '--server', server.url, '--dir', node, '--once'], env);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(
        `^nothing due until \\S+Z \\(node ${id}, serial [0-9a-f]+\\)\\nissued workload web \\(spiffe://agent\\.example\\.org/web, serial [0-9a-f]+, refresh at \\S+Z\\)\\n$`,
      ),
    );
    expect(statSync(join(node, 'workloads', 'web', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(
      readFileSync(join(node, 'workloads', 'web', 'cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g),
    ).toHaveLength(2);

    expect(baton(['entry', 'delete', 'web', ...admin], env).status).toBe(0);
    const removed = baton(['agent', '--server', server.url, '--dir', node, '--once', '--json'], env);
    expect(removed.status).toBe(0);
    expect(JSON.parse(removed.stdout)).toMatchObject({
      action: 'none',
      node_id: id,
      workloads: [{ name: 'web', action: 'removed' }],
      crl: { action: 'unchanged' },
    });
    expect(existsSync(join(node, 'workloads', 'web'))).toBe(false);
  });

  const empty = join(dir.path, 'empty');
  it.each([
    ['fail/no identity and no token', ['--dir', empty], 'no node identity yet: pass --token'],
    ['fail/no --dir', [], '--dir is required'],
    [
      'fail/a malformed token',
      ['--dir', empty, '--token', 'not-a-token'],
      '--token: the token is not a Baton join token (expected BATON1-<pin>-<id>.<secret>)',
    ],
  ])('%s: exit 2 with one line', (_name, args, message) => {
    const r = baton(['agent', '--server', server.url, '--once', ...args], env);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`baton: ${message} (ERR_USAGE)\n`);
  });

  it('fail/an unreachable server: exit 1 with one line', () => {
    const r = baton(
      [
        'agent',
        '--server',
        'https://127.0.0.1:1',
        '--dir',
        join(dir.path, 'x'),
        '--token',
        token(),
        '--once',
      ],
      env,
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /^baton: cannot reach the CA at https:\/\/127\.0\.0\.1:1\/v1\/bundle: .*\(ERR_SERVER_UNREACHABLE\)\n$/,
    );
  });

  it('runs as a daemon until SIGTERM, then exits 0', async () => {
    const node = join(dir.path, 'node-daemon');
    const child = spawn(process.execPath, [BIN, 'agent', '--server', server.url, '--dir', node], {
      env: cliEnv({ ...env, BATON_TOKEN: token() }),
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 300 && !/next renewal at/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    expect(out).toMatch(
      /^workload api: unix:\/\/\S+\/node-daemon\/api\.sock\nattested node [a-z2-7]{16} \(serial [0-9a-f]+, refresh at \S+\)\ncrl updated \(2 CRLs\)\nnext renewal at \S+Z\n$/,
    );
    expect(child.exitCode).toBeNull();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(err).toBe('');
    expect(existsSync(join(node, 'node', 'key.pem'))).toBe(true);
    expect(existsSync(join(node, 'api.sock'))).toBe(false);
  });

  it('the daemon stops on a node revocation from the feed: exit 1 with one line; --once then reports it', async () => {
    const node = join(dir.path, 'node-revoked');
    const child = spawn(
      process.execPath,
      [BIN, 'agent', '--server', server.url, '--dir', node, '--socket', 'none'],
      {
        env: cliEnv({ ...env, BATON_TOKEN: token() }),
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      for (let i = 0; i < 300 && !/next renewal at/.test(out); i++)
        await new Promise((r) => setTimeout(r, 50));
      const id = /^attested node ([a-z2-7]{16})/.exec(out)![1]!;
      // Let the agent reach its long-poll, then revoke the node.
      await new Promise((r) => setTimeout(r, 500));
      const admin = ['--server', server.url, '--admin-dir', join(dataDir, 'admin')];
      expect(baton(['node', 'revoke', id, '--reason', 'key-compromise', ...admin], env).status).toBe(0);
      expect(await exited).toBe(1);
      expect(err).toMatch(
        /^baton: this node has been revoked \(revocation event \d+, reason key-compromise, at \S+Z\): the agent stops renewing \(ERR_NODE_REVOKED\)\n$/,
      );
      expect(out).toMatch(/crl updated \(2 CRLs\)\n$/);

      const once = baton(['agent', '--server', server.url, '--dir', node, '--once'], env);
      expect(once.status).toBe(1);
      expect(once.stderr).toMatch(
        /^baton: workloads: .*has been revoked: the agent stops renewing \(ERR_(NODE|CERT)_REVOKED\)\n$/,
      );
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
