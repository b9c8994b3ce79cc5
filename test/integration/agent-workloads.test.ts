import { spawn } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type AgentCaApi,
  type AgentEvent,
  type AgentRunResult,
  CaClient,
  CaClientError,
  NodeAgent,
  WorkloadStore,
} from '../../clients/rotation/src';
import { describeEachBackend } from '../support/database';
import { callAs } from '../support/https';
import { newToken } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { itWith, itWithTool, opensslText, rootUser, run, tempDir, writeFiles } from '../support/tools';

const TD = 'test.example.org';
const certsOf = (chain: string) =>
  chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g)!;
const spki = (pem: string) =>
  createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'der' }).toString('hex');
const certSpki = (chain: string) =>
  new X509Certificate(chain).publicKey.export({ type: 'spki', format: 'der' }).toString('hex');

/** A CA client that refuses the workload SVIDs of one SPIFFE ID, as a busy CA would: a fake, not a mock. */
class RefusingOne implements AgentCaApi {
  constructor(
    readonly inner: CaClient,
    readonly spiffeId: string,
  ) {}
  fetchBundleUnverified = () => this.inner.fetchBundleUnverified();
  attest: AgentCaApi['attest'] = (p) => this.inner.attest(p);
  renew: AgentCaApi['renew'] = (p) => this.inner.renew(p);
  listEntries: AgentCaApi['listEntries'] = (p) => this.inner.listEntries(p);
  fetchCrlPem: AgentCaApi['fetchCrlPem'] = (p) => this.inner.fetchCrlPem(p);
  revocations: AgentCaApi['revocations'] = (p) => this.inner.revocations(p);
  mintJwtSvid: AgentCaApi['mintJwtSvid'] = (p) => this.inner.mintJwtSvid(p);
  issueWorkloadSvid: AgentCaApi['issueWorkloadSvid'] = async (p) => {
    if (p.spiffeId === this.spiffeId) throw new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503, 2000);
    return this.inner.issueWorkloadSvid(p);
  };
}

/** The serials (lowercase hex) every CRL of a crl.pem lists, read by openssl. */
function crlSerials(dir: string, pem: string): string[] {
  const blocks = pem.match(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----\n/g) ?? [];
  expect(blocks.length).toBeGreaterThanOrEqual(2);
  return blocks.flatMap((block, i) => {
    const file = join(dir, `crl-${i}.pem`);
    writeFileSync(file, block);
    const out = run('openssl', ['crl', '-in', file, '-noout', '-text']);
    expect(out.status).toBe(0);
    return [...out.out.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.toLowerCase());
  });
}

async function until(condition: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  if (!condition()) throw new Error('condition never became true');
}

