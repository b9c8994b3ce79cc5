import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { baton, batonAsync, type ServerProcess, startServerProcess } from '../support/cli';
import { describeEachBackend } from '../support/database';
import { callAs } from '../support/https';
import { attest, type IssuanceBody, keyAndCsr, newToken, renew } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir } from '../support/tools';

const TD = 'logs.example.org';
const REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The base64 body of a PEM block, whole and line by line: any of it in a log is a leak. */
function pemSecrets(pem: string): string[] {
  const lines = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
  return [lines.join(''), ...lines.filter((l) => l.length >= 16)];
}

/** Every secret that occurs in `text`, named (never printed whole, should this test fail). */
function leaks(text: string, secrets: Map<string, string>): string[] {
  const found = ['PRIVATE KEY', 'CERTIFICATE REQUEST'].filter((marker) => text.includes(marker));
  for (const [name, secret] of secrets) if (text.includes(secret)) found.push(name);
  return found;
}

describeEachBackend('log hygiene: no token, key, CSR or KEK in the logs at trace level', (backend) => {
  let t: TestServer;
  const lines: string[] = [];
  const secrets = new Map<string, string>();
  const logStream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const remember = (name: string, values: string[]) => {
    for (const [i, v] of values.entries()) secrets.set(`${name}#${i}`, v);
  };
  const newCsr = async (name: string) => {
    const k = await keyAndCsr(name);
    remember(`${name} CSR`, pemSecrets(k.csrPem));
    remember(`${name} key`, pemSecrets(k.keyPem));
    return k;
  };
  const rememberToken = (name: string, token: string) => {
    remember(name, [token, token.slice(token.indexOf('.') + 1)]);
  };

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD, logLevel: 'trace', logStream });
    remember('KEK', [t.ca.kek.key.toString('base64'), t.ca.kek.key.toString('hex')]);
    const a = await t.issueAdmin('admin', 'root-admin');
    remember('admin key', pemSecrets(a.key));
    const admin = { cert: a.cert, key: a.key };
    // A string body is sent as it is (a malformed one); anything else as JSON.
    const call = (method: string, path: string, body?: unknown, as: { cert: string; key: string } = admin) =>
      callAs(t, as, method, path, typeof body === 'string' ? Buffer.from(body) : body);

    // Token creation, attestation accepted and refused.
    const created = await call('POST', '/v1/admin/tokens', { role: 'worker', node_name: 'alpha' });
    expect(created.status).toBe(201);
    const token = created.json<{ token: string }>().token;
    rememberToken('admin API token', token);
    const k1 = await newCsr('alpha');
    const attested = await attest(t, { method: 'join_token', token, csr: k1.csrPem });
    expect(attested.status).toBe(201);
    expect(
      (await attest(t, { method: 'join_token', token, csr: (await newCsr('again')).csrPem })).status,
    ).toBe(401);
    const forged = `${token.slice(0, token.indexOf('.') + 1)}${'a'.repeat(26)}`;
    rememberToken('forged token', forged);
    expect(
      (await attest(t, { method: 'join_token', token: forged, csr: (await newCsr('f')).csrPem })).status,
    ).toBe(401);
    const other = await newToken(t, { nodeName: 'beta' });
    rememberToken('second token', other);
    const beta = await newCsr('beta');
    expect((await attest(t, { method: 'join_token', token: other, csr: beta.csrPem })).status).toBe(201);

    // Renewal, entry creation, workload issuance, admin issuance.
    const k2 = await newCsr('alpha-renewed');
    const renewed = await renew(
      t,
      { cert: attested.json<IssuanceBody>().certificate_chain, key: k1.keyPem },
      k2.csrPem,
    );
    expect(renewed.status).toBe(201);
    const node = { cert: renewed.json<IssuanceBody>().certificate_chain, key: k2.keyPem };
    expect(
      (
        await call('POST', '/v1/admin/entries', {
          name: 'web',
          spiffe_id: `spiffe://${TD}/web`,
          parent: 'alpha',
        })
      ).status,
    ).toBe(201);
    const svid = await call(
      'POST',
      '/v1/workload-svids',
      { spiffe_id: `spiffe://${TD}/web`, csr: (await newCsr('web')).csrPem },
      node,
    );
    expect(svid.status).toBe(201);
    expect(
      (
        await call('POST', '/v1/admin/admins', {
          name: 'ops',
          role: 'operator',
          csr: (await newCsr('ops')).csrPem,
        })
      ).status,
    ).toBe(201);

    // Revocation of a certificate and of a node; the CRL and the feed.
    const serial = svid.json<IssuanceBody>().serial;
    expect(
      (await call('POST', `/v1/admin/certificates/${serial}/revoke`, { reason: 'key-compromise' })).status,
    ).toBe(200);
    expect((await call('POST', '/v1/admin/nodes/beta/revoke', {})).status).toBe(200);
    expect((await call('GET', '/v1/crl')).status).toBe(200);
    expect((await call('GET', '/v1/revocations?since=0&wait=0', undefined, node)).status).toBe(200);

    // Errors: bad JSON, bad CSRs, secrets where they do not belong (query string, unknown path).
    expect((await call('POST', '/v1/attest', '{"method":"join_token","token":"')).status).toBe(400);
    const badCsr =
      '-----BEGIN CERTIFICATE REQUEST-----\nMIIBbadbadbadbadbadbadbadbadbad=\n-----END CERTIFICATE REQUEST-----\n';
    remember('bad CSR', ['MIIBbadbadbadbadbadbadbadbadbad=']);
    const third = await newToken(t);
    rememberToken('third token', third);
    expect((await attest(t, { method: 'join_token', token: third, csr: badCsr })).status).toBe(400);
    expect(
      (await call('POST', '/v1/workload-svids', { spiffe_id: `spiffe://${TD}/web`, csr: badCsr }, node))
        .status,
    ).toBe(400);
    expect((await call('POST', '/v1/admin/admins', { name: 'x', role: 'admin', csr: badCsr })).status).toBe(
      400,
    );
    expect((await call('GET', `/v1/bundle?token=${encodeURIComponent(third)}`)).status).toBe(200);
    expect((await call('GET', `/v1/nothing/${encodeURIComponent(third)}`)).status).toBe(404);
    expect((await call('POST', '/v1/admin/tokens', '{not json')).status).toBe(400);
  });
  afterAll(async () => {
    await t.close();
  });

  it('captured the request log of every flow', () => {
    const handled = lines.filter((l) => l.includes('"Request handled"'));
    expect(handled.length).toBeGreaterThanOrEqual(20);
  });

  it('holds no token or token secret, no private key, no CSR and no KEK', () => {
    expect(secrets.size).toBeGreaterThan(40);
    // The search itself works: a line with a CSR line in it would be caught.
    expect(leaks(`{"msg":"x ${secrets.get('alpha CSR#1')}"}`, secrets)).toEqual(['alpha CSR#1']);
    expect(leaks(lines.join('\n'), secrets)).toEqual([]);
  });

  it('is one JSON object per line; request lines carry a request id, the route pattern and no URL', () => {
    for (const line of lines) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      expect(typeof entry.msg).toBe('string');
      expect(typeof entry.level).toBe('number');
      if (entry.msg === 'Request handled' || entry.msg === 'Request failed') {
        expect(entry.req_id).toMatch(REQUEST_ID);
        expect(String(entry.route)).not.toMatch(/[?]|BATON1/);
      }
    }
    const routes = lines.map((l) => JSON.parse(l) as { route?: string }).map((e) => e.route);
    expect(routes).toContain('/v1/admin/certificates/:serial/revoke');
    expect(routes).toContain('unmatched');
  });
});

