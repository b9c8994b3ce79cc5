import type { CaStatus } from '../../services/ca/src/domain/root-rotation';
import { type Cluster, startCluster } from '../support/cluster';
import { describePostgres } from '../support/database';
import { https } from '../support/https';
import { keyAndCsr } from '../support/node-client';

/**
 * Issue 18, root rotation under faults, on PostgreSQL with two replicas:
 * - a start or a finish killed mid-way (kill -9 of the replica running it, at several moments) leaves
 *   the CA set as before the step or as after it, never between, and the next command completes it;
 * - two starts at once on two replicas give one rotation;
 * - the replicas agree on the bundle and the status after every step.
 */

const TD = 'rotkill.example.org';
const CERT = /-----BEGIN CERTIFICATE-----/g;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describePostgres('faults: root rotation killed mid-way, and replicas agreeing at every step', () => {
  let c: Cluster;
  let admin: { cert: string; key: string };
  beforeAll(async () => {
    c = await startCluster({ replicas: 2, trustDomain: TD });
    admin = c.admin;
  }, 60_000);
  afterAll(async () => {
    await c?.close();
  });

  /** As the admin (the server's certificate is not the point here: the bundle changes under us). */
  const call = (url: string, method: string, path: string, body?: unknown) =>
    https(`${url}${path}`, {
      method,
      cert: admin.cert,
      key: admin.key,
      agent: false,
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
  const status = async (url: string): Promise<CaStatus> => {
    const r = await call(url, 'GET', '/v1/admin/ca');
    expect({ status: r.status, body: r.status === 200 ? '' : r.body.toString() }).toEqual({
      status: 200,
      body: '',
    });
    return r.json<CaStatus>();
  };
  const bundleOf = async (url: string) => (await https(`${url}/v1/bundle`, { agent: false })).body.toString();
  /** A new admin certificate from the current signing CA, so the admin outlives a finish. */
  const renewAdmin = async (url: string) => {
    const k = await keyAndCsr();
    const r = await call(url, 'POST', '/v1/admin/admins', { name: 'admin', role: 'admin', csr: k.csrPem });
    expect(r.status).toBe(201);
    admin = { cert: r.json<{ certificate_chain: string }>().certificate_chain, key: k.keyPem };
  };
  /** The CA set is whole: stable with one root, or rotating with the signing CA certified by both. */
  const expectWhole = (s: CaStatus) => {
    const active = s.cas.filter((x) => x.kind === 'intermediate' && x.active);
    expect(active).toHaveLength(1);
    expect(s.signing_ca.parent).toBe(s.roots[0]!.id);
    if (s.phase === 'stable') {
      expect(s.roots).toHaveLength(1);
    } else {
      expect(s.roots).toHaveLength(2);
      expect(s.signing_ca.cross_signed_by).toEqual([s.roots[1]!.id]);
    }
  };
  const untilAgreed = async () => {
    for (let i = 0; i < 50; i++) {
      const [a, b] = await Promise.all(c.urls().map(bundleOf));
      if (a === b) return a!;
      await sleep(200);
    }
    throw new Error('the replicas did not agree on the bundle');
  };

  it('two starts at once on two replicas: one rotation, one ERR_ROTATION_IN_PROGRESS', async () => {
    const [u0, u1] = c.urls();
    const answers = await Promise.all([u0!, u1!].map((u) => call(u, 'POST', '/v1/admin/ca/rotate-root', {})));
    expect(answers.map((a) => a.status).sort()).toEqual([201, 409]);
    expect(answers.find((a) => a.status === 409)!.json<{ error: { code: string } }>().error.code).toBe(
      'ERR_ROTATION_IN_PROGRESS',
    );
    for (const u of c.urls()) expectWhole(await status(u));
    expect((await untilAgreed()).match(CERT)).toHaveLength(2);
    // Once both replicas have reloaded (a replica that has not would still sign with the old CA).
    await renewAdmin(u0!);
    // Finished on the other replica, and the first follows.
    const done = await call(u1!, 'POST', '/v1/admin/ca/rotate-root', { finish: true, force: true });
    expect(done.status).toBe(200);
    expect((await untilAgreed()).match(CERT)).toHaveLength(1);
    const [s0, s1] = await Promise.all(c.urls().map(status));
    expect(s0).toEqual(s1);
    expect(s0!.phase).toBe('stable');
  }, 60_000);

  it('kill -9 of the replica running a start or a finish, at any moment: whole or undone, then completed', async () => {
    const outcomes: string[] = [];
    for (const delayMs of [0, 10, 20, 25, 30, 35, 40, 50, 80]) {
      const [u0, u1] = c.urls();
      const before = await status(u1!);
      const step = before.phase === 'stable' ? {} : { finish: true, force: true };
      const pending = call(u0!, 'POST', '/v1/admin/ca/rotate-root', step).then(
        (r) => String(r.status),
        () => 'killed',
      );
      await sleep(delayMs);
      await c.killReplica(0);
      const answered = await pending;
      // The other replica reads the database as it is: one whole state or the other.
      const after = await status(u1!);
      expectWhole(after);
      const moved = after.phase !== before.phase;
      outcomes.push(`${before.phase}+${delayMs}ms: ${answered}, ${moved ? 'done' : 'undone'}`);
      // An answer of 201/200 means the step committed.
      if (answered === '201' || answered === '200') expect(moved).toBe(true);
      await c.startReplica(0);
      // The replicas agree; a step that did not happen is still refused as what it would repeat
      // (a start while rotating, a finish while stable): the state explains itself.
      const bundle = await untilAgreed();
      if (after.phase === 'rotating') {
        // From a replica that has reloaded: a certificate of the new signing CA outlives the finish.
        await renewAdmin(u1!);
        if (!moved) expect((await call(u1!, 'POST', '/v1/admin/ca/rotate-root', {})).status).toBe(409);
      } else if (!moved) {
        expect((await call(u1!, 'POST', '/v1/admin/ca/rotate-root', { finish: true })).status).toBe(409);
      }
      expect(bundle.match(CERT)).toHaveLength(after.phase === 'rotating' ? 2 : 1);
      const [s0, s1] = await Promise.all(c.urls().map(status));
      expect(s0).toEqual(s1);
    }
    // Which kills came before the commit and which after is the machine's timing; each state was whole.
    console.info(`root rotation kills: ${outcomes.join('; ')}`);
  }, 240_000);
});
