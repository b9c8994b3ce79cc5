import { describeEachBackend } from '../support/database';
import { callAs, https, type HttpsResult } from '../support/https';
import { attest, attestedNode, type IssuanceBody, keyAndCsr, renew } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';

const TD = 'metrics.example.org';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format (exposition format 0.0.4), the sample lines only. */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample with this name whose labels include `labels`; undefined when none. */
function sampleValue(
  samples: Sample[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const hits = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0]?.value;
}

describeEachBackend('metrics', (backend) => {
  let t: TestServer;
  let admin: { cert: string; key: string };
  let kept: { cert: string; key: string };
  let feed: Promise<HttpsResult>;

  const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);
  const scrape = async () => {
    const r = await https(`${t.url}/metrics`, { ca: t.bundle });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseMetrics(r.body.toString('utf8'));
  };

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const a = await t.issueAdmin('admin', 'root-admin');
    admin = { cert: a.cert, key: a.key };

    // Attest with a token from the admin API, then renew; attest a second node.
    const token = (await adminCall('POST', '/v1/admin/tokens', { role: 'worker', node_name: 'keep' })).json<{
      token: string;
    }>().token;
    const first = await keyAndCsr();
    const attested = await attest(t, { method: 'join_token', token, csr: first.csrPem });
    expect(attested.status).toBe(201);
    const next = await keyAndCsr();
    const renewed = await renew(
      t,
      { cert: attested.json<IssuanceBody>().certificate_chain, key: first.keyPem },
      next.csrPem,
    );
    expect(renewed.status).toBe(201);
    kept = { cert: renewed.json<IssuanceBody>().certificate_chain, key: next.keyPem };
    await attestedNode(t, { nodeName: 'gone' });

    // A refused attestation: the token was used.
    const refused = await attest(t, { method: 'join_token', token, csr: (await keyAndCsr()).csrPem });
    expect(refused.status).toBe(401);

    // A workload SVID, and an admin certificate.
    expect(
      (
        await adminCall('POST', '/v1/admin/entries', {
          name: 'web',
          spiffe_id: `spiffe://${TD}/web`,
          parent: 'keep',
        })
      ).status,
    ).toBe(201);
    const svid = await https(`${t.url}/v1/workload-svids`, {
      method: 'POST',
      body: JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: (await keyAndCsr('web')).csrPem }),
      ca: t.bundle,
      ...kept,
    });
    expect(svid.status).toBe(201);
    const issued = await adminCall('POST', '/v1/admin/admins', {
      name: 'ops',
      role: 'operator',
      csr: (await keyAndCsr('ops')).csrPem,
    });
    expect(issued.status).toBe(201);

    // A node waits on the revocation feed.
    feed = https(`${t.url}/v1/revocations?since=0&wait=20`, { ca: t.bundle, ...kept });
    const until = Date.now() + 5000;
    while (t.running.feed.waiting === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  });
  afterAll(async () => {
    await t.close();
  });

  it('counts issued certificates by kind and operation', async () => {
    const m = await scrape();
    const issued = (kind: string, operation: string) =>
      sampleValue(m, 'baton_certificates_issued_total', { kind, operation });
    expect(issued('node', 'attest')).toBe(2);
    expect(issued('node', 'renew')).toBe(1);
    expect(issued('workload', 'workload')).toBe(1);
    expect(issued('admin', 'admin')).toBe(1);
    expect(issued('server', 'server')).toBe(1);
  });

  it('times issuance in a histogram per kind', async () => {
    const m = await scrape();
    expect(sampleValue(m, 'baton_issuance_duration_seconds_count', { kind: 'node' })).toBe(3);
    expect(sampleValue(m, 'baton_issuance_duration_seconds_count', { kind: 'workload' })).toBe(1);
    expect(sampleValue(m, 'baton_issuance_duration_seconds_count', { kind: 'admin' })).toBe(1);
    expect(sampleValue(m, 'baton_issuance_duration_seconds_bucket', { kind: 'node', le: '+Inf' })).toBe(3);
    expect(sampleValue(m, 'baton_issuance_duration_seconds_sum', { kind: 'node' })).toBeGreaterThan(0);
  });

  it('counts refusals by error code', async () => {
    const bad = await https(`${t.url}/v1/attest`, {
      method: 'POST',
      body: '{"method":',
      ca: t.bundle,
    });
    expect(bad.status).toBe(400);
    const m = await scrape();
    expect(sampleValue(m, 'baton_requests_refused_total', { code: 'ERR_TOKEN_INVALID' })).toBe(1);
    expect(sampleValue(m, 'baton_requests_refused_total', { code: 'ERR_BAD_REQUEST' })).toBe(1);
    expect(sampleValue(m, 'baton_requests_refused_total', { code: 'ERR_RATE_LIMITED' })).toBeUndefined();
  });

  it('reports active nodes and feed waiters at scrape time, and revocations', async () => {
    let m = await scrape();
    expect(sampleValue(m, 'baton_active_nodes')).toBe(2);
    expect(sampleValue(m, 'baton_revocation_feed_waiters')).toBe(1);
    expect(sampleValue(m, 'baton_revocations_total', { kind: 'node' })).toBeUndefined();

    expect((await adminCall('POST', '/v1/admin/nodes/gone/revoke', {})).status).toBe(200);
    const woken = await feed;
    expect(woken.json<{ events: { node_id: string }[] }>().events.map((e) => e.node_id)).toEqual(['gone']);
    m = await scrape();
    expect(sampleValue(m, 'baton_active_nodes')).toBe(1);
    expect(sampleValue(m, 'baton_revocation_feed_waiters')).toBe(0);
    expect(sampleValue(m, 'baton_revocations_total', { kind: 'node' })).toBe(1);
  });

  it('reports the age of each CA latest CRL from the database, and CA time to expiry', async () => {
    t.clock.advance(120_000);
    const m = await scrape();
    for (const ca of t.ca.keyring.all) {
      const crl = await t.ca.storage.crls.latest(ca.record.id);
      expect(crl).not.toBeNull();
      const age = (t.clock.now().getTime() - crl!.thisUpdate.getTime()) / 1000;
      expect(age).toBeGreaterThanOrEqual(120);
      expect(sampleValue(m, 'baton_crl_age_seconds', { ca_id: ca.record.id })).toBe(age);
      expect(sampleValue(m, 'baton_ca_expiry_seconds', { ca_id: ca.record.id })).toBe(
        (ca.record.notAfter.getTime() - t.clock.now().getTime()) / 1000,
      );
    }
  });

  it('keeps serving metrics when the database fails: CRL ages left out, active nodes as last seen', async () => {
    const nodes = t.ca.storage.nodes;
    const countActive = nodes.countActive;
    nodes.countActive = () => Promise.reject(new Error('database down'));
    try {
      const m = await scrape();
      expect(sampleValue(m, 'baton_active_nodes')).toBe(1);
      expect(sampleValue(m, 'baton_crl_age_seconds')).toBeUndefined();
      expect(sampleValue(m, 'baton_metrics_scrape_errors_total')).toBe(1);
      expect(sampleValue(m, 'baton_revocation_feed_waiters')).toBe(0);
    } finally {
      nodes.countActive = countActive;
    }
  });
});
