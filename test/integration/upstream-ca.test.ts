import { execFileSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { rootPin } from '../../services/ca/src/pki/pin';
import { baton, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { CA_EXT, type CorporateCa, CorporatePki, SIGNING_CA_EXT } from '../support/corporate-ca';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { describeWith, hasTool, itWith, run, tempDir } from '../support/tools';

/**
 * Issue 18, upstream CA: Baton's signing CA certified by a "corporate" root made with openssl, end
 * to end through the CLI: `ca init --upstream-csr`, `ca import` (refusals first, then the good
 * certificate), `baton server`, a join token that pins the corporate root, `baton agent --once`
 * with a workload entry; every leaf (node, workload, server, admin) verified to the corporate root
 * by openssl -x509_strict, GnuTLS certtool and Go's crypto/x509; a revocation seen by openssl
 * -crl_check through Baton's CRL.
 */
const TD = 'upstream.example.org';
/** Each test runs several CLI processes (each opens the database and runs the migrations). */
const SLOW_MS = 180_000;
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g;
const blocks = (pem: string): string[] =>
  (pem.match(PEM_BLOCK) ?? []).map((b) => (b.endsWith('\n') ? b : `${b}\n`));
const subjectOf = (pem: string): string => new X509Certificate(pem).subject.replace(/\n/g, ', ');

/** Go's verifier, built once for the file into a temp dir (its caches too). */
const goDir = tempDir('baton-go-verify-');
let goVerify: string | undefined;
beforeAll(() => {
  if (!hasTool('go')) return;
  const out = join(goDir.path, 'go-verify');
  execFileSync('go', ['build', '-o', out, join(__dirname, '..', 'support', 'go-verify', 'main.go')], {
    env: {
      ...process.env,
      GOCACHE: join(goDir.path, 'cache'),
      GOPATH: join(goDir.path, 'gopath'),
      GOFLAGS: '',
      GO111MODULE: 'off',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 300_000,
  });
  goVerify = out;
}, 320_000);
afterAll(() => goDir.cleanup());

describeEachBackend('upstream CA', (backend: Backend) => {
  describeWith('openssl', 'ca init --upstream-csr, ca import, then a fleet under a corporate root', () => {
    const dir = tempDir('baton-upstream-');
    const dataDir = join(dir.path, 'data');
    const csrFile = join(dir.path, 'baton.csr');
    const adminDir = join(dataDir, 'admin');
    let env: Env = {};
    let drop: () => Promise<void> = async () => {};
    let server: ServerProcess | undefined;
    let pki: CorporatePki;
    let root: CorporateCa;
    let issuing: CorporateCa;
    const file = (name: string, content: string): string => {
      const path = join(dir.path, name);
      writeFileSync(path, content);
      return path;
    };
    const storage = ['--data-dir', dataDir];

    beforeAll(async () => {
      if (backend === 'postgres') {
        const pg = await createPostgresDatabase();
        drop = pg.drop;
        env = { BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
      }
      mkdirSync(join(dir.path, 'corp'));
      pki = new CorporatePki(join(dir.path, 'corp'));
      root = pki.root('Corp Root', {
        ext: ['basicConstraints=critical,CA:TRUE,pathlen:2', 'keyUsage=critical,keyCertSign,cRLSign'],
      });
      // A corporate issuing CA that lets Baton's trust domain (and nothing else under example.org's
      // siblings) through its name constraints (RFC 5280 §4.2.1.10).
      issuing = pki.intermediate('Corp Issuing CA', root, {
        ext: [...CA_EXT, 'nameConstraints=critical,permitted;URI:.example.org'],
      });
    });
    afterAll(async () => {
      await server?.stop();
      await drop();
      dir.cleanup();
    });

    it(
      'ca init --upstream-csr writes the CSR and stops; the server and ca init refuse while it is pending; again, the same CSR',
      () => {
        const r = baton(['ca', 'init', '--trust-domain', TD, '--upstream-csr', csrFile, ...storage], env);
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        expect(r.stdout).toContain(`signing CA CSR written to ${csrFile}\ntrust domain: ${TD}\n`);
        expect(r.stdout).toContain('baton ca import --cert SIGNED.pem --chain CHAIN.pem');
        const csr = readFileSync(csrFile, 'utf8');
        const text = run('openssl', ['req', '-noout', '-text', '-verify'], csr);
        expect(text.status).toBe(0);
        expect(text.out).toMatch(/verify OK/);
        expect(text.out).toMatch(
          new RegExp(
            `Subject: O = ${TD.replace(/\./g, '\\.')}, OU = baton, CN = Baton Signing CA [0-9a-f]{16}`,
          ),
        );
        expect(text.out).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
        expect(text.out).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
        expect(text.out).toContain(`URI:spiffe://${TD}`);
        expect(existsSync(adminDir)).toBe(false);

        const serve = baton(['server', '--listen', '127.0.0.1:0', ...storage], env);
        expect(serve.status).toBe(1);
        expect(serve.stderr).toBe(
          `baton: the CA of ${TD} awaits its upstream certificate: run \`baton ca import --cert FILE --chain FILE\` (ERR_UPSTREAM_PENDING)\n`,
        );
        for (const cmd of [
          ['ca', 'rotate'],
          ['admin', 'recover', '--name', 'ops'],
        ]) {
          const refused = baton([...cmd, ...storage], env);
          expect({ cmd, status: refused.status }).toEqual({ cmd, status: 1 });
          expect(refused.stderr).toMatch(/awaits its upstream certificate: .*\(ERR_UPSTREAM_PENDING\)\n$/);
        }
        const init = baton(['ca', 'init', '--trust-domain', TD, ...storage], env);
        expect(init.status).toBe(1);
        expect(init.stderr).toMatch(/\(ERR_UPSTREAM_PENDING\)\n$/);
        const other = baton(
          ['ca', 'init', '--trust-domain', 'other.example.org', '--upstream-csr', csrFile, ...storage],
          env,
        );
        expect(other.status).toBe(1);
        expect(other.stderr).toMatch(
          /^baton: an upstream CA for upstream\.example\.org is already pending.*\(ERR_UPSTREAM_PENDING\)\n$/,
        );

        const again = baton(
          ['ca', 'init', '--trust-domain', TD, '--upstream-csr', join(dir.path, 'again.csr'), ...storage],
          env,
        );
        expect(again.status).toBe(0);
        expect(again.stdout).toMatch(/^the pending CSR \(since \S+Z\) was written again to /);
        expect(readFileSync(join(dir.path, 'again.csr'), 'utf8')).toBe(csr);
        // Under a regular file: no directory can be made there.
        const unwritable = join(csrFile, 'baton.csr');
        const lost = baton(
          ['ca', 'init', '--trust-domain', TD, '--upstream-csr', unwritable, ...storage],
          env,
        );
        expect(lost.status).toBe(2);
        expect(lost.stderr).toBe(
          `baton: --upstream-csr: cannot write ${unwritable} (EEXIST); the request is recorded: run the command again with a writable path (ERR_CONFIG_INVALID)\n`,
        );
      },
      SLOW_MS,
    );

    it(
      'ca import refuses, one line each, and leaves the request pending: another key, not a CA, expired, no chain, no root, garbage, pathlen 0 above it',
      () => {
        const csr = readFileSync(csrFile, 'utf8');
        const imposter = pki.newRequest(`/O=${TD}/OU=baton/CN=imposter`);
        const cases: [string, string, string][] = [
          [
            pki.sign(imposter.csrFile, issuing, { ext: SIGNING_CA_EXT(TD) }),
            issuing.pem + root.pem,
            'ERR_UPSTREAM_KEY_MISMATCH',
          ],
          [
            pki.signPem(csr, issuing, { ext: ['basicConstraints=critical,CA:FALSE'] }),
            issuing.pem + root.pem,
            'ERR_UPSTREAM_NOT_CA',
          ],
          [
            pki.signPem(csr, issuing, {
              ext: SIGNING_CA_EXT(TD),
              notBefore: new Date(Date.now() - 10 * 86400_000),
              notAfter: new Date(Date.now() - 86400_000),
            }),
            issuing.pem + root.pem,
            'ERR_UPSTREAM_VALIDITY',
          ],
          [pki.signPem(csr, issuing, { ext: SIGNING_CA_EXT(TD) }), '', 'ERR_UPSTREAM_INVALID'],
          [pki.signPem(csr, issuing, { ext: SIGNING_CA_EXT(TD) }), issuing.pem, 'ERR_UPSTREAM_CHAIN'],
          ['garbage', root.pem, 'ERR_UPSTREAM_INVALID'],
        ];
        for (const [cert, chain, code] of cases) {
          const r = baton(
            [
              'ca',
              'import',
              '--cert',
              file('cert.pem', cert),
              '--chain',
              file('chain.pem', chain),
              ...storage,
            ],
            env,
          );
          expect({ code, status: r.status, stdout: r.stdout }).toEqual({ code, status: 1, stdout: '' });
          expect(r.stderr).toMatch(new RegExp(`^baton: [^\\n]+ \\(${code}\\)\\n$`));
        }
        const tight = pki.root('Corp Root pathlen 0 again', {
          ext: ['basicConstraints=critical,CA:TRUE,pathlen:0', 'keyUsage=critical,keyCertSign,cRLSign'],
        });
        const r = baton(
          [
            'ca',
            'import',
            '--cert',
            file('cert.pem', pki.signPem(csr, tight, { ext: SIGNING_CA_EXT(TD) })),
            '--chain',
            file('chain.pem', tight.pem),
            ...storage,
          ],
          env,
        );
        expect(r.stderr).toMatch(
          /^baton: the root ".*Corp Root pathlen 0 again" has pathLenConstraint 0, but 1 CA certificate\(s\) would follow it .*\(ERR_UPSTREAM_PATH_LENGTH\)\n$/,
        );
        const usage = baton(['ca', 'import', '--cert', file('cert.pem', 'x'), ...storage], env);
        expect(usage.status).toBe(2);
        expect(usage.stderr).toBe('baton: --chain is required (ERR_USAGE)\n');
        expect(existsSync(adminDir)).toBe(false);
      },
      SLOW_MS,
    );

    it(
      'ca import installs it: the corporate root is the bundle and the pin; admin chains run through the corporate issuing CA; rotation refuses',
      () => {
        const csr = readFileSync(csrFile, 'utf8');
        const signed = pki.signPem(csr, issuing, { ext: SIGNING_CA_EXT(TD) });
        const r = baton(
          [
            'ca',
            'import',
            '--cert',
            file('signed.pem', signed),
            '--chain',
            file('corp-chain.pem', issuing.pem + root.pem),
            ...storage,
          ],
          env,
        );
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        const pin = rootPin(new X509Certificate(root.pem).publicKey.export({ type: 'spki', format: 'der' }));
        expect(r.stdout).toBe(`trust domain: ${TD}\nroot pin: ${pin}\nadmin credentials: ${adminDir}\n`);
        expect(blocks(readFileSync(join(adminDir, 'bundle.pem'), 'utf8'))).toEqual(blocks(root.pem));
        const adminChain = blocks(readFileSync(join(adminDir, 'cert.pem'), 'utf8'));
        expect(adminChain.map(subjectOf)).toEqual([
          `O=${TD}, OU=admin, CN=admin`,
          expect.stringMatching(/^O=upstream\.example\.org, OU=baton, CN=Baton Signing CA [0-9a-f]{16}$/),
          'O=Corp, CN=Corp Issuing CA',
        ]);
        expect(adminChain[1]).toBe(blocks(signed)[0]);

        const again = baton(
          [
            'ca',
            'import',
            '--cert',
            join(dir.path, 'signed.pem'),
            '--chain',
            join(dir.path, 'corp-chain.pem'),
            ...storage,
          ],
          env,
        );
        expect(again.status).toBe(1);
        expect(again.stderr).toBe('baton: the CA is already initialized (ERR_ALREADY_INITIALIZED)\n');
        const rotate = baton(['ca', 'rotate', ...storage], env);
        expect(rotate.status).toBe(1);
        expect(rotate.stderr).toMatch(
          /^baton: an outside CA certified this installation: .* \(ERR_UPSTREAM_ROTATION\)\n$/,
        );
      },
      SLOW_MS,
    );

    it(
      'serves the corporate root as the bundle; a token pins it; the agent joins and gets a workload SVID; the TLS chain carries the corporate issuing CA',
      async () => {
        server = await startServerProcess(storage, env);
        const bundle = await https(`${server.url}/v1/bundle`, { ca: root.pem });
        expect(blocks(bundle.body.toString())).toEqual(blocks(root.pem));
        const jwks = (await https(`${server.url}/v1/bundle.jwks`, { ca: root.pem })).json<{
          keys: { use: string; x5c?: string[] }[];
        }>();
        const x509Keys = jwks.keys.filter((k) => k.use === 'x509-svid');
        expect(x509Keys.map((k) => k.x5c)).toEqual([[new X509Certificate(root.pem).raw.toString('base64')]]);
        // Baton signs the CRL of its own signing CA only; the corporate CAs publish theirs.
        const crls = await https(`${server.url}/v1/crl.pem`, { ca: root.pem });
        expect(crls.status).toBe(200);
        expect(crls.body.toString().match(/BEGIN X509 CRL/g)).toHaveLength(1);
        const outsideId = `ext-${new X509Certificate(issuing.pem).fingerprint256.replace(/:/g, '').toLowerCase().slice(0, 16)}`;
        const outsideCrl = await https(`${server.url}/v1/crl?issuer=${outsideId}`, { ca: root.pem });
        expect(outsideCrl.status).toBe(404);
        expect(outsideCrl.json()).toEqual({ error: { code: 'ERR_NOT_FOUND', message: 'no such issuer' } });

        // What the server sends in its handshake: leaf, Baton's signing CA, the corporate issuing CA.
        const sent = run('openssl', ['s_client', '-connect', new URL(server.url).host, '-showcerts'], '');
        expect(blocks(sent.out).map(subjectOf)).toEqual([
          expect.stringMatching(/^O=upstream\.example\.org, OU=server, CN=/),
          expect.stringMatching(/CN=Baton Signing CA/),
          'O=Corp, CN=Corp Issuing CA',
        ]);
        const authorized = await new Promise<boolean>((resolve, reject) => {
          const s = connect(
            { host: '127.0.0.1', port: Number(new URL(server!.url).port), ca: root.pem },
            () => {
              resolve(s.authorized);
              s.end();
            },
          );
          s.on('error', reject);
        });
        expect(authorized).toBe(true);

        const admin = ['--server', server.url, '--admin-dir', adminDir];
        const token = baton(['token', 'create', '--role', 'worker', ...admin], env);
        expect(token.stderr).toBe('');
        const pin = rootPin(new X509Certificate(root.pem).publicKey.export({ type: 'spki', format: 'der' }));
        expect(token.stdout.trim().split('-')[1]).toBe(pin);
        const node = join(dir.path, 'node');
        const joined = baton(
          ['agent', '--server', server.url, '--token', token.stdout.trim(), '--dir', node, '--once'],
          env,
        );
        expect(joined.stderr).toBe('');
        expect(joined.status).toBe(0);
        const nodeId = /^attested node ([a-z2-7]{16})/.exec(joined.stdout)![1]!;
        expect(blocks(readFileSync(join(node, 'bundle.pem'), 'utf8'))).toEqual(blocks(root.pem));
        expect(blocks(readFileSync(join(node, 'node', 'cert.pem'), 'utf8')).map(subjectOf)).toEqual([
          `O=${TD}, OU=worker, CN=${nodeId}`,
          expect.stringMatching(/CN=Baton Signing CA/),
          'O=Corp, CN=Corp Issuing CA',
        ]);
        const entry = baton(
          [
            'entry',
            'create',
            '--name',
            'web',
            '--spiffe-id',
            `spiffe://${TD}/web`,
            '--parent',
            nodeId,
            '--dns',
            'web.example.org',
            ...admin,
          ],
          env,
        );
        expect(entry.status).toBe(0);
        const renewed = baton(['agent', '--server', server.url, '--dir', node, '--once'], env);
        expect(renewed.stderr).toBe('');
        expect(renewed.stdout).toMatch(
          /issued workload web \(spiffe:\/\/upstream\.example\.org\/web, serial [0-9a-f]+/,
        );
        expect(blocks(readFileSync(join(node, 'workloads', 'web', 'cert.pem'), 'utf8'))).toHaveLength(3);
        writeFileSync(join(dir.path, 'server-chain.pem'), blocks(sent.out).join(''));
      },
      SLOW_MS,
    );

    itWith(
      ['openssl', 'certtool', 'go'],
      'every leaf verifies to the corporate root: openssl verify -x509_strict, GnuTLS certtool and Go crypto/x509',
      () => {
        const rootFile = file('root.pem', root.pem);
        const chains: Record<string, string> = {
          node: readFileSync(join(dir.path, 'node', 'node', 'cert.pem'), 'utf8'),
          workload: readFileSync(join(dir.path, 'node', 'workloads', 'web', 'cert.pem'), 'utf8'),
          server: readFileSync(join(dir.path, 'server-chain.pem'), 'utf8'),
          admin: readFileSync(join(adminDir, 'cert.pem'), 'utf8'),
        };
        for (const [kind, chain] of Object.entries(chains)) {
          const [leaf, ...rest] = blocks(chain);
          const leafFile = file(`${kind}-leaf.pem`, leaf!);
          const untrusted = file(`${kind}-untrusted.pem`, rest.join(''));
          const chainFile = file(`${kind}-chain.pem`, chain);
          const ossl = run('openssl', [
            'verify',
            '-x509_strict',
            '-CAfile',
            rootFile,
            '-untrusted',
            untrusted,
            leafFile,
          ]);
          expect({ kind, ...ossl }).toEqual({ kind, status: 0, out: `${leafFile}: OK\n` });
          const gnutls = run('certtool', [
            '--verify',
            '--load-ca-certificate',
            rootFile,
            '--infile',
            chainFile,
          ]);
          expect({ kind, status: gnutls.status }).toEqual({ kind, status: 0 });
          expect(gnutls.out).toContain('Chain verification output: Verified.');
          const go = run(goVerify!, [rootFile, chainFile]);
          expect({ kind, status: go.status }).toEqual({ kind, status: 0 });
          expect(go.out).toMatch(
            /^OK <- .* <- CN=Baton Signing CA [0-9a-f]{16},OU=baton,O=upstream\.example\.org <- CN=Corp Issuing CA,O=Corp <- CN=Corp Root,O=Corp\n$/,
          );
        }
      },
      SLOW_MS,
    );

    itWith(
      'openssl',
      "a revoked workload certificate fails openssl verify -crl_check with Baton's CRL; the node certificate passes",
      async () => {
        const admin = ['--server', server!.url, '--admin-dir', adminDir];
        const workload = readFileSync(join(dir.path, 'node', 'workloads', 'web', 'cert.pem'), 'utf8');
        const serial = new X509Certificate(blocks(workload)[0]!).serialNumber.toLowerCase();
        const revoked = baton(['cert', 'revoke', serial, ...admin], env);
        expect(revoked.stderr).toBe('');
        expect(revoked.status).toBe(0);
        const crl = (await https(`${server!.url}/v1/crl.pem`, { ca: root.pem })).body.toString();
        const crlFile = file('baton-crl.pem', crl);
        const rootFile = file('root.pem', root.pem);
        const verify = (chain: string) => {
          const [leaf, ...rest] = blocks(chain);
          return run('openssl', [
            'verify',
            '-x509_strict',
            '-crl_check',
            '-CRLfile',
            crlFile,
            '-CAfile',
            rootFile,
            '-untrusted',
            file('crl-untrusted.pem', rest.join('')),
            file('crl-leaf.pem', leaf!),
          ]);
        };
        const w = verify(workload);
        expect(w.status).not.toBe(0);
        expect(w.out).toMatch(/certificate revoked/);
        const n = verify(readFileSync(join(dir.path, 'node', 'node', 'cert.pem'), 'utf8'));
        expect(n.status).toBe(0);
      },
      SLOW_MS,
    );
  });
});

describeWith('openssl', 'upstream CA directly under a corporate root (no corporate intermediate)', () => {
  const dir = tempDir('baton-upstream-root-');
  afterAll(() => dir.cleanup());
  const storage = ['--data-dir', join(dir.path, 'data')];

  itWith(
    ['openssl', 'certtool', 'go'],
    'the admin chain is leaf and signing CA, the bundle the root; openssl, certtool and Go verify it',
    () => {
      const csrFile = join(dir.path, 'baton.csr');
      expect(baton(['ca', 'init', '--trust-domain', TD, '--upstream-csr', csrFile, ...storage]).status).toBe(
        0,
      );
      const pki = new CorporatePki(join(dir.path, 'corp'));
      const root = pki.root('Corp Root', {
        ext: ['basicConstraints=critical,CA:TRUE,pathlen:1', 'keyUsage=critical,keyCertSign,cRLSign'],
      });
      const certFile = join(dir.path, 'signed.pem');
      writeFileSync(certFile, pki.signPem(readFileSync(csrFile, 'utf8'), root, { ext: SIGNING_CA_EXT(TD) }));
      const rootFile = join(dir.path, 'root.pem');
      writeFileSync(rootFile, root.pem);
      const r = baton(['ca', 'import', '--cert', certFile, '--chain', rootFile, '--json', ...storage]);
      expect(r.stderr).toBe('');
      const out = JSON.parse(r.stdout) as Record<string, string>;
      expect(out).toEqual({
        trust_domain: TD,
        root_pin: rootPin(new X509Certificate(root.pem).publicKey.export({ type: 'spki', format: 'der' })),
        root_ca_id: expect.stringMatching(/^ext-[0-9a-f]{16}$/),
        signing_ca_id: expect.stringMatching(/^ca-[0-9a-f]{16}$/),
        admin_dir: join(dir.path, 'data', 'admin'),
      });
      const chainFile = join(out.admin_dir!, 'cert.pem');
      const chain = blocks(readFileSync(chainFile, 'utf8'));
      expect(chain).toHaveLength(2);
      expect(blocks(readFileSync(join(out.admin_dir!, 'bundle.pem'), 'utf8'))).toEqual(blocks(root.pem));
      const leafFile = join(dir.path, 'leaf.pem');
      const untrusted = join(dir.path, 'untrusted.pem');
      writeFileSync(leafFile, chain[0]!);
      writeFileSync(untrusted, chain[1]!);
      expect(
        run('openssl', ['verify', '-x509_strict', '-CAfile', rootFile, '-untrusted', untrusted, leafFile]),
      ).toEqual({
        status: 0,
        out: `${leafFile}: OK\n`,
      });
      expect(
        run('certtool', ['--verify', '--load-ca-certificate', rootFile, '--infile', chainFile]).status,
      ).toBe(0);
      const go = run(goVerify!, [rootFile, chainFile]);
      expect(go.out).toMatch(
        /^OK <- CN=admin,OU=admin,O=upstream\.example\.org <- CN=Baton Signing CA [0-9a-f]{16},OU=baton,O=upstream\.example\.org <- CN=Corp Root,O=Corp\n$/,
      );
    },
    SLOW_MS,
  );
});
