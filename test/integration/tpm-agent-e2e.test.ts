import { spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CaClient,
  type NodeCaApi,
  NodeIdentityStore,
  NodeRotator,
  NodeTpm,
  Tpm2Tools,
  type TpmAttestParams,
  TpmAttestor,
  type TpmCaApi,
} from '../../clients/rotation/src';
import { baton, cliEnv, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { https } from '../support/https';
import {
  type ManufacturerCa,
  manufacturerCa,
  type SoftwareTpm,
  startSwtpm,
  SWTPM_TOOLS,
} from '../support/swtpm';
import { startTestServer, type TestServer } from '../support/test-server';
import { describeWith, tempDir } from '../support/tools';

/**
 * `baton agent --tpm` against a real Baton (issue 19, items 4 and 5): software TPMs (swtpm, no
 * resource manager), EK certificates under a local manufacturer CA, the server side as
 * docs/api.md "TPM attestation" fixes it. The CLI suite runs `baton server`; the clock suite an
 * in-process server whose clock the test moves, for expiry and renewals.
 */

const BIN = join(__dirname, '..', '..', 'bin', 'baton.js');
const HOUR = 3600_000;

/** Transient objects and sessions the TPM still holds: a TPM without a resource manager shows all. */
async function leftovers(tpm: SoftwareTpm): Promise<string> {
  let out = '';
  for (const what of ['handles-transient', 'handles-loaded-session', 'handles-saved-session'])
    out += (await tpm.tool('tpm2_getcap', [what])).toString('utf8');
  return out.trim();
}

describeEachBackend('baton agent --tpm against baton server (CLI)', (backend: Backend) => {
  describeWith(SWTPM_TOOLS, 'joins with software TPMs', () => {
    const dir = tempDir('baton-tpm-e2e-');
    const dataDir = join(dir.path, 'data');
    let env: Env = {};
    let drop: () => Promise<void> = async () => {};
    let server: ServerProcess;
    let pin: string;
    let maker: ManufacturerCa;
    /** Manufactured with an EK certificate; without one (enrolled); never admitted. */
    let made: SoftwareTpm;
    let plain: SoftwareTpm;
    let unknown: SoftwareTpm;
    const admin = () => ['--server', server.url, '--admin-dir', join(dataDir, 'admin')];
    const agent = (tpm: SoftwareTpm, node: string, extra: string[] = []) =>
      baton(
        ['agent', '--server', server.url, '--dir', node, '--tpm', '--tpm-tcti', tpm.tcti, '--once', ...extra],
        env,
      );
    const tpmId = (tpm: SoftwareTpm, ek = 'rsa') => {
      const r = baton(['agent', 'tpm-id', '--tpm-tcti', tpm.tcti, '--tpm-ek-type', ek]);
      expect(r.status).toBe(0);
      return r.stdout.trim();
    };
    const enroll = (ekId: string, role = 'worker') => {
      const r = baton(['node', 'enroll', '--tpm-ek-id', ekId, '--role', role, ...admin()], env);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    };

    beforeAll(async () => {
      if (backend === 'postgres') {
        const pg = await createPostgresDatabase();
        drop = pg.drop;
        env = { BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
      }
      const init = baton(['ca', 'init', '--trust-domain', 'tpm.example.org', '--data-dir', dataDir], env);
      expect(init.status).toBe(0);
      pin = /^root pin: ([a-z2-7]{52})$/m.exec(init.stdout)![1]!;
      server = await startServerProcess(['--data-dir', dataDir], env);
      maker = manufacturerCa(dir.path);
      made = await startSwtpm({ manufacturer: maker });
      plain = await startSwtpm();
      unknown = await startSwtpm();
    }, 120_000);
    afterAll(async () => {
      for (const tpm of [made, plain, unknown]) await tpm?.stop();
      await server?.stop();
      await drop();
      dir.cleanup();
    });

    it('an enrolled EK joins with --pin: node tpm-<20 hex>, the files of a token-joined node, nothing left in the TPM', async () => {
      const ekId = tpmId(plain);
      enroll(ekId);
      const node = join(dir.path, 'node-plain');
      const r = agent(plain, node, ['--pin', pin]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const nodeId = `tpm-${ekId.slice(0, 20)}`;
      expect(r.stdout).toMatch(
        new RegExp(
          `^attested node ${nodeId} \\(serial [0-9a-f]+, refresh at \\S+Z\\)\\ncrl updated \\(2 CRLs\\)\\n$`,
        ),
      );
      expect(statSync(join(node, 'node', 'key.pem')).mode & 0o777).toBe(0o600);
      const chain = readFileSync(join(node, 'node', 'cert.pem'), 'utf8');
      expect(chain.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
      const leaf = new X509Certificate(chain);
      expect(leaf.subjectAltName).toBe(`URI:spiffe://tpm.example.org/node/${nodeId}`);
      expect(leaf.subject).toContain('OU=worker');
      expect(readFileSync(join(node, 'bundle.pem'), 'utf8')).toBe(
        readFileSync(join(dataDir, 'admin', 'bundle.pem'), 'utf8'),
      );
      expect(readFileSync(join(node, 'crl.pem'), 'utf8')).toMatch(/^-----BEGIN X509 CRL-----\n/);
      expect(await leftovers(plain)).toBe('');

      // Later runs need no pin: DIR/bundle.pem says which CA to trust.
      const again = agent(plain, node);
      expect(again.status).toBe(0);
      expect(again.stdout).toMatch(
        new RegExp(`^nothing due until \\S+Z \\(node ${nodeId}, serial [0-9a-f]+\\)\\n$`),
      );
      expect(baton(['node', 'show', nodeId, ...admin()], env).status).toBe(0);
    });

    it('an EK certificate under a manufacturer CA added with `baton tpm ca add` joins; two TPMs, two node IDs', async () => {
      const file = join(dir.path, 'maker.pem');
      writeFileSync(file, `${maker.rootPem()}${maker.issuerPem()}`);
      const added = baton(['tpm', 'ca', 'add', file, '--role', 'worker', ...admin()], env);
      expect(added.stderr).toBe('');
      expect(added.status).toBe(0);
      const node = join(dir.path, 'node-made');
      const r = agent(made, node, ['--pin', pin]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const nodeId = `tpm-${tpmId(made).slice(0, 20)}`;
      expect(r.stdout).toMatch(new RegExp(`^attested node ${nodeId} `));
      expect(nodeId).not.toBe(`tpm-${tpmId(plain).slice(0, 20)}`);
      expect(await leftovers(made)).toBe('');
    });

    it('fail/an unknown TPM: exit 1 with one line naming its EK id; nothing written, nothing left in the TPM', async () => {
      const ekId = tpmId(unknown);
      const node = join(dir.path, 'node-unknown');
      const r = agent(unknown, node, ['--pin', pin]);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(
        new RegExp(
          `^baton: the CA refused this TPM \\(EK id ${ekId}\\): [^\\n]*\\(ERR_ATTESTATION_FAILED\\)\\n$`,
        ),
      );
      expect(r.status).toBe(1);
      expect(existsSync(join(node, 'node'))).toBe(false);
      expect(await leftovers(unknown)).toBe('');
    });

    it('an enrolled ECC P-256 EK joins with --tpm-ek-type ecc, as its own node', async () => {
      const ekId = tpmId(unknown, 'ecc');
      enroll(ekId, 'manager');
      const node = join(dir.path, 'node-ecc');
      const r = agent(unknown, node, ['--pin', pin, '--tpm-ek-type', 'ecc']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^attested node tpm-${ekId.slice(0, 20)} `));
      expect(new X509Certificate(readFileSync(join(node, 'node', 'cert.pem'))).subject).toContain(
        'OU=manager',
      );
      expect(await leftovers(unknown)).toBe('');
    });

    it('workload SVIDs for its entries, as for a token-joined node', () => {
      const node = join(dir.path, 'node-plain');
      const nodeId = `tpm-${tpmId(plain).slice(0, 20)}`;
      const created = baton(
        [
          'entry',
          'create',
          '--name',
          'web',
          '--spiffe-id',
          'spiffe://tpm.example.org/web',
          '--parent',
          nodeId,
          ...admin(),
        ],
        env,
      );
      expect(created.status).toBe(0);
      const r = agent(plain, node);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(
        /\nissued workload web \(spiffe:\/\/tpm\.example\.org\/web, serial [0-9a-f]+, refresh at \S+Z\)\n$/,
      );
      expect(statSync(join(node, 'workloads', 'web', 'key.pem')).mode & 0o777).toBe(0o600);
      expect(
        readFileSync(join(node, 'workloads', 'web', 'cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g),
      ).toHaveLength(2);
    });

    it("fail/a revoked node's TPM is refused until `baton node enroll` admits it again, under the same node ID", async () => {
      const ekId = tpmId(plain);
      const nodeId = `tpm-${ekId.slice(0, 20)}`;
      expect(baton(['node', 'revoke', nodeId, ...admin()], env).status).toBe(0);
      const node = join(dir.path, 'node-plain-again');
      const refused = agent(plain, node, ['--pin', pin]);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toBe(
        `baton: this node has been revoked: the CA refuses its TPM (EK id ${ekId}) until \`baton node enroll --tpm-ek-id\` admits it again (ERR_NODE_REVOKED)\n`,
      );
      expect(refused.status).toBe(1);
      expect(await leftovers(plain)).toBe('');

      enroll(ekId);
      const r = agent(plain, node, ['--pin', pin]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^attested node ${nodeId} `));
    });

    it('the daemon attests with the TPM, then waits for the renewal; SIGTERM: exit 0', async () => {
      const node = join(dir.path, 'node-daemon');
      const child = spawn(
        process.execPath,
        [BIN, 'agent', '--server', server.url, '--dir', node, '--tpm', '--pin', pin, '--socket', 'none'],
        { env: cliEnv({ ...env, TPM2TOOLS_TCTI: made.tcti }) },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      try {
        for (let i = 0; i < 400 && !/next renewal at/.test(out); i++)
          await new Promise((r) => setTimeout(r, 50));
        expect(out).toMatch(
          /^attested node tpm-[0-9a-f]{20} \(serial [0-9a-f]+, refresh at \S+\)\ncrl updated \(2 CRLs\)\nnext renewal at \S+Z\n$/,
        );
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
        expect(err).toBe('');
        expect(await leftovers(made)).toBe('');
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    });
  });
});

describeEachBackend(
  'baton agent --tpm: time (an in-process server with a clock the test moves)',
  (backend) => {
    describeWith(SWTPM_TOOLS, 'renewal, expiry, replay', () => {
      const dir = tempDir('baton-tpm-clock-');
      let t: TestServer;
      let tpm: SoftwareTpm;
      let client: CaClient;
      let adminCred: { cert: string; key: string };
      /** Every TPM attestation the agent sent, to replay. */
      const sent: TpmAttestParams[] = [];
      const node = join(dir.path, 'node');

      const rotator = (pin?: string) => {
        const recording: NodeCaApi & TpmCaApi = {
          fetchBundleUnverified: () => client.fetchBundleUnverified(),
          fetchCaCertificatesUnverified: () => client.fetchCaCertificatesUnverified(),
          attest: (p) => client.attest(p),
          renew: (p) => client.renew(p),
          tpmChallenge: (p) => client.tpmChallenge(p),
          attestTpm: (p) => {
            sent.push(p);
            return client.attestTpm(p);
          },
        };
        return new NodeRotator({
          clock: t.clock,
          client,
          store: new NodeIdentityStore(node),
          random: () => 0.5,
          attestor: new TpmAttestor({
            client: recording,
            tpm: new NodeTpm(new Tpm2Tools({ tcti: tpm.tcti }), 'rsa', node),
            pin,
            bundlePath: join(node, 'bundle.pem'),
          }),
        });
      };

      beforeAll(async () => {
        t = await startTestServer({ backend });
        client = new CaClient({ serverUrl: t.url });
        tpm = await startSwtpm();
        adminCred = await t.issueAdmin('admin');
      }, 60_000);
      afterAll(async () => {
        client?.close();
        await tpm?.stop();
        await t?.close();
        dir.cleanup();
      });

      it('joins, renews over mTLS at refresh_at without the TPM, and after expiry attests again with it: the same node ID', async () => {
        const ekId = await new NodeTpm(new Tpm2Tools({ tcti: tpm.tcti }), 'rsa', dir.path).ekIdentifier();
        const enrolled = await https(`${t.url}/v1/admin/tpm/enrollments`, {
          method: 'POST',
          body: JSON.stringify({ ek_id: ekId, role: 'worker' }),
          ca: t.bundle,
          cert: adminCred.cert,
          key: adminCred.key,
        });
        expect(enrolled.status).toBe(201);
        expect(enrolled.json()).toMatchObject({
          ek_id: ekId,
          node_id: `tpm-${ekId.slice(0, 20)}`,
          role: 'worker',
        });

        const first = await rotator(t.ca.keyring.pin).runOnce();
        expect(first.action).toBe('attested');
        expect(first.identity.nodeId).toBe(`tpm-${ekId.slice(0, 20)}`);
        const store = new NodeIdentityStore(node);
        t.clock.set(store.load()!.refreshAt!);
        const renewed = await rotator().runOnce();
        expect(renewed.action).toBe('renewed');
        expect(sent).toHaveLength(1);

        t.clock.set(new Date(store.load()!.notAfter.getTime() + HOUR));
        const again = await rotator().runOnce();
        expect(again.action).toBe('re-attested');
        expect(again.identity.nodeId).toBe(first.identity.nodeId);
        expect(again.identity.serial).not.toBe(renewed.identity.serial);
        expect(sent).toHaveLength(2);
        expect(await leftovers(tpm)).toBe('');
      });

      it('fail/a replayed exchange is refused: the nonce was spent by the issuance', async () => {
        expect(sent.length).toBeGreaterThan(0);
        await expect(client.attestTpm(sent[sent.length - 1]!)).rejects.toMatchObject({
          status: 401,
          code: 'ERR_ATTESTATION_FAILED',
        });
      });
    });
  },
);
