import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import type { SigningCa } from '../../services/ca/src/domain/keyring';
import { responderKeyHash } from '../../services/ca/src/pki/ocsp';
import { baton, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { https, callAs } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr, renew } from '../support/node-client';
import { ocspQuery } from '../support/revocation-checks';
import { startTestServer, type TestServer, rotateCa } from '../support/test-server';
import { run, tempDir, writeFiles } from '../support/tools';

/**
 * Issue 6 "CA rotation": `baton ca rotate` makes a new signing intermediate under the same root
 * active. New certificates chain to it; certificates of the old one stay valid, and the old one's
 * CRL keeps being published, so a certificate of it revoked after the rotation is still refused.
 */

const TD = 'test.example.org';
const certsOf = (chain: string) =>
  chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g)!;

type Cred = { cert: string; key: string };
/** CLI tests spawn servers and commands; on PGlite the server restarts around the rotation. */
const SLOW = 180_000;

describeEachBackend('CA rotation: a new signing intermediate under the same root', (backend) => {
  let t: TestServer;
  let admin: Cred;
  let old: SigningCa;
  let fresh: SigningCa;
  let n1: Cred & { body: IssuanceBody };
  let w1: Cred & { body: IssuanceBody };
  let w1b: Cred & { body: IssuanceBody };
  let serverSerialBefore: string;
  let pinBefore: string;
  const dir = tempDir();

  const call = (cred: Cred, method: string, path: string, body?: unknown) =>
    callAs(t, cred, method, path, body);
  const workloadFor = async (n: Cred, spiffeId: string) => {
    const k = await keyAndCsr();
    const r = await call(n, 'POST', '/v1/workload-svids', { spiffe_id: spiffeId, csr: k.csrPem });
    expect(r.status).toBe(201);
    const body = r.json<IssuanceBody>();
    return { cert: body.certificate_chain, key: k.keyPem, body };
  };
  const entry = async (name: string, parent: string) =>
    expect(
      (await call(admin, 'POST', '/v1/admin/entries', { name, spiffe_id: `spiffe://${TD}/${name}`, parent }))
        .status,
    ).toBe(201);
  /** openssl verify -x509_strict: the leaf against the bundle, with `inter` as the only untrusted CA. */
  const verify = (leaf: string, inter: string, crls?: string) => {
    const f = writeFiles(dir.path, {
      'bundle.pem': t.bundle,
      'leaf.pem': leaf,
      'inter.pem': inter,
      'crls.pem': crls ?? '',
    });
    const crlArgs = crls === undefined ? [] : ['-crl_check_all', '-CRLfile', f['crls.pem']!];
    return run('openssl', [
      'verify',
      '-x509_strict',
      ...crlArgs,
      '-CAfile',
      f['bundle.pem']!,
      '-untrusted',
      f['inter.pem']!,
      f['leaf.pem']!,
    ]).out;
  };
  const leafOf = (chain: string) => certsOf(chain)[0]!;
  const intermediateOf = (chain: string) => certsOf(chain)[1]!;
  const crlText = async (issuer?: string) => {
    const r = await https(`${t.url}/v1/crl${issuer ? `?issuer=${issuer}` : ''}`, { ca: t.bundle });
    expect(r.status).toBe(200);
    const file = `${dir.path}/crl.der`;
    writeFileSync(file, r.body);
    return run('openssl', ['crl', '-inform', 'DER', '-noout', '-text', '-in', file]).out;
  };
  const crlPem = async () => (await https(`${t.url}/v1/crl.pem`, { ca: t.bundle })).body.toString();
  /** The chain the server presents to a client that trusts only the bundle. */
  const serverChain = () =>
    new Promise<{ authorized: boolean; leaf: PeerCertificate; issuer: PeerCertificate }>(
      (resolve, reject) => {
        const u = new URL(t.url);
        const s = connect({ host: u.hostname, port: Number(u.port), ca: t.bundle }, () => {
          const leaf = s.getPeerCertificate(true);
          resolve({ authorized: s.authorized, leaf, issuer: leaf.issuerCertificate });
          s.end();
        });
        s.on('error', reject);
      },
    );
  const pemOfCa = (ca: SigningCa) => ca.certPem;

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD, serverFlags: { 'crl-next-update': '10m' } });
    const a = await t.issueAdmin('admin', 'root');
    admin = { cert: a.cert, key: a.key };
    n1 = await attestedNode(t, { nodeName: 'n1' });
    await entry('web', 'n1');
    w1 = await workloadFor(n1, `spiffe://${TD}/web`);
    w1b = await workloadFor(n1, `spiffe://${TD}/web`);
    old = t.ca.keyring.signing;
    serverSerialBefore = t.running.currentCertificateSerial();
    pinBefore = t.ca.keyring.pin;
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  it('rotates: the new intermediate is active under the same root once the background job ran, and audited', async () => {
    const created = await rotateCa(t);
    expect(created.id).not.toBe(old.record.id);
    // Until the server reloads its keyring (its background job), it keeps signing with the old CA.
    expect(t.ca.keyring.signing.record.id).toBe(old.record.id);
    await t.running.jobs.runOnce();
    fresh = t.ca.keyring.signing;
    expect(fresh.record.id).toBe(created.id);
    expect(t.ca.keyring.all.map((c) => c.record.id)).toEqual(
      expect.arrayContaining([old.record.id, created.id]),
    );

    const cas = await t.ca.knex('cas').select('id', 'kind', 'active', 'parent_id').orderBy('created_at');
    expect(cas.filter((c: { kind: string }) => c.kind === 'intermediate')).toEqual([
      expect.objectContaining({ id: old.record.id, active: false }),
      expect.objectContaining({ id: created.id, active: true, parent_id: old.record.parentId }),
    ]);
    // Same root: the trust bundle and the join-token pin do not change.
    expect((await https(`${t.url}/v1/bundle`, { ca: t.bundle })).body.toString()).toBe(t.bundle);
    expect(t.ca.keyring.pin).toBe(pinBefore);
    const interText = run('openssl', ['x509', '-noout', '-subject', '-issuer'], fresh.certPem).out;
    expect(interText).toContain(`CN = Baton Signing CA ${created.id.slice(3)}`);
    expect(verify(fresh.certPem, fresh.certPem)).toMatch(/leaf\.pem: OK/);

    const rows = (await call(admin, 'GET', '/v1/admin/audit?event=ca.rotated')).json<{
      events: { actor: string; subject: string; outcome: string; details: Record<string, unknown> }[];
    }>().events;
    expect(rows).toEqual([
      expect.objectContaining({
        actor: 'cli:operator',
        subject: created.id,
        outcome: 'success',
        details: expect.objectContaining({ previous: old.record.id }),
      }),
    ]);
  });

  it('issues new node and workload certificates from the new intermediate; old ones still verify with the old', async () => {
    // The node's certificate from the old intermediate still authenticates it after the rotation.
    const w2 = await workloadFor(n1, `spiffe://${TD}/web`);
    const n2 = await attestedNode(t, { nodeName: 'n2' });
    const next = await keyAndCsr();
    const r = await renew(t, n1, next.csrPem);
    expect(r.status).toBe(201);
    const n1renewed = r.json<IssuanceBody>();
    for (const chain of [w2.cert, n2.cert, n1renewed.certificate_chain]) {
      expect(intermediateOf(chain)).toBe(pemOfCa(fresh));
      expect(verify(leafOf(chain), pemOfCa(fresh))).toMatch(/leaf\.pem: OK/);
      expect(verify(leafOf(chain), pemOfCa(old))).not.toMatch(/leaf\.pem: OK/);
      const leaf = new X509Certificate(leafOf(chain));
      expect(leaf.checkIssued(new X509Certificate(pemOfCa(fresh)))).toBe(true);
      // The CRL distribution point names the issuer that signed it.
      expect(
        run('openssl', ['x509', '-noout', '-ext', 'crlDistributionPoints'], leafOf(chain)).out,
      ).toContain(`/v1/crl?issuer=${fresh.record.id}`);
    }
    for (const chain of [n1.cert, w1.cert, w1b.cert]) {
      expect(intermediateOf(chain)).toBe(pemOfCa(old));
      expect(verify(leafOf(chain), pemOfCa(old))).toMatch(/leaf\.pem: OK/);
    }
    const certs = (await call(admin, 'GET', '/v1/admin/certificates?node=n2')).json<{
      certificates: { serial: string }[];
    }>().certificates;
    expect(certs.map((c) => c.serial)).toContain(n2.body.serial);
  });

  it('publishes the old intermediate’s CRL: a certificate of it revoked after the rotation is listed and refused', async () => {
    const revoke = await call(admin, 'POST', `/v1/admin/certificates/${w1.body.serial}/revoke`, {
      reason: 'key-compromise',
    });
    expect(revoke.status).toBe(200);

    const oldCrl = await crlText(old.record.id);
    expect(oldCrl).toContain(
      `Issuer: O = ${TD}, OU = baton, CN = Baton Signing CA ${old.record.id.slice(3)}`,
    );
    expect(oldCrl.toLowerCase()).toContain(`serial number: ${w1.body.serial}`);
    expect(oldCrl).toMatch(/Key Compromise/);
    // The default CRL is the current signing CA's, which never issued w1.
    const current = await crlText();
    expect(current).toContain(`CN = Baton Signing CA ${fresh.record.id.slice(3)}`);
    expect(current.toLowerCase()).not.toContain(w1.body.serial);

    const pem = await crlPem();
    expect(pem.match(/BEGIN X509 CRL/g)).toHaveLength(3);
    expect(verify(leafOf(w1.cert), pemOfCa(old), pem)).toMatch(/certificate revoked/);
    expect(verify(leafOf(w1b.cert), pemOfCa(old), pem)).toMatch(/leaf\.pem: OK/);
    const n2 = await attestedNode(t);
    expect(verify(leafOf(n2.cert), pemOfCa(fresh), pem)).toMatch(/leaf\.pem: OK/);

    const crls = (await call(admin, 'GET', '/v1/admin/crls')).json<{
      crls: { ca_id: string; revoked: { serial: string }[] }[];
    }>().crls;
    expect(crls.find((c) => c.ca_id === old.record.id)?.revoked.map((e) => e.serial)).toEqual([
      w1.body.serial,
    ]);
    expect(crls.map((c) => c.ca_id)).toEqual(expect.arrayContaining([fresh.record.id, old.record.id]));

    // OCSP answers for the old intermediate too, signed by it: verified with the roots alone.
    const ocsp = await ocspQuery({
      url: t.url,
      bundle: t.bundle,
      dir: dir.path,
      issuerPem: pemOfCa(old),
      certPem: leafOf(w1.cert),
    });
    expect(ocsp.verified).toBe(true);
    expect(ocsp.status).toBe('revoked');
    expect(ocsp.out).toContain(`Responder Id: ${responderKeyHash(old.spki).toString('hex').toUpperCase()}`);
  });

  it('keeps serving TLS to bundle-only clients, and the server certificate moves to the new intermediate at renewal', async () => {
    const before = await serverChain();
    expect(before.authorized).toBe(true);
    expect(t.running.currentCertificateSerial()).toBe(serverSerialBefore);
    await t.running.renewCertificate();
    const after = await serverChain();
    expect(after.authorized).toBe(true);
    expect(t.running.currentCertificateSerial()).not.toBe(serverSerialBefore);
    expect(new X509Certificate(after.issuer.raw).fingerprint256).toBe(
      new X509Certificate(pemOfCa(fresh)).fingerprint256,
    );
    // Admin certificates of the old intermediate still authenticate.
    expect((await call(admin, 'GET', '/v1/admin/nodes')).status).toBe(200);
  });
});

