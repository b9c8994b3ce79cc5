import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { baton, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { CorporatePki } from '../support/corporate-ca';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { errorBodyOf } from '../support/errors';
import { type SoftwareTpm, startSwtpm, SWTPM_TOOLS } from '../support/swtpm';
import { type TpmNode, tpmExchange, tpmNode } from '../support/tpm-node';
import { describeWith, tempDir } from '../support/tools';

/**
 * Issue 19, the admin commands: `baton node enroll --tpm-ek-id`, `baton tpm ca add FILE`,
 * `baton tpm ca list`, the built CLI against a spawned `baton server`; and the revocation ban of a
 * TPM across a restart of the server (PGlite: the same data dir; PostgreSQL: a second replica).
 */

const TD = 'tpm.example.org';
const SLOW = 180_000;

interface CaView {
  subject: string;
  fingerprint: string;
  not_before: string;
  not_after: string;
  role: string;
  created_at: string;
}

describeEachBackend('baton node enroll / tpm ca (CLI)', (backend: Backend) => {
  const dir = tempDir('baton-tpm-cli-');
  const dataDir = join(dir.path, 'data');
  let env: Env = {};
  let drop: () => Promise<void> = async () => {};
  let server: ServerProcess;
  const pki = new CorporatePki(dir.path);
  const root = pki.root('Maker Root');
  const issuer = pki.intermediate('Maker EK CA', root);
  const file = (name: string, content: string) => {
    const path = join(dir.path, name);
    writeFileSync(path, content);
    return path;
  };

  const cli = (args: string[]) => baton([...args, '--server', server.url, '--data-dir', dataDir], env);

  beforeAll(async () => {
    if (backend === 'postgres') {
      const pg = await createPostgresDatabase();
      drop = pg.drop;
      env = { BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
    }
    expect(baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir], env).status).toBe(0);
    server = await startServerProcess(['--data-dir', dataDir], env);
  }, SLOW);
  afterAll(async () => {
    await server?.stop();
    await drop();
    dir.cleanup();
  });

  it('ok/node enroll: the EK id admitted as node tpm-<20 hex>, in words and in JSON; the EK id in any case', () => {
    const ekId = randomBytes(32).toString('hex');
    const r = cli(['node', 'enroll', '--tpm-ek-id', ekId, '--role', 'manager']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`enrolled TPM ${ekId} as node tpm-${ekId.slice(0, 20)} (manager)\n`);
    const j = cli(['node', 'enroll', '--tpm-ek-id', ekId.toUpperCase(), '--role', 'manager', '--json']);
    expect(j.status).toBe(0);
    expect(JSON.parse(j.stdout)).toEqual({
      ek_id: ekId,
      node_id: `tpm-${ekId.slice(0, 20)}`,
      role: 'manager',
      reinstated: false,
    });
  });

  it.each([
    ['no --tpm-ek-id', ['--role', 'worker'], '--tpm-ek-id is required'],
    [
      'an EK id of 63 digits',
      ['--tpm-ek-id', 'a'.repeat(63), '--role', 'worker'],
      '--tpm-ek-id must be 64 hexadecimal digits',
    ],
    [
      'an EK id that is not hex',
      ['--tpm-ek-id', 'g'.repeat(64), '--role', 'worker'],
      '--tpm-ek-id must be 64 hexadecimal digits',
    ],
    ['no --role', ['--tpm-ek-id', 'a'.repeat(64)], '--role must be worker or manager'],
    ['--role admin', ['--tpm-ek-id', 'a'.repeat(64), '--role', 'admin'], '--role must be worker or manager'],
  ])('fail/node enroll with %s: exit 2, one line', (_name, args, message) => {
    const r = cli(['node', 'enroll', ...args]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('ok/tpm ca add FILE (root and intermediate): a table; tpm ca list, and --json, the same CAs', () => {
    const r = cli(['tpm', 'ca', 'add', file('maker.pem', root.pem + issuer.pem), '--role', 'manager']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const [head, ...rows] = r.stdout.trim().split('\n');
    expect(head).toMatch(/^FINGERPRINT \(SHA-256\)\s+ROLE\s+NOT AFTER\s+SUBJECT$/);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatch(/^[0-9a-f]{64}\s+manager\s+\S+\s+O=Corp, CN=Maker Root$/);
    const list = cli(['tpm', 'ca', 'list', '--json']);
    expect(list.status).toBe(0);
    const { cas } = JSON.parse(list.stdout) as { cas: CaView[] };
    // Added together: listed by fingerprint (oldest first, then fingerprint).
    expect(cas.map((c) => c.fingerprint)).toEqual(cas.map((c) => c.fingerprint).sort());
    expect(cas.map((c) => [c.subject, c.role]).sort()).toEqual([
      ['O=Corp, CN=Maker EK CA', 'manager'],
      ['O=Corp, CN=Maker Root', 'manager'],
    ]);
    expect(Object.keys(cas[0]!).sort()).toEqual([
      'created_at',
      'fingerprint',
      'not_after',
      'not_before',
      'role',
      'subject',
    ]);
    const human = cli(['tpm', 'ca', 'list']);
    expect(human.stdout.trim().split('\n')).toHaveLength(3);
    // The same file again: a conflict, named.
    const again = cli(['tpm', 'ca', 'add', file('maker-again.pem', issuer.pem)]);
    expect(again.status).toBe(1);
    expect(again.stderr).toBe(
      'baton: certificate 1 (O=Corp, CN=Maker EK CA) is already a manufacturer CA (ERR_CONFLICT)\n',
    );
  });

  it.each([
    [
      'a file with a private key',
      () => root.pem + readFileSync(root.keyFile, 'utf8'),
      'the file contains a private key: give only the manufacturer CA certificates',
    ],
    [
      'a leaf certificate (not a CA)',
      () =>
        pki.sign(pki.newRequest('/CN=leaf').csrFile, root, { ext: ['basicConstraints=critical,CA:FALSE'] }),
      'certificate 1 is not a CA certificate (basicConstraints cA)',
    ],
    ['an empty file', () => '', 'no PEM certificate found'],
  ])('fail/tpm ca add with %s: exit 1 before anything is sent, nothing added', (_name, content, message) => {
    const before = JSON.parse(cli(['tpm', 'ca', 'list', '--json']).stdout) as { cas: CaView[] };
    const path = file(`bad-${randomBytes(4).toString('hex')}.pem`, content());
    const r = cli(['tpm', 'ca', 'add', path]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`baton: ${path}: ${message} (ERR_BAD_REQUEST)\n`);
    expect(JSON.parse(cli(['tpm', 'ca', 'list', '--json']).stdout)).toEqual(before);
  });

  it('fail/tpm ca add of a missing file: exit 2; a bad --role: exit 2', () => {
    const missing = join(dir.path, 'nope.pem');
    const r = cli(['tpm', 'ca', 'add', missing]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`baton: cannot read ${missing} (ENOENT) (ERR_USAGE)\n`);
    const role = cli(['tpm', 'ca', 'add', file('x.pem', root.pem), '--role', 'auditor']);
    expect(role.status).toBe(2);
    expect(role.stderr).toContain('--role must be worker or manager');
  });

  it('ok/--help names the flags', () => {
    expect(baton(['node', 'enroll', '--help']).stdout).toContain('--tpm-ek-id HEX');
    expect(baton(['tpm', 'ca', 'add', '--help']).stdout).toContain('usage: baton tpm ca add FILE [options]');
    expect(baton(['--help']).stdout).toMatch(/tpm ca list/);
  });
});

/** The ban is the node row in the database: it holds across a restart and on every replica. */
function banAcrossRestart(backend: Backend) {
  const dir = tempDir('baton-tpm-ban-');
  const dataDir = join(dir.path, 'data');
  let env: Env = {};
  let drop: () => Promise<void> = async () => {};
  let servers: ServerProcess[] = [];
  let tpm: SoftwareTpm;
  let node: TpmNode;
  let bundle: string;

  beforeAll(async () => {
    if (backend === 'postgres') {
      const pg = await createPostgresDatabase();
      drop = pg.drop;
      env = { BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
    }
    expect(baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir], env).status).toBe(0);
    bundle = readFileSync(join(dataDir, 'admin', 'bundle.pem'), 'utf8');
    servers = [await startServerProcess(['--data-dir', dataDir], env)];
    tpm = await startSwtpm();
    node = await tpmNode(tpm, { ekType: 'ecc' });
  }, SLOW);
  afterAll(async () => {
    for (const s of servers) await s.stop();
    await tpm?.stop();
    await drop();
    dir.cleanup();
  });

  const cli = (url: string, args: string[]) => baton([...args, '--server', url, '--data-dir', dataDir], env);

  it(
    'ok/revoked, the TPM is refused after a restart (and on another replica) until node enroll; then it joins as the same node',
    async () => {
      const url = servers[0]!.url;
      expect(cli(url, ['node', 'enroll', '--tpm-ek-id', node.ekId, '--role', 'worker']).status).toBe(0);
      const first = await tpmExchange({ url, bundle }, node);
      expect(first.r?.status).toBe(201);
      const nodeId = first.r!.json<{ node_id: string }>().node_id;
      expect(nodeId).toBe(`tpm-${node.ekId.slice(0, 20)}`);
      expect(cli(url, ['node', 'revoke', nodeId]).status).toBe(0);
      // PGlite: the same data dir after a restart. PostgreSQL: a second replica, then a restart.
      if (backend === 'postgres') servers.push(await startServerProcess(['--data-dir', dataDir], env));
      await servers[0]!.stop();
      servers[0] = await startServerProcess(['--data-dir', dataDir], env);
      for (const s of servers) {
        const refused = await tpmExchange({ url: s.url, bundle }, node);
        expect(refused.challenge.status).toBe(403);
        expect(errorBodyOf(refused.challenge).code).toBe('ERR_NODE_REVOKED');
      }
      const last = servers.at(-1)!.url;
      const enrolled = cli(last, ['node', 'enroll', '--tpm-ek-id', node.ekId, '--role', 'worker']);
      expect(enrolled.stdout).toBe(
        `enrolled TPM ${node.ekId} as node ${nodeId} (worker), revoked node admitted again\n`,
      );
      for (const s of servers) {
        const back = await tpmExchange({ url: s.url, bundle }, node);
        expect(back.r?.status).toBe(201);
        expect(back.r!.json<{ node_id: string }>().node_id).toBe(nodeId);
      }
      const show = JSON.parse(cli(last, ['node', 'show', nodeId, '--json']).stdout) as {
        node: { status: string };
        certificates: { serial: string; status: string }[];
      };
      expect(show.node.status).toBe('active');
      expect(
        show.certificates.find((c) => c.serial === first.r!.json<{ serial: string }>().serial)?.status,
      ).toBe('revoked');
    },
    SLOW,
  );
}

describeWith(SWTPM_TOOLS, 'the TPM ban across a restart (CLI, swtpm)', () => {
  describeEachBackend('its database', banAcrossRestart);
});
