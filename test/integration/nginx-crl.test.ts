import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { writeFileAtomic } from '../../common/src/atomic-file';
import { authorizeIds, Identity, mtlsRequest } from '../../clients/identity/src';
import { batonAsync } from '../support/cli';
import { https } from '../support/https';
import { attestedNode, newToken } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { describeWithTool, runAsync, tempDir } from '../support/tools';

/**
 * Issue 5: a server without a Baton library enforces revocation from the agent's crl.pem. nginx
 * (Debian nginx-light) on 127.0.0.1 with `ssl_verify_client on` and `ssl_crl` = DIR/crl.pem (root and
 * intermediate CRLs: nginx turns on CRL_CHECK_ALL, so every level needs one), its server
 * certificate the node SVID the same agent keeps. A valid client gets 200; after `baton node revoke`,
 * `baton agent --once` and `nginx -s reload`, the revoked client gets 400 "The SSL certificate error".
 */

const NGINX = '/usr/sbin/nginx';
const TD = 'test.example.org';

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

function nginxConf(p: { prefix: string; port: number; agentDir: string }): string {
  const a = p.agentDir;
  return `# Written by test/integration/nginx-crl.test.ts
daemon off;
master_process on;
worker_processes 1;
${process.getuid?.() === 0 ? 'user root root;' : ''}
pid ${p.prefix}/nginx.pid;
error_log ${p.prefix}/error.log info;
events { worker_connections 64; }
http {
  access_log ${p.prefix}/access.log;
  client_body_temp_path ${p.prefix}/tmp/body;
  proxy_temp_path ${p.prefix}/tmp/proxy;
  fastcgi_temp_path ${p.prefix}/tmp/fastcgi;
  uwsgi_temp_path ${p.prefix}/tmp/uwsgi;
  scgi_temp_path ${p.prefix}/tmp/scgi;
  server {
    listen 127.0.0.1:${p.port} ssl;
    ssl_certificate        ${a}/node/cert.pem;   # the node SVID: leaf + intermediate
    ssl_certificate_key    ${a}/node/key.pem;
    ssl_protocols          TLSv1.2 TLSv1.3;      # nginx < 1.23.4 leaves TLS 1.3 out by default
    ssl_client_certificate ${p.prefix}/client-cas.pem;  # the bundle + the intermediate
    ssl_verify_client      on;
    ssl_verify_depth       2;
    ssl_crl                ${a}/crl.pem;         # every CRL: root and intermediate
    location / {
      default_type text/plain;
      return 200 "hello $ssl_client_s_dn\\n";
    }
  }
}
`;
}

