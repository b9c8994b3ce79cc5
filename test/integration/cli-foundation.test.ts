import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { loadKeyring } from '../../services/ca/src/domain/keyring';
import { kekFromBase64, unwrapKey } from '../../services/ca/src/pki/kek';
import { openDatabase } from '../../services/ca/src/storage/knex/database';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { baton, startServerProcess, type Env } from '../support/cli';
import { https } from '../support/https';
import { opensslText, run, tempDir, writeFiles } from '../support/tools';

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

describeEachBackend('baton ca init + server', (backend: Backend) => {
  const dir = tempDir();
  const dataDir = join(dir.path, 'data');
  let env: Env = {};
  let drop: () => Promise<void> = async () => {};

  beforeAll(async () => {
    if (backend === 'postgres') {
      const pg = await createPostgresDatabase();
      drop = pg.drop;
      env = { BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
    }
  });
  afterAll(async () => {
    await drop();
    dir.cleanup();
  });

  it('initializes once, printing the trust domain and a 52-character root pin', () => {
    const r = baton(['ca', 'init', '--trust-domain', 'example.org', '--data-dir', dataDir], env);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(
      /^trust domain: example\.org\nroot pin: [a-z2-7]{52}\nadmin credentials: .*admin\n$/,
    );
    const again = baton(['ca', 'init', '--trust-domain', 'example.org', '--data-dir', dataDir], env);
    expect(again.status).toBe(1);
    expect(again.stderr).toBe('baton: the CA is already initialized (ERR_ALREADY_INITIALIZED)\n');
  });

  it('writes the admin credential with a 0600 key, and the embedded KEK file 0600', () => {
    const admin = join(dataDir, 'admin');
    expect(statSync(join(admin, 'key.pem')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(admin, 'cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    const text = opensslText(readFileSync(join(admin, 'cert.pem'), 'utf8'));
    expect(text).toContain('URI:spiffe://example.org/admin/admin');
    expect(text).toMatch(/Subject: O = example.org, OU = admin, CN = admin/);
    if (backend === 'pglite') expect(statSync(join(dataDir, 'kek')).mode & 0o777).toBe(0o600);
  });

  it('keeps no CA private key in plaintext anywhere in the data dir or the database', async () => {
    const kekText = env.BATON_KEK ?? readFileSync(join(dataDir, 'kek'), 'utf8');
    const kek = kekFromBase64(kekText, 'kek');
    const knex = openDatabase({ dataDir, databaseUrl: env.BATON_DATABASE_URL });
    const storage = knexStorage(knex);
    const cas = await storage.cas.listCas();
    const jwtKeys = await storage.jwtKeys.list();
    const raw = [...(await knex('cas').select('key_blob')), ...(await knex('jwt_keys').select('key_blob'))];
    await storage.close();
    expect(cas).toHaveLength(2);
    // `ca init` made the signing intermediate's JWT-SVID signing key, wrapped like the CA keys.
    expect(jwtKeys.map((k) => k.caId)).toEqual(cas.filter((c) => c.kind === 'intermediate').map((c) => c.id));
    const secrets = [
      ...cas.map((c) => unwrapKey(kek, c.wrappedKey, c.id)),
      ...jwtKeys.map((k) => unwrapKey(kek, k.wrappedKey, k.kid)),
    ];
    // The raw columns are ciphertext: they contain no PKCS#8 of any CA or JWT signing key.
    for (const row of raw) for (const s of secrets) expect(Buffer.from(row.key_blob).includes(s)).toBe(false);
    // No file below the data dir holds a CA key, in DER or PEM; the only PEM private key is the admin's.
    const pems = secrets.map((s) => s.toString('base64').slice(0, 60));
    for (const f of filesUnder(dataDir)) {
      const bytes = readFileSync(f);
      for (const [i, s] of secrets.entries()) {
        expect({ f, found: bytes.includes(s) || bytes.includes(pems[i]!) }).toEqual({ f, found: false });
      }
      if (bytes.includes('PRIVATE KEY-----')) expect(f).toBe(join(dataDir, 'admin', 'key.pem'));
    }
    const keyring = loadKeyring(cas, kek, 'https://x.example', jwtKeys);
    expect(keyring.signing.record.kind).toBe('intermediate');
    expect(keyring.jwt.active?.kid).toBe(jwtKeys[0]!.kid);
  });

  it('serves the bundle over HTTPS whose chain verifies with openssl -x509_strict, and stops on SIGTERM', async () => {
    const srv = await startServerProcess(['--data-dir', dataDir], env);
    try {
      const bundle = readFileSync(join(dataDir, 'admin', 'bundle.pem'), 'utf8');
      const res = await https(`${srv.url}/v1/bundle`, { ca: bundle });
      expect(res.status).toBe(200);
      expect(res.body.toString()).toBe(bundle);
      const ready = await https(`${srv.url}/readyz`, { ca: bundle });
      expect(ready.json()).toEqual({ status: 'ready', checks: { database: true, ca_keys: true } });
      const hostPort = srv.url.replace('https://', '');
      const sc = run('openssl', ['s_client', '-connect', hostPort, '-showcerts'], '');
      const chain = sc.out.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
      expect(chain).toHaveLength(2);
      const f = writeFiles(dir.path, { 'bundle.pem': bundle, 'leaf.pem': chain[0]!, 'inter.pem': chain[1]! });
      const v = run('openssl', [
        'verify',
        '-x509_strict',
        '-purpose',
        'sslserver',
        '-CAfile',
        f['bundle.pem']!,
        '-untrusted',
        f['inter.pem']!,
        f['leaf.pem']!,
      ]);
      expect(v.out.trim()).toBe(`${f['leaf.pem']}: OK`);
      expect(opensslText(chain[0]!)).toMatch(/IP Address:127\.0\.0\.1/);
      const interText = opensslText(chain[1]!);
      expect(interText).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
      expect(interText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
      expect(opensslText(bundle)).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:1/);
      expect(sc.out).toMatch(/New, TLSv1\.3/);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
  });

  it('refuses to start with a wrong KEK: one line, exit 1', () => {
    const r = baton(['server', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
      ...env,
      BATON_KEK: randomBytes(32).toString('base64'),
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /^baton: the key-encryption key \(kek-[0-9a-f]+\) is not the one the CA keys were encrypted with .*\(ERR_KEK_INVALID\)\n$/,
    );
  });

  it('refuses to start with no KEK: one line, exit 1', () => {
    if (backend === 'pglite') unlinkSync(join(dataDir, 'kek'));
    const r = baton(['server', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
      ...env,
      BATON_KEK: undefined,
    });
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(r.stderr).toContain('(ERR_KEK_MISSING)');
  });
});

describe('baton command line', () => {
  it.each([
    ['fail/unknown option', ['ca', 'init', '--trust-domain', 'a.org', '--bogus'], /Unknown option '--bogus'/],
    [
      'fail/bad duration',
      ['ca', 'init', '--trust-domain', 'a.org', '--node-ttl', '24'],
      /--node-ttl: invalid duration "24"/,
    ],
    ['fail/ttl below 1m', ['ca', 'init', '--trust-domain', 'a.org', '--workload-ttl', '30s'], /at least 1m/],
    ['fail/ttl above max', ['ca', 'init', '--trust-domain', 'a.org', '--node-ttl', '400d'], /at most 30d/],
    ['fail/missing trust domain', ['ca', 'init'], /--trust-domain is required/],
    ['fail/uppercase trust domain', ['ca', 'init', '--trust-domain', 'Example.org'], /invalid trust domain/],
    ['fail/unknown command', ['frobnicate'], /unknown command "frobnicate"/],
    ['fail/bad listen', ['server', '--listen', 'nowhere'], /--listen: expected HOST:PORT/],
    ['fail/http public url', ['server', '--public-url', 'http://a.org'], /must be an https:\/\/ URL/],
    ['fail/extra argument', ['migrate', 'extra'], /expected no arguments/],
    [
      'fail/retention below a minute',
      ['server', '--retain-expired', '30s'],
      /--retain-expired: must be at least 1m/,
    ],
    [
      'fail/audit retention not a duration',
      ['server', '--retain-audit', '90'],
      /--retain-audit: invalid duration/,
    ],
    ['fail/prune without a date', ['audit', 'prune'], /--before DATE is required/],
    [
      'fail/export with a bad date',
      ['audit', 'export', '--before', 'last year'],
      /--before: an ISO 8601 date/,
    ],
  ])('%s exits 2 with one line', (_name, args, message) => {
    const dir = tempDir();
    try {
      const r = baton([...args, '--data-dir', dir.path]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    } finally {
      dir.cleanup();
    }
  });

  it.each([
    'ca init',
    'server',
    'migrate',
    'admin recover',
    'audit export',
    'audit prune',
    'audit checkpoint',
  ])('baton %s --help exits 0 with usage', (command) => {
    const words = command.split(' ');
    const r = baton([...words, '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^usage: baton ${words.join(' ')}`));
  });

  it('baton --help lists the commands', () => {
    const r = baton(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/ca init[\s\S]*server[\s\S]*migrate/);
  });

  it('admin recover writes a fresh admin credential with direct database and KEK access', () => {
    const dir = tempDir();
    try {
      expect(baton(['ca', 'init', '--trust-domain', 'r.example', '--data-dir', dir.path]).status).toBe(0);
      const before = readFileSync(join(dir.path, 'admin', 'cert.pem'), 'utf8');
      const r = baton(['admin', 'recover', '--name', 'alice', '--data-dir', dir.path]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain('spiffe://r.example/admin/alice');
      const after = readFileSync(join(dir.path, 'admin', 'cert.pem'), 'utf8');
      expect(after).not.toBe(before);
      expect(opensslText(after)).toMatch(/OU = admin, CN = alice/);
      expect(statSync(join(dir.path, 'admin', 'key.pem')).mode & 0o777).toBe(0o600);
      const missing = baton(['admin', 'recover', '--data-dir', dir.path]);
      expect(missing.status).toBe(2);
    } finally {
      dir.cleanup();
    }
  });

  it('migrate is idempotent', () => {
    const dir = tempDir();
    try {
      expect(baton(['migrate', '--data-dir', dir.path]).stdout).toMatch(
        /^applied 20261126150000_create_ca_tables\n/,
      );
      expect(baton(['migrate', '--data-dir', dir.path]).stdout).toBe('database is up to date\n');
    } finally {
      dir.cleanup();
    }
  });
});
