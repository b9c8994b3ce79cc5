import { createPublicKey } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { ADMIN_ROLES, type AdminRole } from '../../services/ca/src/admin-credentials';
import { issueLeaf } from '../../services/ca/src/domain/issue';
import type { CertificateKind } from '../../services/ca/src/domain/ports';
import { serverSpiffeId } from '../../services/ca/src/domain/trust-domain';
import { REVOCATION_ROLES } from '../../services/ca/src/http/authorization';
import { describePublicKey, generateP256, spkiOf } from '../../services/ca/src/pki/keys';
import { batonAsync } from '../support/cli';
import { describeEachBackend } from '../support/database';
import { callAs } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir, writeFiles } from '../support/tools';

/**
 * Issue 14, finding 5: an operator revoked an admin's certificate, and could revoke the server's
 * own. REVOCATION_ROLES (http/authorization.ts) says which role may revoke which kind of
 * certificate; these rows hold it to the rule with literal answers, over HTTPS, and show that a
 * refusal changes nothing: no revocation, no feed event, no new CRL, no audit row.
 */

const TD = 'test.example.org';
const HOUR = 3600_000;
/** The CLI row spawns a `baton` process: generous on a busy machine. */
const CLI_TIMEOUT_MS = 60_000;

type Cred = { cert: string; key: string };
type ErrorBody = { error: { code: string; message: string } };

