import { X509Certificate } from 'node:crypto';
import { certsOf, errorCode } from '../support/load-client';
import { crlContents } from '../support/revocation-checks';
import { describeEachBackend } from '../support/database';
import { callAs, https } from '../support/https';
import { attestedNode, type IssuanceBody, keyAndCsr, renew } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir } from '../support/tools';

/**
 * Issue 8, item 2: a server whose clock jumps backwards or forwards (the in-process server's
 * FakeClock moved between requests). What the server does, and what this suite holds it to:
 *
 * - Every certificate is dated by the server's clock at issuance: notBefore = clock − 60 s (the
 *   allowed backdating), never later, whichever way the clock jumped. A backwards jump therefore
 *   issues certificates that start earlier than ones issued before it; a forward jump issues
 *   certificates that start in the real future (the server trusts its clock; NTP is the fix).
 * - A certificate issued before a backwards jump whose notBefore is now in the server's future is
 *   still accepted for renewal and workload SVIDs: the server checks its records (status,
 *   notAfter), and it issued that certificate itself.
 * - CRL thisUpdate never goes backwards: after a backwards jump a new CRL keeps the thisUpdate of
 *   the latest one (crl-publisher.ts), so consecutive CRLs of a CA are non-decreasing and their
 *   numbers keep growing. After a forward jump that is later undone, CRLs stay dated at the
 *   forward time until the clock catches up (clients with a correct clock see a thisUpdate in
 *   the future for that long).
 */
const TD = 'clock.example';
const MIN = 60_000;
const HOUR = 3600_000;
const BACKDATE_MS = 60_000;