describeEachBackend('baton agent: workload SVIDs, crl.pem, revocation feed', (backend) => {
  const dirs = tempDir('baton-agent-wl-');
  const d1 = join(dirs.path, 'n1');
  const d2 = join(dirs.path, 'n2');
  let t: TestServer;
  let client: CaClient;
  let admin: { cert: string; key: string };
  const events: AgentEvent[] = [];

  const agentFor = (dir: string, o: { token?: string; client?: AgentCaApi; getuid?: () => number } = {}) =>
    new NodeAgent({
      dir,
      clock: t.clock,
      client: o.client ?? client,
      random: () => 0.5,
      token: o.token,
      getuid: o.getuid ?? (() => 1000),
      onEvent: (e) => events.push(e),
    });
  const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);
  const createEntry = async (body: Record<string, unknown>) => {
    const r = await adminCall('POST', '/v1/admin/entries', body);
    expect(r.status).toBe(201);
  };
  const workloadFiles = (dir: string, name: string) => {
    const w = join(dir, 'workloads', name);
    return {
      cert: readFileSync(join(w, 'cert.pem'), 'utf8'),
      key: readFileSync(join(w, 'key.pem'), 'utf8'),
      bundle: readFileSync(join(w, 'bundle.pem'), 'utf8'),
    };
  };
  const stored = (dir: string, name: string) => new WorkloadStore(dir).load(name)!;
  const byName = (r: AgentRunResult) => Object.fromEntries(r.workloads.map((w) => [w.name, w]));

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const a = await t.issueAdmin('operator', 'ops');
    admin = { cert: a.cert, key: a.key };
    client = new CaClient({ serverUrl: t.url });
    for (const [dir, name] of [
      [d1, 'n1'],
      [d2, 'n2'],
    ] as const) {
      const r = await agentFor(dir, { token: await newToken(t, { nodeName: name }) }).runOnce();
      expect(r.node).toMatchObject({ action: 'attested', identity: { nodeId: name } });
      expect(r.workloads).toEqual([]);
      expect(r.crl).toEqual({ action: 'updated', crls: 2 });
    }
  });
  afterAll(async () => {
    client.close();
    await t.close();
    dirs.cleanup();
  });

  it('writes workloads/web for the parent node only: an SVID of the entry that openssl verifies', async () => {
    await createEntry({
      name: 'web',
      spiffe_id: `spiffe://${TD}/web`,
      parent: 'n1',
      dns_names: ['web.internal'],
    });
    const r = await agentFor(d1).runOnce();
    expect(r.node?.action).toBe('none');
    expect(r.workloads).toEqual([
      expect.objectContaining({ name: 'web', action: 'issued', spiffeId: `spiffe://${TD}/web` }),
    ]);
    expect(r.crl).toEqual({ action: 'unchanged' });
    const f = workloadFiles(d1, 'web');
    expect(lstatSync(join(d1, 'workloads', 'web')).isSymbolicLink()).toBe(true);
    expect(statSync(join(d1, 'workloads', 'web', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(f.bundle).toBe(t.bundle);
    expect(spki(f.key)).toBe(certSpki(f.cert));
    const [leaf, inter] = certsOf(f.cert);
    expect(certsOf(f.cert)).toHaveLength(2);
    expect(opensslText(leaf!)).toMatch(
      /Subject Alternative Name:\s+URI:spiffe:\/\/test\.example\.org\/web, DNS:web\.internal\n/,
    );
    const p = writeFiles(dirs.path, { 'leaf.pem': leaf!, 'inter.pem': inter! });
    const bundle = join(d1, 'workloads', 'web', 'bundle.pem');
    expect(
      run('openssl', [
        'verify',
        '-x509_strict',
        '-CAfile',
        bundle,
        '-untrusted',
        p['inter.pem']!,
        p['leaf.pem']!,
      ]),
    ).toEqual({ status: 0, out: `${p['leaf.pem']}: OK\n` });

    const other = await agentFor(d2).runOnce();
    expect(other.workloads).toEqual([]);
    expect(existsSync(join(d2, 'workloads', 'web'))).toBe(false);
  });

  // The files the test above wrote.
  itWithTool('certtool', 'the workloads/web SVID verifies with GnuTLS certtool', () => {
    const c = run('certtool', [
      '--verify',
      '--load-ca-certificate',
      join(d1, 'workloads', 'web', 'bundle.pem'),
      '--infile',
      join(d1, 'workloads', 'web', 'cert.pem'),
    ]);
    expect(c.out).toMatch(/Chain verification output: Verified/);
  });

  it('a failing entry is reported and retried without holding up the others or the node', async () => {
    await createEntry({ name: 'api', spiffe_id: `spiffe://${TD}/api`, parent: 'n1' });
    await createEntry({ name: 'db', spiffe_id: `spiffe://${TD}/db`, parent: 'n1' });
    events.length = 0;
    const r = await agentFor(d1, { client: new RefusingOne(client, `spiffe://${TD}/api`) }).runOnce();
    expect(r.node?.action).toBe('none');
    expect(r.nodeError).toBeUndefined();
    expect(byName(r).api).toMatchObject({ action: 'failed', error: { code: 'ERR_CA_UNAVAILABLE' } });
    expect(byName(r).db).toMatchObject({ action: 'issued' });
    expect(events).toContainEqual({ type: 'workload', result: byName(r).api });
    expect(existsSync(join(d1, 'workloads', 'api'))).toBe(false);
    const again = await agentFor(d1).runOnce();
    expect(again.workloads.map((w) => [w.name, w.action])).toEqual([['api', 'issued']]);
  });

  it("renews at the workload's refresh_at with a new key; the node is not due", async () => {
    const before = stored(d1, 'web');
    const beforeFiles = workloadFiles(d1, 'web');
    t.clock.set(before.refreshAt);
    const r = await agentFor(d1).runOnce();
    expect(r.node?.action).toBe('none');
    expect(byName(r).web).toMatchObject({ action: 'renewed' });
    expect(byName(r).web!.reason).toBeUndefined();
    const after = workloadFiles(d1, 'web');
    expect(stored(d1, 'web').serial).not.toBe(before.serial);
    expect(byName(r).web!.serial).toBe(stored(d1, 'web').serial);
    expect(spki(after.key)).not.toBe(spki(beforeFiles.key));
    expect(spki(after.key)).toBe(certSpki(after.cert));
  });

  it('crl.pem lists a certificate revoked by an admin after the next run', async () => {
    const serial = stored(d1, 'web').serial;
    const r = await adminCall('POST', `/v1/admin/certificates/${serial}/revoke`, {
      reason: 'key-compromise',
    });
    expect(r.status).toBe(200);
    const run1 = await agentFor(d2).runOnce();
    expect(run1.crl).toEqual({ action: 'updated', crls: 2 });
    expect(crlSerials(dirs.path, readFileSync(join(d2, 'crl.pem'), 'utf8'))).toContain(serial);
    // The ETag is remembered: nothing to download the second time.
    expect((await agentFor(d2).runOnce()).crl).toEqual({ action: 'unchanged' });
  });

  it('deleting an entry removes its files on the next run', async () => {
    expect((await adminCall('DELETE', '/v1/admin/entries/db')).status).toBe(204);
    const r = await agentFor(d1).runOnce();
    expect(r.workloads).toContainEqual({ name: 'db', action: 'removed' });
    expect(existsSync(join(d1, 'workloads', 'db'))).toBe(false);
    expect(new WorkloadStore(d1).names().sort()).toEqual(['api', 'web']);
  });

  it('a reader that resolves workloads/<name> once never sees a key that does not match the certificate, over 20 rotations', async () => {
    await createEntry({ name: 'race', spiffe_id: `spiffe://${TD}/race`, parent: 'n1', ttl: '1m' });
    const agent = agentFor(d1);
    await agent.runOnce();
    const stop = join(dirs.path, 'stop-reader');
    const reader = spawn(process.execPath, ['-e', READER, join(d1, 'workloads', 'race'), stop]);
    let out = '';
    reader.stdout.on('data', (d) => (out += d));
    const exited = new Promise((resolve) => reader.on('exit', resolve));
    const serials = new Set<string>();
    for (let i = 0; i < 20; i++) {
      t.clock.set(stored(d1, 'race').refreshAt);
      const r = await agent.runOnce();
      expect(byName(r).race).toMatchObject({ action: 'renewed' });
      serials.add(byName(r).race!.serial!);
      await new Promise((r) => setTimeout(r, 5));
    }
    writeFileSync(stop, '');
    await exited;
    const seen = JSON.parse(out) as { reads: number; mismatches: number; serials: number };
    expect(serials.size).toBe(20);
    expect(seen.mismatches).toBe(0);
    expect(seen.reads).toBeGreaterThan(20);
    expect(seen.serials).toBeGreaterThan(1);
  });

  const asRoot = (title: string, fn: jest.ProvidesCallback, timeout?: number) =>
    itWith(rootUser, title, fn, timeout);
  asRoot('as root: an entry with unix:uid:1234 gets files owned by uid 1234, key 0600', async () => {
    await createEntry({
      name: 'owned',
      spiffe_id: `spiffe://${TD}/owned`,
      parent: 'n1',
      selectors: ['unix:uid:1234', 'unix:gid:2345'],
    });
    const r = await agentFor(d1, { getuid: () => process.getuid!() }).runOnce();
    expect(byName(r).owned).toMatchObject({ action: 'issued' });
    const gen = realpathSync(join(d1, 'workloads', 'owned'));
    for (const f of ['key.pem', 'cert.pem', 'bundle.pem']) {
      const st = statSync(join(gen, f));
      expect([f, st.uid, st.gid]).toEqual([f, 1234, 2345]);
    }
    expect(statSync(join(gen, 'key.pem')).mode & 0o777).toBe(0o600);
    // Not root (or no uid selector): the agent's own user, as before.
    const st = statSync(join(d1, 'workloads', 'web', 'key.pem'));
    expect(st.uid).toBe(0);
  });

  it('the daemon follows the feed: a revoked workload is issued again at once; a revoked node stops the agent', async () => {
    events.length = 0;
    const agent = new NodeAgent({
      dir: d1,
      clock: t.clock,
      client,
      random: () => 0.5,
      getuid: () => 1000,
      onEvent: (e) => events.push(e),
      syncIntervalMs: 3600_000,
    });
    const running = agent.run(new Promise(() => undefined)).then(
      () => undefined,
      (e: unknown) => e,
    );
    const isWebRenewal = (e: AgentEvent) =>
      e.type === 'workload' && e.result.name === 'web' && e.result.action === 'renewed';
    // web still holds the serial revoked two tests ago: reading the feed from its start, the
    // daemon finds it and issues web again.
    const revokedEarlier = stored(d1, 'web').serial;
    await until(() => events.some(isWebRenewal));
    expect(events.find(isWebRenewal)).toMatchObject({ result: { reason: 'the certificate was revoked' } });
    expect(stored(d1, 'web').serial).not.toBe(revokedEarlier);
    await until(() => t.running.feed.waiting > 0);

    // Live: a revocation now reaches the waiting long-poll.
    events.length = 0;
    const web = stored(d1, 'web').serial;
    expect((await adminCall('POST', `/v1/admin/certificates/${web}/revoke`, {})).status).toBe(200);
    await until(() => events.some(isWebRenewal));
    expect(events.find(isWebRenewal)).toMatchObject({ result: { reason: 'the certificate was revoked' } });
    expect(stored(d1, 'web').serial).not.toBe(web);
    expect(events.some((e) => e.type === 'crl')).toBe(true);
    expect(crlSerials(dirs.path, readFileSync(join(d1, 'crl.pem'), 'utf8'))).toContain(web);
    await until(() => t.running.feed.waiting > 0);

    const nodeSerial = (
      await t.ca.storage.certificates.list({ nodeId: 'n1', status: 'valid', limit: 10 })
    )[0]!.serial;
    const revoked = await adminCall('POST', '/v1/admin/nodes/n1/revoke', { reason: 'key-compromise' });
    expect(revoked.status).toBe(200);
    const err = await running;
    expect(err).toMatchObject({
      code: 'ERR_NODE_REVOKED',
      message: expect.stringMatching(
        /^this node has been revoked \(revocation event \d+, reason key-compromise, at \S+Z\): the agent stops renewing$/,
      ),
    });
    expect(events).toContainEqual(expect.objectContaining({ type: 'revoked' }));
    const listed = crlSerials(dirs.path, readFileSync(join(d1, 'crl.pem'), 'utf8'));
    expect(listed).toContain(nodeSerial);
    for (const name of ['web', 'api', 'race']) expect(listed).toContain(stored(d1, name).serial);

    // runOnce after the revocation: the refusal is reported and nothing is renewed.
    const before = readFileSync(join(d1, 'node', 'cert.pem'), 'utf8');
    const after = await agentFor(d1).runOnce();
    // Revoking the node revoked its certificate too: the CA may say either.
    expect(after.workloadsError).toMatchObject({
      code: expect.stringMatching(/^ERR_(NODE|CERT)_REVOKED$/),
      message: expect.stringMatching(/has been revoked: the agent stops renewing$/),
    });
    t.clock.advance(13 * 3600_000);
    const due = await agentFor(d1).runOnce();
    expect(due.nodeError).toMatchObject({ code: expect.stringMatching(/^ERR_(NODE|CERT)_REVOKED$/) });
    expect(due.workloads).toEqual([]);
    expect(readFileSync(join(d1, 'node', 'cert.pem'), 'utf8')).toBe(before);
  });
});

/** A separate process: truly concurrent with the agent, as a TLS server reading its files is. */
const READER = `
const fs = require('node:fs');
const crypto = require('node:crypto');
const [link, stop] = process.argv.slice(1);
let reads = 0, mismatches = 0, missing = 0;
const serials = new Set();
const spki = (k) => k.export({ type: 'spki', format: 'der' });
while (!fs.existsSync(stop)) {
  let cert, key;
  try {
    const dir = fs.realpathSync(link);
    cert = fs.readFileSync(dir + '/cert.pem', 'utf8');
    key = fs.readFileSync(dir + '/key.pem', 'utf8');
  } catch {
    missing++;
    continue;
  }
  const leaf = new crypto.X509Certificate(cert);
  reads++;
  serials.add(leaf.serialNumber);
  if (!spki(leaf.publicKey).equals(spki(crypto.createPublicKey(crypto.createPrivateKey(key))))) mismatches++;
}
process.stdout.write(JSON.stringify({ reads, mismatches, missing, serials: serials.size }));
`;