describeEachBackend('issue 14: who may revoke which kind of certificate', (backend) => {
  let t: TestServer;
  let node: Cred;
  const admins = {} as Record<AdminRole, Cred>;
  let made = 0;
  const dir = tempDir('baton-revocation-rights-');

  const call = (cred: Cred, method: string, path: string, body?: unknown) =>
    callAs(t, cred, method, path, body);
  const revoke = (cred: Cred, serial: string) =>
    call(cred, 'POST', `/v1/admin/certificates/${serial}/revoke`, { reason: 'key-compromise' });

  /** A fresh, valid certificate of `kind`, issued by this CA; returns its serial. */
  const certificateOf = async (kind: CertificateKind): Promise<string> => {
    made += 1;
    switch (kind) {
      case 'node':
        return (await attestedNode(t)).body.serial;
      case 'workload': {
        const k = await keyAndCsr();
        const r = await call(node, 'POST', '/v1/workload-svids', {
          spiffe_id: `spiffe://${TD}/web`,
          csr: k.csrPem,
        });
        expect(r.status).toBe(201);
        return r.json<IssuanceBody>().serial;
      }
      case 'admin':
        return (await t.issueAdmin('admin', `other-${made}`)).serial;
      case 'server': {
        // Another server certificate, as another replica holds: the one this server presents is
        // refused below and never revoked, so the rest of the file keeps its TLS.
        const leaf = await issueLeaf(
          { clock: t.clock, issuer: t.ca.keyring.signing, certificates: t.ca.storage.certificates },
          {
            kind: 'server',
            spiffeId: serverSpiffeId(TD),
            subject: { O: TD, OU: 'server', CN: 'localhost' },
            key: describePublicKey(spkiOf(createPublicKey(generateP256().privateKey))),
            ttlMs: HOUR,
            dnsNames: ['localhost'],
          },
        );
        return leaf.record.serial;
      }
    }
  };

  const count = async (q: Promise<{ n: string | number }[]>) => Number((await q)[0]!.n);
  /** Everything a revocation writes: certificate statuses, feed events, CRLs and audit rows. */
  const state = async () => ({
    revoked: await count(t.ca.knex('certificates').where('status', 'revoked').count('* as n')),
    events: await count(t.ca.knex('revocation_events').count('* as n')),
    crls: await count(t.ca.knex('crls').count('* as n')),
    audit: await count(t.ca.knex('audit_log').count('* as n')),
  });
  const statusOf = async (serial: string) => (await t.ca.storage.certificates.findBySerial(serial))!.status;
  const lastEvent = async () =>
    (await call(node, 'GET', '/v1/revocations?since=0&wait=0')).json<{ last: number }>().last;

  /** The serial of the certificate the server presents in a TLS handshake, as the peer sees it. */
  const presentedSerial = () =>
    new Promise<string>((resolve, reject) => {
      const { port } = new URL(t.url);
      const socket = connect({ host: '127.0.0.1', port: Number(port), ca: t.bundle });
      socket.once('secureConnect', () => {
        resolve(socket.getPeerCertificate().serialNumber.toLowerCase());
        socket.destroy();
      });
      socket.once('error', reject);
    });

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    for (const role of ADMIN_ROLES) {
      const c = await t.issueAdmin(role, `${role}-1`);
      admins[role] = { cert: c.cert, key: c.key };
    }
    const n = await attestedNode(t, { nodeName: 'n1' });
    node = { cert: n.cert, key: n.key };
    const entry = { name: 'web', spiffe_id: `spiffe://${TD}/web`, parent: 'n1' };
    expect((await call(admins.admin, 'POST', '/v1/admin/entries', entry)).status).toBe(201);
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  // Literal answers, not ones computed from the table: a change to the table fails here too.
  const ROWS: [string, AdminRole, CertificateKind, 200 | 403][] = [
    ['ok/admin revokes a node certificate', 'admin', 'node', 200],
    ['ok/admin revokes a workload certificate', 'admin', 'workload', 200],
    ['ok/admin revokes an admin certificate', 'admin', 'admin', 200],
    ['ok/admin revokes a server certificate', 'admin', 'server', 200],
    ['ok/operator revokes a node certificate', 'operator', 'node', 200],
    ['ok/operator revokes a workload certificate', 'operator', 'workload', 200],
    ['fail/operator revokes an admin certificate', 'operator', 'admin', 403],
    ['fail/operator revokes a server certificate', 'operator', 'server', 403],
    ['fail/auditor revokes a node certificate', 'auditor', 'node', 403],
    ['fail/auditor revokes a workload certificate', 'auditor', 'workload', 403],
    ['fail/auditor revokes an admin certificate', 'auditor', 'admin', 403],
    ['fail/auditor revokes a server certificate', 'auditor', 'server', 403],
  ];

  it('the rows cover every role x every kind of REVOCATION_ROLES', () => {
    const kinds = Object.keys(REVOCATION_ROLES) as CertificateKind[];
    expect(new Set(ROWS.map(([, role, kind]) => `${role} ${kind}`))).toEqual(
      new Set(ADMIN_ROLES.flatMap((role) => kinds.map((kind) => `${role} ${kind}`))),
    );
  });

  it.each(ROWS)('%s', async (_name, role, kind, status) => {
    const serial = await certificateOf(kind);
    const before = await state();
    const since = await lastEvent();
    const r = await revoke(admins[role], serial);
    expect(r.status).toBe(status);
    if (status === 200) {
      expect(r.json<{ revoked_certificates: string[] }>().revoked_certificates).toEqual([serial]);
      expect(await statusOf(serial)).toBe('revoked');
      return;
    }
    expect(r.json<ErrorBody>().error).toEqual({
      code: 'ERR_NOT_AUTHORIZED',
      message:
        role === 'auditor'
          ? 'role auditor may not call POST /v1/admin/certificates/:serial/revoke'
          : `role ${role} may not revoke a certificate of kind ${kind}`,
    });
    expect(await statusOf(serial)).toBe('valid');
    expect(await state()).toEqual(before);
    expect(await lastEvent()).toBe(since);
  });

  it('fail/operator revokes the certificate the server presents: 403, nothing changes; the server keeps serving it', async () => {
    const serial = await presentedSerial();
    expect(serial).toBe(t.running.currentCertificateSerial());
    const listed = (await call(admins.operator, 'GET', '/v1/admin/certificates?status=valid')).json<{
      certificates: { serial: string; kind: string }[];
    }>().certificates;
    expect(listed).toContainEqual(expect.objectContaining({ serial, kind: 'server' }));
    const before = await state();
    for (const s of [serial, serial.toUpperCase()]) {
      const r = await revoke(admins.operator, s);
      expect(r.status).toBe(403);
      expect(r.json<ErrorBody>().error).toEqual({
        code: 'ERR_NOT_AUTHORIZED',
        message: 'role operator may not revoke a certificate of kind server',
      });
    }
    expect(await statusOf(serial)).toBe('valid');
    expect(await state()).toEqual(before);
    expect(await presentedSerial()).toBe(serial);
  });

  it('ok/an operator still gets 404 for an unknown serial and 409 for a workload certificate revoked already', async () => {
    expect((await revoke(admins.operator, '00ab')).status).toBe(404);
    const serial = await certificateOf('workload');
    expect((await revoke(admins.operator, serial)).status).toBe(200);
    expect((await revoke(admins.operator, serial)).status).toBe(409);
  });

  it(
    'fail/baton cert revoke as an operator on an admin certificate: exit 1, one line, the admin still works',
    async () => {
      const victim = await t.issueAdmin('admin', 'victim');
      const opsDir = join(dir.path, 'ops');
      mkdirSync(opsDir);
      writeFiles(opsDir, {
        'cert.pem': admins.operator.cert,
        'key.pem': admins.operator.key,
        'bundle.pem': t.bundle,
      });
      const r = await batonAsync(['cert', 'revoke', victim.serial, '--server', t.url, '--admin-dir', opsDir]);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(
        'baton: role operator may not revoke a certificate of kind admin (ERR_NOT_AUTHORIZED)\n',
      );
      expect(r.status).toBe(1);
      expect((await call(victim, 'GET', '/v1/admin/nodes')).status).toBe(200);
    },
    CLI_TIMEOUT_MS,
  );
});
