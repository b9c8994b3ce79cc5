import { createHash, createPublicKey } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import type { Express } from 'express';
import type { AdminRole } from '../../services/ca/src/admin-credentials';
import { issueLeaf } from '../../services/ca/src/domain/issue';
import { ADMIN_ROUTES, type AdminRoute } from '../../services/ca/src/http/authorization';
import { describePublicKey, generateP256, spkiOf } from '../../services/ca/src/pki/keys';
import { memoryCertificates, testCa } from '../fixtures/test-ca';
import { batonAsync } from '../support/cli';
import { describeEachBackend } from '../support/database';
import { callAs } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { opensslText, selfSignedEc, tempDir, writeFiles } from '../support/tools';

/**
 * Issue 6 "Admin identities and roles": one table maps every admin route to the roles allowed on
 * it. This walks the whole table (route x identity), each identity over ONE keep-alive
 * connection, so a pass shows authorization runs on every request rather than once per
 * connection (Kubernetes CVE-2018-1002105 trusted an upgraded connection's earlier check).
 */

const TD = 'test.example.org';
const HOUR = 3600_000;
/** The CLI test runs several `baton` processes: generous on a busy machine. */
const CLI_TIMEOUT_MS = 120_000;

type Cred = { cert: string; key: string };
interface Call {
  method: string;
  path: string;
  body?: unknown;
}
interface Answer {
  status: number;
  code?: string;
}

/** Who knocks, and what the table says they get: a role, or a fixed refusal status. */
interface Identity {
  name: string;
  cred?: Cred;
  role?: AdminRole;
  refused?: { status: 401 | 403; code: string };
}

/** A request per route that would succeed where it is allowed (or fail on its own merits, 404). */
const SUCCESS: Record<AdminRoute, number> = {
  'POST /v1/admin/tokens': 201,
  'GET /v1/admin/nodes': 200,
  'GET /v1/admin/nodes/:id': 200,
  'POST /v1/admin/nodes/:id/revoke': 404,
  'GET /v1/admin/certificates': 200,
  'POST /v1/admin/certificates/:serial/revoke': 404,
  'GET /v1/admin/crls': 200,
  'GET /v1/admin/entries': 200,
  'POST /v1/admin/entries': 201,
  'DELETE /v1/admin/entries/:name': 204,
  'POST /v1/admin/admins': 201,
  'GET /v1/admin/audit': 200,
  'GET /v1/admin/audit/checkpoint': 200,
  'GET /v1/admin/audit/export': 200,
  // Nothing recorded before 2000 to prune: an answer with nothing done.
  'POST /v1/admin/audit/prune': 200,
  'GET /v1/admin/ca': 200,
  // Finishing with no rotation in progress: refused on its own merits (a start would change the CA).
  'POST /v1/admin/ca/rotate-root': 409,
  'POST /v1/admin/tpm/enrollments': 201,
  'POST /v1/admin/tpm/cas': 201,
  'GET /v1/admin/tpm/cas': 200,
};

/** Every `/v1/admin/…` route the Express app has, as "METHOD /path". */
function adminRoutesOf(app: Express): string[] {
  type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: Layer[] } };
  const walk = (stack: Layer[]): string[] =>
    stack.flatMap((l) =>
      l.route
        ? Object.keys(l.route.methods)
            .filter((m) => m !== '_all')
            .map((m) => `${m.toUpperCase()} ${l.route!.path}`)
        : l.handle?.stack
          ? walk(l.handle.stack)
          : [],
    );
  const router = (app as unknown as { router: { stack: Layer[] } }).router;
  return walk(router.stack).filter((r) => r.split(' ')[1]!.startsWith('/v1/admin/'));
}