describeEachBackend('faults: the server clock jumps', (backend) => {
  let t: TestServer;
  // Made in beforeAll: a skipped suite must not leave a directory behind.
  let dir: ReturnType<typeof tempDir>;
  beforeAll(async () => {
    dir = tempDir();
    t = await startTestServer({ backend, trustDomain: TD });
  });
  afterAll(async () => {
    await t.close();
    dir?.cleanup();
  });

  it('issues nothing dated after clock − 60 s and keeps CRL thisUpdate monotonic across jumps', async () => {
    const admin = await t.issueAdmin();
    const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);
    const t0 = t.clock.now().getTime();
    const node = await attestedNode(t);
    let cred: { cert: string; key: string } = { cert: node.cert, key: node.key };
    const nodeId = node.body.node_id!;
    expect(
      (
        await adminCall('POST', '/v1/admin/entries', {
          name: 'web',
          spiffe_id: `spiffe://${TD}/web`,
          parent: nodeId,
        })
      ).status,
    ).toBe(201);
    const issuedAt: { serial: string; clock: number; notBefore: number; step: string }[] = [];
    const noteIssued = (b: IssuanceBody, step: string) =>
      issuedAt.push({
        serial: b.serial,
        clock: t.clock.now().getTime(),
        notBefore: Date.parse(new X509Certificate(certsOf(b.certificate_chain)[0]!).validFrom),
        step,
      });
    noteIssued(node.body, 'attest at t0');
    const crlThisUpdates: { step: string; thisUpdate: number; number: bigint }[] = [];
    const fetchCrl = async (step: string) => {
      const r = await https(`${t.url}/v1/crl`, { ca: t.bundle });
      expect(r.status).toBe(200);
      const c = await crlContents(r.body, dir.path);
      const thisUpdate = Date.parse(String(r.headers['last-modified']));
      crlThisUpdates.push({ step, thisUpdate, number: c.number });
    };
    await fetchCrl('t0');

    // The TLS layer checks client certificates against the real clock (OpenSSL), the FakeClock only
    // moves the CA: a certificate issued while the server clock is ahead starts in the real future
    // and cannot be presented until then. So the workload SVIDs are minted with the main node's
    // certificate, renewed only while the clock is not ahead, and each forward step renews a spare
    // node instead (its new certificate is then refused, see below).
    const spares = [await attestedNode(t), await attestedNode(t)];
    const futureCreds: { cert: string; key: string }[] = [];
    const round = async (step: string, ahead: boolean) => {
      noteIssued((await attestedNode(t)).body, `attest ${step}`);
      const w = await keyAndCsr();
      const m = await https(`${t.url}/v1/workload-svids`, {
        method: 'POST',
        body: JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: w.csrPem }),
        ca: t.bundle,
        ...cred,
      });
      expect({ step, status: m.status, code: errorCode(m) }).toEqual({ step, status: 201, code: undefined });
      noteIssued(m.json<IssuanceBody>(), `workload ${step}`);
      const k = await keyAndCsr();
      const who = ahead ? spares.shift()! : { cert: cred.cert, key: cred.key };
      const r = await renew(t, who, k.csrPem);
      expect({ step, status: r.status, code: errorCode(r) }).toEqual({ step, status: 201, code: undefined });
      const body = r.json<IssuanceBody>();
      noteIssued(body, `renew ${step}`);
      if (ahead) futureCreds.push({ cert: body.certificate_chain, key: k.keyPem });
      else cred = { cert: body.certificate_chain, key: k.keyPem };
      const rv = await adminCall(
        'POST',
        `/v1/admin/certificates/${m.json<IssuanceBody>().serial}/revoke`,
        {},
      );
      expect({ step, status: rv.status }).toEqual({ step, status: 200 });
      await fetchCrl(step);
      await t.running.jobs.runOnce();
    };

    const steps: [string, number][] = [
      ['t0', t0],
      ['back 1h', t0 - HOUR],
      ['forward 1h (t0 + 1h)', t0 + HOUR],
      ['back to t0', t0 + 20_000],
      ['forward 1h again', t0 + HOUR + 5 * MIN],
    ];
    for (const [step, at] of steps) {
      t.clock.set(new Date(at));
      await round(step, at > Date.now() + BACKDATE_MS);
    }
    // A certificate issued while the clock was ahead is refused by TLS (not yet valid) until the
    // real time reaches its notBefore: the node has to wait or attest again with a new token.
    t.clock.set(new Date(t0 + 30_000));
    const k = await keyAndCsr();
    const stuck = await renew(t, futureCreds[0], k.csrPem);
    expect({ status: stuck.status, code: errorCode(stuck) }).toEqual({
      status: 401,
      code: 'ERR_NOT_AUTHENTICATED',
    });

    // Every certificate: notBefore is the server clock at issuance minus the backdating (to the
    // second, X.509's resolution), never later.
    for (const i of issuedAt)
      expect({ step: i.step, notBefore: i.notBefore }).toEqual({
        step: i.step,
        notBefore: Math.floor((i.clock - BACKDATE_MS) / 1000) * 1000,
      });
    // The same, for every row the CA recorded (admin and server certificates included).
    const rows = (await t.db.knex('certificates').select('serial', 'not_before', 'created_at')) as {
      serial: string;
      not_before: Date;
      created_at: Date;
    }[];
    for (const r of rows)
      expect({
        serial: r.serial,
        backdate: new Date(r.created_at).getTime() - new Date(r.not_before).getTime(),
      }).toEqual({
        serial: r.serial,
        backdate: BACKDATE_MS,
      });

    // CRLs: per CA, as the number grows thisUpdate never decreases; numbers never repeat.
    const crls = (await t.db.knex('crls').orderBy('crl_number')) as {
      ca_id: string;
      crl_number: string;
      this_update: Date;
    }[];
    const lastByCa = new Map<string, number>();
    for (const c of crls) {
      const tu = new Date(c.this_update).getTime();
      expect(tu).toBeGreaterThanOrEqual(lastByCa.get(c.ca_id) ?? 0);
      lastByCa.set(c.ca_id, tu);
    }
    expect(new Set(crls.map((c) => c.crl_number)).size).toBe(crls.length);
    for (let i = 1; i < crlThisUpdates.length; i++) {
      expect(crlThisUpdates[i]!.thisUpdate).toBeGreaterThanOrEqual(crlThisUpdates[i - 1]!.thisUpdate);
      expect(crlThisUpdates[i]!.number).toBeGreaterThan(crlThisUpdates[i - 1]!.number);
    }
    // After "back to t0", the CRL is still dated at the forward time: held, not rewound.
    const back = crlThisUpdates.find((c) => c.step === 'back to t0')!;
    expect(back.thisUpdate).toBeGreaterThanOrEqual(Math.floor((t0 + HOUR) / 1000) * 1000);

    console.log(
      `faults/clock [${backend}]: ${steps.length} clock settings (${steps.map(([s]) => s).join(' → ')}); ${issuedAt.length} certificates issued, each notBefore = server clock − 60 s; ${rows.length} certificate rows and ${crls.length} CRL rows checked; CRL thisUpdate by step: ${crlThisUpdates
        .map((c) => `${c.step} ${new Date(c.thisUpdate).toISOString().slice(11, 19)} #${c.number}`)
        .join(', ')}`,
    );
  }, 60_000);
});