describe('log hygiene: the CLI and a server process at BATON_LOG_LEVEL=trace', () => {
  const dir = tempDir('baton-logs-');
  const dataDir = join(dir.path, 'data');
  const env = { BATON_LOG_LEVEL: 'trace' };
  let server: ServerProcess;
  afterAll(async () => {
    await server?.stop();
    dir.cleanup();
  });

  it('ca init, server, token create, agent and node list print no token secret, key, CSR or KEK', async () => {
    const output: string[] = [];
    const init = baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir], env);
    expect(init.status).toBe(0);
    output.push(init.stdout, init.stderr);
    server = await startServerProcess(['--data-dir', dataDir], env);
    const admin = ['--server', server.url, '--admin-dir', join(dataDir, 'admin')];
    // The token on stdout is the command's output (CONTRACT); its stderr is checked.
    const created = await batonAsync(['token', 'create', '--role', 'worker', ...admin], env);
    expect(created.status).toBe(0);
    const token = created.stdout.trim();
    output.push(created.stderr);
    const nodeDir = join(dir.path, 'node');
    const agent = await batonAsync(
      ['agent', '--server', server.url, '--token', token, '--dir', nodeDir, '--once'],
      env,
    );
    expect(agent.status).toBe(0);
    const again = await batonAsync(
      ['agent', '--server', server.url, '--token', token, '--dir', join(dir.path, 'node-2'), '--once'],
      env,
    );
    expect(again.status).toBe(1);
    const list = await batonAsync(['node', 'list', ...admin], env);
    expect(list.status).toBe(0);
    output.push(agent.stdout, agent.stderr, again.stdout, again.stderr, list.stdout, list.stderr);
    await server.stop();
    output.push(server.stdout(), server.stderr());

    const secrets = new Map<string, string>([
      ['token', token],
      ['token secret', token.slice(token.indexOf('.') + 1)],
      ['KEK', readFileSync(join(dataDir, 'kek'), 'utf8').trim()],
    ]);
    for (const [i, s] of pemSecrets(readFileSync(join(nodeDir, 'node', 'key.pem'), 'utf8')).entries())
      secrets.set(`node key#${i}`, s);
    for (const [i, s] of pemSecrets(readFileSync(join(dataDir, 'admin', 'key.pem'), 'utf8')).entries())
      secrets.set(`admin key#${i}`, s);
    expect(leaks(output.join('\n'), secrets)).toEqual([]);

    const serverLines = server.stderr().split('\n').filter(Boolean);
    expect(serverLines.length).toBeGreaterThan(3);
    for (const line of serverLines) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry.msg === 'Request handled') expect(entry.req_id).toMatch(REQUEST_ID);
    }
  });
});
