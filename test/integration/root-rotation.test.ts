import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { baton, type ServerProcess, startServerProcess } from '../support/cli';
import { https } from '../support/https';
import { keyAndCsr } from '../support/node-client';
import { describeWith, run, selfSignedEc, tool, tempDir, writeFiles } from '../support/tools';

/**
 * Issue 18, root rotation, through the CLI against a running server on the embedded database:
 * `baton ca rotate --root` starts it, `baton ca status` explains it, `--finish` ends it. Every
 * leaf issued during the overlap is checked with real verifiers (openssl -x509_strict with CRLs,
 * GnuTLS certtool) under the old root alone, the new root alone and both.
 */

const TD = 'rot.example.org';
const CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g;
const certsOf = (pem: string) => pem.match(CERT) ?? [];
const SLOW = 180_000;

interface Status {
  phase: string;
  roots: Array<{ id: string; pin: string; current: boolean }>;
  signing_ca: { id: string; parent: string; cross_signed_by: string[] };
  old_root_only: { nodes: number; workload_certificates: number };
}

describeWith(
  [tool('openssl'), tool('certtool')],
  'root rotation (ca rotate --root, ca status, --finish)',
  () => {
    const dir = tempDir('baton-rootrot-');
    const dataDir = join(dir.path, 'data');
    const adminDir = join(dataDir, 'admin');
    let server: ServerProcess;
    let admin: string[];
    const cli = (args: string[]) => baton([...args, ...admin]);
    const status = (): Status => {
      const r = cli(['ca', 'status', '--json']);
      expect(r.stderr).toBe('');
      return JSON.parse(r.stdout) as Status;
    };
    const agentOnce = (nodeDir: string, token?: string) =>
      baton([
        'agent',
        '--server',
        server.url,
        '--dir',
        join(dir.path, nodeDir),
        '--once',
        '--socket',
        'none',
        ...(token ? ['--token', token] : []),
      ]);
    const file = (...p: string[]) => readFileSync(join(dir.path, ...p), 'utf8');
    /** openssl verify -x509_strict of a served chain: the leaf, the rest untrusted, `trusted` as CAfile. */
    const opensslVerify = (chain: string, trusted: string, crls?: string) => {
      const [leaf, ...rest] = certsOf(chain);
      const f = writeFiles(dir.path, {
        'v-leaf.pem': leaf!,
        'v-untrusted.pem': rest.join(''),
        'v-trusted.pem': trusted,
        'v-crls.pem': crls ?? '',
      });
      const crlArgs = crls ? ['-crl_check_all', '-CRLfile', f['v-crls.pem']!] : [];
      return run('openssl', [
        'verify',
        '-x509_strict',
        ...crlArgs,
        '-CAfile',
        f['v-trusted.pem']!,
        '-untrusted',
        f['v-untrusted.pem']!,
        f['v-leaf.pem']!,
      ]).out.trim();
    };
    const certtoolVerify = (chain: string, trusted: string) => {
      const f = writeFiles(dir.path, { 'g-chain.pem': chain, 'g-ca.pem': trusted });
      return run('certtool', [
        '--verify',
        '--load-ca-certificate',
        f['g-ca.pem']!,
        '--infile',
        f['g-chain.pem']!,
      ]);
    };
    /** The certificates the server presents in its TLS handshake, in order. */
    const serverChain = () =>
      certsOf(
        run('sh', [
          '-c',
          `openssl s_client -connect ${new URL(server.url).host} -showcerts </dev/null 2>/dev/null`,
        ]).out,
      );

    beforeAll(async () => {
      const init = baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir]);
      expect(init.status).toBe(0);
      server = await startServerProcess(['--data-dir', dataDir], { BATON_BACKGROUND_INTERVAL: '1s' });
      admin = ['--server', server.url, '--admin-dir', adminDir];
    }, SLOW);
    afterAll(async () => {
      await server?.stop();
      dir.cleanup();
    });

    let oldRoot: string;
    let newRoot: string;
    let oldToken: string;
    let n2Chain: string;

    it(
      'start: both roots in the bundle, a signing CA certified by both, new tokens pin the new root',
      async () => {
        oldToken = cli(['token', 'create', '--role', 'worker']).stdout.trim();
        const n1Token = cli(['token', 'create', '--role', 'worker']).stdout.trim();
        expect(agentOnce('n1', n1Token).status).toBe(0);
        const before = status();
        expect(before).toMatchObject({
          phase: 'stable',
          old_root_only: { nodes: 0, workload_certificates: 0 },
        });
        expect(before.roots).toHaveLength(1);
        oldRoot = file('data', 'admin', 'bundle.pem');
        const adminCertBefore = file('data', 'admin', 'cert.pem');

        const r = cli(['ca', 'rotate', '--root', '--json']);
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        const started = JSON.parse(r.stdout);
        expect(started).toMatchObject({ phase: 'rotating', previous_root: before.roots[0]!.id });

        const s = status();
        expect(s.phase).toBe('rotating');
        expect(s.roots.map((x) => [x.id, x.current])).toEqual([
          [started.root, true],
          [before.roots[0]!.id, false],
        ]);
        expect(s.signing_ca).toMatchObject({ parent: started.root, cross_signed_by: [before.roots[0]!.id] });
        // n1 still holds a certificate of the old signing CA: only under the old root.
        expect(s.old_root_only).toEqual({ nodes: 1, workload_certificates: 0 });

        // The admin dir took the new bundle, and a new admin certificate of the new signing CA.
        const adminBundle = certsOf(file('data', 'admin', 'bundle.pem'));
        expect(adminBundle).toHaveLength(2);
        newRoot = adminBundle[0]!;
        expect(new X509Certificate(newRoot).subject).toContain(started.root.slice(3));
        expect(file('data', 'admin', 'cert.pem')).not.toBe(adminCertBefore);
        // The server serves both roots, and its own chain with the cross-certificate first.
        const bundle = await https(`${server.url}/v1/bundle`, { ca: newRoot + oldRoot });
        expect(certsOf(bundle.body.toString())).toEqual(adminBundle);
        const presented = serverChain();
        expect(presented).toHaveLength(3);
        expect(new X509Certificate(presented[1]!).checkIssued(new X509Certificate(oldRoot))).toBe(true);
        expect(new X509Certificate(presented[2]!).checkIssued(new X509Certificate(newRoot))).toBe(true);

        // Started twice: refused, and the state is unchanged.
        const again = cli(['ca', 'rotate', '--root']);
        expect(again.status).toBe(1);
        expect(again.stderr).toMatch(/ERR_ROTATION_IN_PROGRESS/);
        expect(status().roots).toHaveLength(2);

        // A token made now pins the new root; a node joins with it (its first contact trusts the new
        // root alone while the server's chain lists the old root's certificate first).
        const newToken = cli(['token', 'create', '--role', 'worker']).stdout.trim();
        expect(newToken.split('-')[1]).toBe(started.root_pin);
        const joined = agentOnce('n2', newToken);
        expect(joined.stderr).toBe('');
        expect(joined.status).toBe(0);
        n2Chain = file('n2', 'node', 'cert.pem');
        expect(certsOf(n2Chain)).toHaveLength(3);
        expect(certsOf(file('n2', 'bundle.pem'))).toHaveLength(2);
        // n1's agent takes the new bundle on its next pass, with no renewal due.
        expect(agentOnce('n1').status).toBe(0);
        expect(file('n1', 'bundle.pem')).toBe(file('data', 'admin', 'bundle.pem'));

        // A `ca rotate --root` killed between renaming the admin's new key and its new certificate:
        // key.pem is the next key, cert.pem.next its certificate. The next admin command finishes it.
        const spare = join(dir.path, 'spare-admin');
        expect(cli(['admin', 'issue', '--name', 'admin', '--role', 'admin', '--out', spare]).status).toBe(0);
        copyFileSync(join(spare, 'key.pem'), join(adminDir, 'key.pem'));
        copyFileSync(join(spare, 'cert.pem'), join(adminDir, 'cert.pem.next'));
        expect(cli(['ca', 'status']).status).toBe(0);
        expect(file('data', 'admin', 'cert.pem')).toBe(file('spare-admin', 'cert.pem'));
        expect(existsSync(join(adminDir, 'cert.pem.next'))).toBe(false);
      },
      SLOW,
    );

    it('leaves of the overlap verify with openssl (CRLs checked) and GnuTLS under the old root, both roots, or the new root with its CA', async () => {
      const crls = (await https(`${server.url}/v1/crl.pem`, { ca: newRoot + oldRoot })).body.toString();
      const leaf = `${n2Chain.match(CERT)![0]}`;
      expect(opensslVerify(n2Chain, oldRoot, crls)).toMatch(/: OK$/);
      expect(opensslVerify(n2Chain, newRoot + oldRoot, crls)).toMatch(/: OK$/);
      // OpenSSL follows the first certificate that names the issuer (the cross-certificate): a
      // verifier trusting only the new root needs the new root's certificate of the signing CA among
      // the trusted ones, as Baton's clients put it there (common/src/trust-store.ts).
      expect(opensslVerify(n2Chain, newRoot)).toMatch(/error|fail/i);
      const ownCa = certsOf(n2Chain)[2]!;
      expect(opensslVerify(n2Chain, newRoot + ownCa, crls)).toMatch(/: OK$/);
      // GnuTLS, likewise: the old root, both roots, or the new root beside its certificate of the CA.
      for (const trusted of [oldRoot, newRoot + oldRoot, newRoot + ownCa]) {
        const g = certtoolVerify(n2Chain, trusted);
        expect(g.out).toMatch(/Chain verification output: Verified/);
        expect(g.status).toBe(0);
      }
      expect(certtoolVerify(n2Chain, newRoot).out).toMatch(/Chain verification output: Not verified/);
      // And a wrong root verifies nothing.
      const stranger = selfSignedEc('/CN=stranger').cert.toString();
      expect(opensslVerify(leaf + certsOf(n2Chain).slice(1).join(''), stranger)).toMatch(/error|fail/i);
    });

    it(
      'finish: refused while a node is only under the old root; then the old root leaves, and its tokens with it',
      async () => {
        const refused = cli(['ca', 'rotate', '--root', '--finish']);
        expect(refused.status).toBe(1);
        expect(refused.stderr).toMatch(
          /1 node\(s\) still hold a certificate only under the old root.*ERR_ROTATION_PENDING/,
        );
        expect(status().phase).toBe('rotating');

        // n1 is revoked (or it would renew): nothing is left only under the old root.
        const n1Id = (JSON.parse(file('n1', 'node', 'state.json')) as { node_id: string }).node_id;
        expect(cli(['node', 'revoke', n1Id]).status).toBe(0);
        expect(status().old_root_only.nodes).toBe(0);

        const done = cli(['ca', 'rotate', '--root', '--finish', '--json']);
        expect(done.stderr).toBe('');
        expect(done.status).toBe(0);
        expect(JSON.parse(done.stdout)).toMatchObject({ phase: 'stable', forced: false });
        expect(cli(['ca', 'rotate', '--root', '--finish']).stderr).toMatch(/ERR_NO_ROTATION/);

        const s = status();
        expect(s.phase).toBe('stable');
        expect(s.roots).toHaveLength(1);
        expect(certsOf(file('data', 'admin', 'bundle.pem'))).toEqual([newRoot]);
        // The server's own chain drops the cross-certificate at once (this replica reloaded).
        expect(serverChain()).toHaveLength(2);

        // A token of the old root: the agent refuses the server (its pin is gone from the bundle),
        // and the server refuses the token itself, without spending it.
        const agent = agentOnce('n3', oldToken);
        expect(agent.status).toBe(1);
        expect(agent.stderr).toMatch(/ERR_PIN_MISMATCH/);
        const { csrPem } = await keyAndCsr();
        const direct = await https(`${server.url}/v1/attest`, {
          ca: newRoot,
          method: 'POST',
          body: JSON.stringify({ method: 'join_token', token: oldToken, csr: csrPem }),
        });
        expect(direct.status).toBe(401);
        expect(direct.json<{ error: { code: string } }>().error.code).toBe('ERR_TOKEN_INVALID');

        // n2, whose certificate came with the cross-certificate, keeps working with the server and
        // takes the bundle of the new root alone.
        const pass = agentOnce('n2');
        expect(pass.stderr).toBe('');
        expect(pass.status).toBe(0);
        expect(certsOf(file('n2', 'bundle.pem'))).toEqual([newRoot]);
      },
      SLOW,
    );

    it(
      'a second rotation is the same as the first',
      async () => {
        const r = cli(['ca', 'rotate', '--root', '--json']);
        expect(r.status).toBe(0);
        expect(status().roots).toHaveLength(2);
        // n2 is only under the (now old) second root: --force finishes all the same, and says so.
        const forced = cli(['ca', 'rotate', '--root', '--finish', '--force', '--json']);
        expect(forced.status).toBe(0);
        expect(JSON.parse(forced.stdout)).toMatchObject({ forced: true, old_root_only: { nodes: 1 } });
        expect(status()).toMatchObject({ phase: 'stable', old_root_only: { nodes: 1 } });
        // The admin, renewed at the start, still works.
        expect(cli(['node', 'list']).status).toBe(0);
      },
      SLOW,
    );
  },
);