describeEachBackend('admin authorization: every route x every identity', (backend) => {
  let t: TestServer;
  let root: Cred;
  let nodeId = '';
  const identities: Identity[] = [];
  const dir = tempDir('baton-admin-roles-');

  const call = (cred: Cred, method: string, path: string, body?: unknown) =>
    callAs(t, cred, method, path, body);

  /** The request each route gets from identity `who`; names are unique per identity. */
  const callFor = async (route: AdminRoute, who: string): Promise<Call> => {
    const name = `e-${who}`;
    switch (route) {
      case 'POST /v1/admin/tokens':
        return { method: 'POST', path: '/v1/admin/tokens', body: { role: 'worker' } };
      case 'GET /v1/admin/nodes':
        return { method: 'GET', path: '/v1/admin/nodes' };
      case 'GET /v1/admin/nodes/:id':
        return { method: 'GET', path: `/v1/admin/nodes/${nodeId}` };
      case 'POST /v1/admin/nodes/:id/revoke':
        return { method: 'POST', path: '/v1/admin/nodes/no-such-node/revoke', body: {} };
      case 'GET /v1/admin/certificates':
        return { method: 'GET', path: '/v1/admin/certificates' };
      case 'POST /v1/admin/certificates/:serial/revoke':
        return { method: 'POST', path: '/v1/admin/certificates/00ab/revoke', body: {} };
      case 'GET /v1/admin/crls':
        return { method: 'GET', path: '/v1/admin/crls' };
      case 'GET /v1/admin/entries':
        return { method: 'GET', path: '/v1/admin/entries' };
      case 'POST /v1/admin/entries':
        return {
          method: 'POST',
          path: '/v1/admin/entries',
          body: { name, spiffe_id: `spiffe://${TD}/${name}`, parent: nodeId },
        };
      case 'DELETE /v1/admin/entries/:name':
        return { method: 'DELETE', path: `/v1/admin/entries/${name}` };
      case 'POST /v1/admin/admins':
        return {
          method: 'POST',
          path: '/v1/admin/admins',
          body: { name: `made-by-${who}`, role: 'auditor', csr: (await keyAndCsr(who)).csrPem },
        };
      case 'GET /v1/admin/audit':
        return { method: 'GET', path: '/v1/admin/audit?limit=5' };
      case 'GET /v1/admin/audit/checkpoint':
        return { method: 'GET', path: '/v1/admin/audit/checkpoint' };
      case 'GET /v1/admin/audit/export':
        return { method: 'GET', path: '/v1/admin/audit/export?before=2000-01-01T00:00:00Z' };
      case 'POST /v1/admin/audit/prune':
        return { method: 'POST', path: '/v1/admin/audit/prune', body: { before: '2000-01-01T00:00:00Z' } };
      case 'GET /v1/admin/ca':
        return { method: 'GET', path: '/v1/admin/ca' };
      case 'POST /v1/admin/ca/rotate-root':
        return { method: 'POST', path: '/v1/admin/ca/rotate-root', body: { finish: true } };
      case 'POST /v1/admin/tpm/enrollments':
        return {
          method: 'POST',
          path: '/v1/admin/tpm/enrollments',
          body: { ek_id: createHash('sha256').update(who).digest('hex'), role: 'worker' },
        };
      case 'POST /v1/admin/tpm/cas':
        // A CA of its own per identity: adding one twice is a conflict.
        return {
          method: 'POST',
          path: '/v1/admin/tpm/cas',
          body: { pem: selfSignedEc(`/CN=TPM maker of ${who}`).cert.toString('utf8') },
        };
      case 'GET /v1/admin/tpm/cas':
        return { method: 'GET', path: '/v1/admin/tpm/cas' };
    }
  };

  /**
   * Sends every call over one keep-alive connection and returns the answers together with the
   * number of TLS connections the server accepted meanwhile.
   */
  const overOneConnection = async (cred: Cred | undefined, calls: Call[]) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    let accepted = 0;
    const count = () => {
      accepted += 1;
    };
    t.running.server.on('secureConnection', count);
    const sockets = new Set<unknown>();
    const answers: Answer[] = [];
    try {
      for (const c of calls) {
        answers.push(
          await new Promise<Answer>((resolve, reject) => {
            const payload = c.body === undefined ? undefined : JSON.stringify(c.body);
            const req = request(
              `${t.url}${c.path}`,
              {
                method: c.method,
                agent,
                ca: t.bundle,
                ...(cred ?? {}),
                headers: payload ? { 'content-type': 'application/json' } : {},
              },
              (res) => {
                const chunks: Buffer[] = [];
                res.on('data', (d: Buffer) => chunks.push(d));
                res.on('end', () => {
                  const text = Buffer.concat(chunks).toString('utf8');
                  const code = text.startsWith('{"error"') ? JSON.parse(text).error.code : undefined;
                  resolve({ status: res.statusCode ?? 0, code });
                });
              },
            );
            req.on('socket', (s) => sockets.add(s));
            req.on('error', reject);
            req.end(payload);
          }),
        );
      }
    } finally {
      t.running.server.off('secureConnection', count);
      agent.destroy();
    }
    return { answers, sockets: sockets.size, accepted };
  };

  /** The table's verdict for one identity on one route. */
  const expected = (who: Identity, route: AdminRoute): number => {
    if (who.refused) return who.refused.status;
    const allowed: readonly string[] = ADMIN_ROUTES[route];
    return allowed.includes(who.role!) ? SUCCESS[route] : 403;
  };

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const r = await t.issueAdmin('admin', 'root');
    root = { cert: r.cert, key: r.key };
    const node = await attestedNode(t, { nodeName: 'n1' });
    nodeId = node.body.node_id!;
    expect(
      (
        await call(root, 'POST', '/v1/admin/entries', {
          name: 'web',
          spiffe_id: `spiffe://${TD}/web`,
          parent: 'n1',
        })
      ).status,
    ).toBe(201);
    const k = await keyAndCsr();
    const w = await call(node, 'POST', '/v1/workload-svids', {
      spiffe_id: `spiffe://${TD}/web`,
      csr: k.csrPem,
    });
    expect(w.status).toBe(201);
    const workload = { cert: w.json<IssuanceBody>().certificate_chain, key: k.keyPem };

    // An admin certificate of another Baton with the same trust domain and the same name.
    const other = testCa({ trustDomain: TD });
    const { privateKey } = generateP256();
    const foreign = await issueLeaf(
      { clock: other.clock, issuer: other.keyring.signing, certificates: memoryCertificates() },
      {
        kind: 'admin',
        spiffeId: `spiffe://${TD}/admin/root`,
        subject: { O: TD, OU: 'admin', CN: 'root' },
        key: describePublicKey(spkiOf(createPublicKey(privateKey))),
        ttlMs: HOUR,
      },
    );
    // An admin certificate of this CA that has expired (issued nine hours back, 8h lifetime).
    t.clock.advance(-9 * HOUR);
    const expired = await t.issueAdmin('admin', 'expired');
    t.clock.advance(9 * HOUR);

    const asCred = (c: { cert: string; key: string }): Cred => ({ cert: c.cert, key: c.key });
    // An admin that worked, then had its certificate revoked.
    const mallory = await t.issueAdmin('admin', 'mallory');
    expect((await call(mallory, 'GET', '/v1/admin/nodes')).status).toBe(200);
    expect((await call(root, 'POST', `/v1/admin/certificates/${mallory.serial}/revoke`, {})).status).toBe(
      200,
    );
    identities.push(
      { name: 'no client certificate', refused: { status: 401, code: 'ERR_NOT_AUTHENTICATED' } },
      { name: 'node certificate', cred: asCred(node), refused: { status: 403, code: 'ERR_NOT_AUTHORIZED' } },
      { name: 'workload certificate', cred: workload, refused: { status: 403, code: 'ERR_NOT_AUTHORIZED' } },
      { name: 'admin', cred: asCred(await t.issueAdmin('admin', 'alice')), role: 'admin' },
      { name: 'operator', cred: asCred(await t.issueAdmin('operator', 'olga')), role: 'operator' },
      { name: 'auditor', cred: asCred(await t.issueAdmin('auditor', 'audrey')), role: 'auditor' },
      { name: 'revoked admin', cred: asCred(mallory), refused: { status: 403, code: 'ERR_CERT_REVOKED' } },
      {
        name: 'admin of another CA',
        cred: { cert: foreign.chainPem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string },
        refused: { status: 401, code: 'ERR_NOT_AUTHENTICATED' },
      },
      { name: 'expired admin', cred: asCred(expired), refused: { status: 401, code: 'ERR_CERT_EXPIRED' } },
    );
    // The chain has a head to checkpoint.
    await t.running.jobs.runOnce();
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  it('the table covers every /v1/admin route the server has, and nothing else', () => {
    const app = (t.running.server.listeners('request')[0] as unknown as { express: Express }).express;
    const served = adminRoutesOf(app);
    expect(served.length).toBeGreaterThan(0);
    expect(new Set(served)).toEqual(new Set(Object.keys(ADMIN_ROUTES)));
    expect(Object.keys(SUCCESS).sort()).toEqual(Object.keys(ADMIN_ROUTES).sort());
  });

  it('regression/CVE-2018-1002105: a certificate revoked mid-connection is refused on that same connection', async () => {
    const eve = await t.issueAdmin('operator', 'eve');
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    const get = () =>
      new Promise<number>((resolve, reject) => {
        const req = request(
          `${t.url}/v1/admin/nodes`,
          { agent, ca: t.bundle, cert: eve.cert, key: eve.key },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('socket', (s) => sockets.add(s));
        req.on('error', reject);
        req.end();
      });
    try {
      expect(await get()).toBe(200);
      expect((await call(root, 'POST', `/v1/admin/certificates/${eve.serial}/revoke`, {})).status).toBe(200);
      expect(await get()).toBe(403);
      expect(sockets.size).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  // Rows: 'ok/…' identities pass authorization where the table lets them; 'fail/…' never do.
  it.each([
    ['fail/no client certificate'],
    ['fail/node certificate'],
    ['fail/workload certificate'],
    ['ok/admin'],
    ['ok/operator'],
    ['ok/auditor'],
    ['fail/revoked admin'],
    ['fail/admin of another CA'],
    ['fail/expired admin'],
  ])('%s: the whole table over one keep-alive connection', async (row) => {
    const who = identities.find((i) => i.name === row.slice(row.indexOf('/') + 1))!;
    const routes = Object.keys(ADMIN_ROUTES) as AdminRoute[];
    const slug = who.name.replace(/[^a-z]+/g, '-');
    const calls = await Promise.all(routes.map((route) => callFor(route, slug)));
    const { answers, sockets, accepted } = await overOneConnection(who.cred, calls);
    expect(sockets).toBe(1);
    expect(accepted).toBe(1);
    const got = Object.fromEntries(routes.map((r, i) => [r, answers[i]!.status]));
    const want = Object.fromEntries(routes.map((r) => [r, expected(who, r)]));
    expect(got).toEqual(want);
    for (const [i, a] of answers.entries()) {
      const code = who.refused?.code ?? (a.status === 403 ? 'ERR_NOT_AUTHORIZED' : undefined);
      if (code) expect({ route: routes[i], code: a.code }).toEqual({ route: routes[i], code });
    }
  });

  it('an auditor cannot create tokens: 403, nothing created, nothing audited as created', async () => {
    const auditor = identities.find((i) => i.name === 'auditor')!.cred!;
    const before = await t.ca.knex('join_tokens').count('* as n').first();
    const r = await call(auditor, 'POST', '/v1/admin/tokens', { role: 'manager', uses: 5 });
    expect(r.status).toBe(403);
    expect(r.json<{ error: { code: string; message: string } }>().error).toEqual({
      code: 'ERR_NOT_AUTHORIZED',
      message: 'role auditor may not call POST /v1/admin/tokens',
    });
    expect(await t.ca.knex('join_tokens').count('* as n').first()).toEqual(before);
    const rows = (
      await call(root, 'GET', `/v1/admin/audit?actor=spiffe://${TD}/admin/audrey&event=token.created`)
    ).json<{ events: unknown[] }>().events;
    expect(rows).toEqual([]);
  });

  it('a node certificate reaches no admin route, whatever the method', async () => {
    const node = identities.find((i) => i.name === 'node certificate')!.cred!;
    for (const route of Object.keys(ADMIN_ROUTES) as AdminRoute[]) {
      const c = await callFor(route, 'node-direct');
      const r = await call(node, c.method, c.path, c.body);
      expect({ route, status: r.status }).toEqual({ route, status: 403 });
      expect(r.json<{ error: { code: string } }>().error.code).toBe('ERR_NOT_AUTHORIZED');
    }
  });

  it(
    'baton admin issue writes a credential whose role the server enforces',
    async () => {
      const adminDir = join(dir.path, 'root');
      const out = join(dir.path, 'auditor');
      mkdirSync(adminDir);
      writeFiles(adminDir, { 'cert.pem': root.cert, 'key.pem': root.key, 'bundle.pem': t.bundle });
      const as = (d: string, args: string[]) => batonAsync([...args, '--server', t.url, '--admin-dir', d]);

      const issued = await as(adminDir, [
        'admin',
        'issue',
        '--name',
        'aud2',
        '--role',
        'auditor',
        '--ttl',
        '1h',
        '--out',
        out,
      ]);
      expect(issued.stderr).toBe('');
      expect(issued.status).toBe(0);
      expect(issued.stdout).toMatch(
        new RegExp(`^issued spiffe://${TD.replace(/\./g, '\\.')}/admin/aud2 \\(auditor, expires \\S+\\) to `),
      );
      expect(statSync(join(out, 'key.pem')).mode & 0o777).toBe(0o600);
      const cert = readFileSync(join(out, 'cert.pem'), 'utf8');
      expect(cert.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
      const text = opensslText(cert);
      expect(text).toContain(`URI:spiffe://${TD}/admin/aud2`);
      expect(text).toMatch(/Subject: O = test\.example\.org, OU = auditor, CN = aud2/);
      expect(readFileSync(join(out, 'bundle.pem'), 'utf8')).toBe(t.bundle);

      const denied = await as(out, ['token', 'create', '--role', 'worker']);
      expect(denied.status).toBe(1);
      expect(denied.stdout).toBe('');
      expect(denied.stderr).toBe(
        'baton: role auditor may not call POST /v1/admin/tokens (ERR_NOT_AUTHORIZED)\n',
      );
      const reads = await as(out, ['node', 'list', '--json']);
      expect(reads.status).toBe(0);
      const audit = await as(out, ['audit', 'list', '--event', 'admin.issued', '--json']);
      expect(audit.status).toBe(0);
      expect(JSON.parse(audit.stdout).events).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            actor: `spiffe://${TD}/admin/root`,
            subject: `spiffe://${TD}/admin/aud2`,
            details: expect.objectContaining({ role: 'auditor' }),
          }),
        ]),
      );
      // An auditor cannot mint admins either, and a bad role is a usage error.
      const escalate = await as(out, [
        'admin',
        'issue',
        '--name',
        'me',
        '--role',
        'admin',
        '--out',
        join(dir.path, 'x'),
      ]);
      expect(escalate.status).toBe(1);
      expect(escalate.stderr).toContain('ERR_NOT_AUTHORIZED');
      const usage = await as(adminDir, [
        'admin',
        'issue',
        '--name',
        'z',
        '--role',
        'root',
        '--out',
        join(dir.path, 'z'),
      ]);
      expect(usage.status).toBe(2);
    },
    CLI_TIMEOUT_MS,
  );
});