describeWithTool(NGINX, 'nginx with ssl_crl from the agent refuses a revoked client certificate', () => {
  let t: TestServer;
  let nginx: ChildProcess | undefined;
  let nginxExit: Promise<unknown> | undefined;
  const dir = tempDir('baton-nginx-');
  const prefix = join(dir.path, 'nginx');
  const agentDir = join(dir.path, 'agent');
  const conf = join(prefix, 'nginx.conf');
  const identities: Identity[] = [];
  let url = '';

  const agentOnce = async (token?: string) => {
    const r = await batonAsync([
      'agent',
      '--server',
      t.url,
      '--dir',
      agentDir,
      ...(token ? ['--token', token] : []),
      '--once',
    ]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    return r.stdout;
  };
  const clientIdentity = async (name: string) => {
    const n = await attestedNode(t, { nodeName: name });
    const d = join(dir.path, name);
    writeFileAtomic(join(d, 'cert.pem'), n.cert);
    writeFileAtomic(join(d, 'key.pem'), n.key, 0o600);
    writeFileAtomic(join(d, 'bundle.pem'), t.bundle);
    const identity = await Identity.fromDirectory(d, { pollIntervalMs: 0, startTimeoutMs: 0 });
    identities.push(identity);
    return identity;
  };
  /** A request to nginx as `client`; nginx is authorized by the SPIFFE ID of its node SVID. */
  const get = async (client: Identity) => {
    const r = await mtlsRequest(client, url, {
      authorize: authorizeIds([`spiffe://${TD}/node/edge`]),
      timeoutMs: 5000,
    });
    return { status: r.status, body: r.body.toString() };
  };
  const nginxCmd = (...args: string[]) => runAsync(NGINX, ['-p', prefix, '-c', conf, ...args]);

  beforeAll(async () => {
    t = await startTestServer({ trustDomain: TD });
    // The edge node's agent: attests with a token, writes node/{cert,key}.pem, bundle.pem, crl.pem.
    const out = await agentOnce(await newToken(t, { role: 'manager', nodeName: 'edge' }));
    expect(out).toMatch(/crl updated \(2 CRLs\)/);
    mkdirSync(join(prefix, 'tmp'), { recursive: true });
    const intermediate = readFileSync(join(agentDir, 'node', 'cert.pem'), 'utf8').match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g,
    )![1]!;
    writeFileSync(
      join(prefix, 'client-cas.pem'),
      `${readFileSync(join(agentDir, 'bundle.pem'), 'utf8')}${intermediate}`,
    );
    const port = await freePort();
    url = `https://127.0.0.1:${port}/`;
    writeFileSync(conf, nginxConf({ prefix, port, agentDir }));
    const test = await nginxCmd('-t');
    expect(test.out).toMatch(/test is successful/);
    nginx = spawn(NGINX, ['-p', prefix, '-c', conf], { stdio: 'ignore' });
    nginxExit = new Promise((r) => nginx!.once('exit', r));
    for (const end = Date.now() + 10_000; ; ) {
      if (existsSync(join(prefix, 'nginx.pid'))) {
        const up = await https(url).then(
          () => true,
          () => false,
        );
        if (up) break;
      }
      if (Date.now() > end)
        throw new Error(`nginx did not start: ${readFileSync(join(prefix, 'error.log'), 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  afterAll(async () => {
    if (nginx && nginx.exitCode === null) {
      nginx.kill('SIGTERM');
      await nginxExit;
    }
    for (const i of identities) i.close();
    await t?.close();
    dir.cleanup();
  });

  it('accepts a valid client and, after revoke + agent --once + reload, refuses the revoked one', async () => {
    const good = await clientIdentity('good');
    const bad = await clientIdentity('bad');
    expect(await get(good)).toEqual({ status: 200, body: expect.stringContaining('CN=good') });
    expect(await get(bad)).toEqual({ status: 200, body: expect.stringContaining('CN=bad') });
    // Without a client certificate nginx refuses at once (400 "No required SSL certificate").
    expect((await https(url)).status).toBe(400);

    const admin = await t.issueAdmin('operator', 'ops');
    const revoked = await https(`${t.url}/v1/admin/nodes/bad/revoke`, {
      method: 'POST',
      body: JSON.stringify({ reason: 'key-compromise' }),
      ca: t.bundle,
      cert: admin.cert,
      key: admin.key,
    });
    expect(revoked.status).toBe(200);
    expect(await agentOnce()).toMatch(/crl updated \(2 CRLs\)/);
    // nginx reads ssl_crl at (re)load: until the reload, the CRL it loaded at start is in force.
    expect((await get(bad)).status).toBe(200);

    const reload = await nginxCmd('-s', 'reload');
    expect(reload.status).toBe(0);
    // The new workers take over within moments of the signal; old ones finish their connections.
    let last = { status: 0, body: '' };
    for (const end = Date.now() + 10_000; Date.now() < end; ) {
      last = await get(bad).catch((e: Error) => ({ status: -1, body: e.message }));
      if (last.status !== 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(last).toEqual({ status: 400, body: expect.stringContaining('The SSL certificate error') });
    expect(readFileSync(join(prefix, 'error.log'), 'utf8')).toMatch(/certificate revoked/);
    expect(await get(good)).toEqual({ status: 200, body: expect.stringContaining('CN=good') });
  });
});
