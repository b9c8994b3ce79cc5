import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { batonAsync, baton, type ServerProcess, startServerProcess } from '../support/cli';
import { createPostgresDatabase, describePostgres } from '../support/database';
import { https } from '../support/https';
import { type IssuanceBody, keyAndCsr } from '../support/node-client';
import { tempDir } from '../support/tools';

describePostgres('join tokens across two server processes on one PostgreSQL', () => {
  const dir = tempDir();
  const dataDir = join(dir.path, 'data');
  const adminDir = join(dataDir, 'admin');
  let env: Record<string, string> = {};
  let drop: () => Promise<void> = async () => {};
  let servers: ServerProcess[] = [];

  beforeAll(async () => {
    const pg = await createPostgresDatabase();
    drop = pg.drop;
    env = {
      BATON_DATABASE_URL: pg.url,
      BATON_KEK: randomBytes(32).toString('base64'),
      BATON_DATA_DIR: dataDir,
    };
    const init = baton(['ca', 'init', '--trust-domain', 'replicas.example'], env);
    expect(init.status).toBe(0);
    servers = await Promise.all([startServerProcess([], env), startServerProcess([], env)]);
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await drop();
    dir.cleanup();
  });

  it('50 concurrent uses of a 1-use token, spread over both processes, give exactly one certificate', async () => {
    const created = await batonAsync(
      ['token', 'create', '--role', 'worker', '--server', servers[0]!.url, '--admin-dir', adminDir],
      env,
    );
    expect(created.stderr).toBe('');
    const token = created.stdout.trim();
    expect(token).toMatch(/^BATON1-[a-z2-7]{52}-[0-9a-f]{16}\.[a-z2-7]{52}$/);
    const csrs = await Promise.all(Array.from({ length: 50 }, () => keyAndCsr()));
    const results = await Promise.all(
      csrs.map((c, i) =>
        https(`${servers[i % 2]!.url}/v1/attest`, {
          method: 'POST',
          body: JSON.stringify({ method: 'join_token', token, csr: c.csrPem }),
        }),
      ),
    );
    const ok = results.filter((r) => r.status === 201);
    console.log(
      `token race: 50 attestations over 2 processes -> ${ok.length} issued, ${results.filter((r) => r.status === 401).length} refused`,
    );
    expect(ok).toHaveLength(1);
    expect(results.filter((r) => r.status === 401)).toHaveLength(49);
    const nodeId = ok[0]!.json<IssuanceBody>().node_id!;
    const list = await batonAsync(
      ['node', 'list', '--json', '--server', servers[1]!.url, '--admin-dir', adminDir],
      env,
    );
    expect(JSON.parse(list.stdout)).toEqual({
      nodes: [expect.objectContaining({ id: nodeId, role: 'worker', status: 'active' })],
      next: null,
    });
    const show = await batonAsync(
      ['node', 'show', nodeId, '--server', servers[1]!.url, '--admin-dir', adminDir],
      env,
    );
    expect(show.stdout).toMatch(new RegExp(`^id: +${nodeId}\\nrole: +worker\\nstatus: +active`));
    expect(show.stdout).toContain(ok[0]!.json<IssuanceBody>().serial);
  });

  it('token create refuses a bad role with exit 2 and a bad server with exit 1, one line each', async () => {
    const bad = await batonAsync(
      ['token', 'create', '--role', 'king', '--server', servers[0]!.url, '--admin-dir', adminDir],
      env,
    );
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe('baton: --role must be worker or manager (ERR_USAGE)\n');
    const down = await batonAsync(
      ['token', 'create', '--role', 'worker', '--server', 'https://127.0.0.1:1', '--admin-dir', adminDir],
      env,
    );
    expect(down.status).toBe(1);
    expect(down.stderr).toMatch(
      /^baton: cannot reach https:\/\/127\.0\.0\.1:1: ECONNREFUSED \(ERR_SERVER_UNREACHABLE\)\n$/,
    );
    const noCred = await batonAsync(
      ['node', 'list', '--server', servers[0]!.url, '--admin-dir', dir.path],
      env,
    );
    expect(noCred.status).toBe(1);
    expect(noCred.stderr).toMatch(/no admin credential in/);
  });
});