describeEachBackend('baton ca rotate (CLI) with a server running', (backend: Backend) => {
  const dir = tempDir('baton-rotate-cli-');
  const dataDir = join(dir.path, 'data');
  let env: Env = {};
  let drop: () => Promise<void> = async () => {};
  let server: ServerProcess;
  // The server follows CA changes in its background job; a short interval keeps the test short.
  const serverEnv = () => ({ ...env, BATON_BACKGROUND_INTERVAL: '1s' });
  const bundle = () => readFileSync(join(dataDir, 'admin', 'bundle.pem'), 'utf8');
  const cli = (args: string[]) => baton([...args, '--server', server.url, '--data-dir', dataDir], env);
  const attestNew = async () => {
    const token = cli(['token', 'create', '--role', 'worker']).stdout.trim();
    const k = await keyAndCsr();
    const r = await https(`${server.url}/v1/attest`, {
      method: 'POST',
      body: JSON.stringify({ method: 'join_token', token, csr: k.csrPem }),
      ca: bundle(),
    });
    expect(r.status).toBe(201);
    return { cert: r.json<IssuanceBody>().certificate_chain, key: k.keyPem };
  };
  const issuerCn = (chain: string) =>
    run('openssl', ['x509', '-noout', '-subject'], certsOf(chain)[1]!).out.match(/CN = (.+)$/m)![1];
  const verifies = (chain: string) => {
    const [leaf, inter] = certsOf(chain);
    const f = writeFiles(dir.path, { 'b.pem': bundle(), 'l.pem': leaf!, 'i.pem': inter! });
    return run('openssl', [
      'verify',
      '-x509_strict',
      '-CAfile',
      f['b.pem']!,
      '-untrusted',
      f['i.pem']!,
      f['l.pem']!,
    ]).out;
  };

  beforeAll(async () => {
    if (backend === 'postgres') {
      const pg = await createPostgresDatabase();
      drop = pg.drop;
      env = { BATON_DATABASE_URL: pg.url, BATON_KEK: randomBytes(32).toString('base64') };
    }
    expect(baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir], env).status).toBe(0);
    server = await startServerProcess(['--data-dir', dataDir], serverEnv());
  }, SLOW);
  afterAll(async () => {
    await server?.stop();
    await drop();
    dir.cleanup();
  });

  it(
    'rotates; the server signs with the new intermediate, old certificates keep working',
    async () => {
      const before = await attestNew();
      const oldCn = issuerCn(before.cert);
      // The embedded PGlite admits one process at a time: a rotation beside the running server is
      // refused (it used to be silently lost), and succeeds with the server stopped.
      if (backend === 'pglite') {
        const busy = baton(['ca', 'rotate', '--data-dir', dataDir], env);
        expect(busy.status).toBe(1);
        expect(busy.stderr).toMatch(
          /^baton: the embedded database in \S+ is in use by process \d+ .*\(ERR_DATABASE_UNAVAILABLE\)\n$/,
        );
        await server.stop();
      }
      const r = baton(['ca', 'rotate', '--json', '--data-dir', dataDir], env);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout) as {
        signing_ca_id: string;
        previous_ca_id: string;
        not_after: string;
      };
      expect(oldCn).toBe(`Baton Signing CA ${out.previous_ca_id.slice(3)}`);
      if (backend === 'pglite') server = await startServerProcess(['--data-dir', dataDir], serverEnv());
      else {
        // A running replica notices the new CA set within its background interval.
        for (let i = 0; ; i++) {
          const crl = await https(`${server.url}/v1/crl?issuer=${out.signing_ca_id}`, { ca: bundle() });
          if (crl.status === 200) break;
          expect(i).toBeLessThan(100);
          await new Promise((res) => setTimeout(res, 100));
        }
      }

      const after = await attestNew();
      expect(issuerCn(after.cert)).toBe(`Baton Signing CA ${out.signing_ca_id.slice(3)}`);
      expect(verifies(after.cert)).toMatch(/l\.pem: OK/);
      expect(verifies(before.cert)).toMatch(/l\.pem: OK/);
      // The old node certificate still authenticates its node, which renews onto the new intermediate.
      const k = await keyAndCsr();
      const renewed = await https(`${server.url}/v1/renew`, {
        method: 'POST',
        body: JSON.stringify({ csr: k.csrPem }),
        ca: bundle(),
        cert: before.cert,
        key: before.key,
      });
      expect(renewed.status).toBe(201);
      expect(issuerCn(renewed.json<IssuanceBody>().certificate_chain)).toBe(
        `Baton Signing CA ${out.signing_ca_id.slice(3)}`,
      );
      const pem = (await https(`${server.url}/v1/crl.pem`, { ca: bundle() })).body.toString();
      expect(pem.match(/BEGIN X509 CRL/g)).toHaveLength(3);

      const audit = cli(['audit', 'list', '--event', 'ca.rotated', '--json']);
      expect(audit.status).toBe(0);
      expect(JSON.parse(audit.stdout).events).toEqual([
        expect.objectContaining({
          actor: expect.stringMatching(/^cli:/),
          subject: out.signing_ca_id,
          details: expect.objectContaining({ previous: out.previous_ca_id }),
        }),
      ]);
      // The admin credential from `ca init` (old intermediate) still works, and verify passes.
      expect(cli(['audit', 'verify']).status).toBe(0);
    },
    SLOW,
  );
});
