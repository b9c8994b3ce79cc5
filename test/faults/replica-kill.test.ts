import { performance } from 'node:perf_hooks';
import { type Cluster, createToken, serverErrors, startCluster } from '../support/cluster';
import {
  attestOnce,
  errorCode,
  Ledger,
  mintOnce,
  type NodeCred,
  pool,
  renewOnce,
  sleep,
  withFailover,
} from '../support/load-client';
import { describePostgres } from '../support/database';
import { keyAndCsr } from '../support/node-client';

/**
 * Issue 8, item 2: `kill -9` of a replica under load. Clients move to another replica on a network
 * error; afterwards every certificate a client received is in the database, every token use is one
 * attestation with its certificate (no token half-spent), and no node is left without one.
 */
const TD = 'kill.example';
const NODES = 8;
const ONE_USE_TOKENS = 50;
const MULTI_USES = 50;
const ROUNDS = 10;
const CONCURRENCY = 12;

describePostgres('faults: kill -9 of a replica under load', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({ replicas: 3, trustDomain: TD });
  }, 60_000);
  afterAll(async () => {
    await c?.close();
  });

  it('clients fail over, and the database holds every certificate received and no half-spent token', async () => {
    const ledger = new Ledger();
    const urls = () => c.urls();
    const spiffe = (i: number) => `spiffe://${TD}/wl/${i}`;

    const prep = await createToken(c, urls()[0]!, { uses: NODES });
    const nodes: NodeCred[] = [];
    for (let i = 0; i < NODES; i++) {
      const a = await attestOnce(ledger, urls()[i % 3]!, c.bundle, prep.token);
      expect(a.r.status).toBe(201);
      nodes.push(a.cred!);
      const e = await c.adminCall(urls()[0]!, 'POST', '/v1/admin/entries', {
        name: `wl-${i}`,
        spiffe_id: spiffe(i),
        parent: a.cred!.nodeId,
      });
      expect(e.status).toBe(201);
    }
    const oneUse = await Promise.all(
      Array.from({ length: ONE_USE_TOKENS }, (_, i) => createToken(c, urls()[i % 3]!, { uses: 1 })),
    );
    const multi = await createToken(c, urls()[1]!, { uses: MULTI_USES });
    const planned = ONE_USE_TOKENS + MULTI_USES + NODES * ROUNDS * 2;

    let failovers = 0;
    let ambiguous = 0;
    const outcomes = new Map<string, number>();
    const note = (what: string): void => void outcomes.set(what, (outcomes.get(what) ?? 0) + 1);
    const unexpected: string[] = [];

    const attestTask = (token: string, i: number) => async () => {
      const key = await keyAndCsr();
      const f = await withFailover(urls, i, (u) => attestOnce(ledger, u, c.bundle, token, key));
      failovers += f.failovers;
      if (f.ambiguous) ambiguous++;
      const status = f.last?.r.status;
      // Only a lost response may explain a refusal: the lost try spent the use or certified the key.
      const code = f.last ? errorCode(f.last.r) : 'none';
      if (status === 201) note('attest 201');
      else if (f.ambiguous && (code === 'ERR_TOKEN_INVALID' || code === 'ERR_KEY_REUSED'))
        note(`attest lost response, then ${code}`);
      else unexpected.push(`attest ${status} ${code} (ambiguous ${f.ambiguous})`);
    };
    const nodeTask = (i: number) => async () => {
      let cred = nodes[i]!;
      for (let k = 0; k < ROUNDS; k++) {
        const key = await keyAndCsr();
        const f = await withFailover(urls, i + k, (u) => renewOnce(ledger, u, c.bundle, cred, key));
        failovers += f.failovers;
        if (f.ambiguous) ambiguous++;
        if (f.last?.cred) {
          cred = f.last.cred;
          note('renew 201');
        } else if (f.ambiguous && f.last && errorCode(f.last.r) === 'ERR_CERT_SUPERSEDED') {
          // The killed replica renewed and the answer was lost: this node needs a new token.
          note('renew lost response, then ERR_CERT_SUPERSEDED');
          return;
        } else {
          unexpected.push(`renew ${f.last?.r.status} ${f.last && errorCode(f.last.r)}`);
          return;
        }
        const wkey = await keyAndCsr();
        const m = await withFailover(urls, i + k + 1, (u) =>
          mintOnce(ledger, u, c.bundle, cred, spiffe(i), wkey),
        );
        failovers += m.failovers;
        if (m.ambiguous) ambiguous++;
        if (m.last?.serial) note('workload 201');
        else if (m.ambiguous && m.last && errorCode(m.last.r) === 'ERR_KEY_REUSED')
          note('workload lost response, then ERR_KEY_REUSED');
        else unexpected.push(`workload ${m.last?.r.status} ${m.last && errorCode(m.last.r)}`);
      }
    };

    // The faults: kill -9 of r1 a fifth in, at once a new r1 (it takes a second to start), kill -9
    // of r2 half way: for a while r0 carries everything.
    const faults: string[] = [];
    let loadDone = false;
    const at = async (fraction: number) => {
      const deadline = performance.now() + 60_000;
      while (!loadDone && ledger.requests < planned * fraction && performance.now() < deadline)
        await sleep(10);
    };
    const fault = (what: string) =>
      faults.push(`${what} after ${ledger.requests} requests${loadDone ? ' (load already over)' : ''}`);
    const chaos = async () => {
      await at(0.2);
      await c.killReplica(1);
      fault('kill -9 r1');
      const restarted = c.startReplica(1).then(() => fault('r1 restarted'));
      await at(0.5);
      await c.killReplica(2);
      fault('kill -9 r2');
      await restarted;
    };

    const t0 = performance.now();
    const load = Promise.all([
      pool(CONCURRENCY, [
        ...oneUse.map((t, i) => attestTask(t.token, i)),
        ...Array.from({ length: MULTI_USES }, (_, i) => attestTask(multi.token, i)),
      ]),
      ...nodes.map((_, i) => nodeTask(i)()),
    ]).finally(() => {
      loadDone = true;
    });
    await Promise.all([load, chaos()]);
    const loadMs = performance.now() - t0;
    expect(faults).toHaveLength(3);
    expect(faults.filter((f) => f.includes('load already over'))).toEqual([]);
    if (unexpected.length) console.log(serverErrors(c));
    expect(unexpected).toEqual([]);

    // Every certificate a client received is recorded, byte for byte.
    const rows = (await c.knex('certificates').select('serial', 'der', 'kind', 'status', 'node_id')) as {
      serial: string;
      der: Buffer;
      kind: string;
      status: string;
      node_id: string | null;
    }[];
    const bySerial = new Map(rows.map((r) => [r.serial, r]));
    for (const got of ledger.received) {
      expect(bySerial.get(got.serial)?.kind).toBe(got.kind);
      expect(Buffer.compare(bySerial.get(got.serial)!.der, got.der)).toBe(0);
    }
    // No token half-spent: each use is one recorded attestation whose certificate exists.
    const tokens = (await c.knex('join_tokens').select('id', 'uses_allowed', 'uses_left')) as {
      id: string;
      uses_allowed: number;
      uses_left: number;
    }[];
    const attested = (await c
      .knex('audit_log')
      .where({ event: 'node.attested' })
      .select(
        c.knex.raw("details->>'token_id' as token_id"),
        c.knex.raw("details->>'serial' as serial"),
      )) as {
      token_id: string;
      serial: string;
    }[];
    for (const t of tokens) {
      const uses = attested.filter((a) => a.token_id === t.id);
      expect({ id: t.id, spent: t.uses_allowed - t.uses_left }).toEqual({ id: t.id, spent: uses.length });
      for (const u of uses) expect(bySerial.get(u.serial)?.kind).toBe('node');
    }
    // No node without a certificate, and none with two valid ones (renewal supersedes atomically).
    const nodeRows = (await c.knex('nodes').select('id')) as { id: string }[];
    for (const n of nodeRows) {
      const certs = rows.filter((r) => r.node_id === n.id && r.kind === 'node');
      expect(certs.length).toBeGreaterThan(0);
      expect(certs.filter((r) => r.status === 'valid').length).toBeLessThanOrEqual(1);
    }
    // The killed replicas' transactions are gone: no session stays idle in a transaction. The live
    // replicas' own short transactions (background jobs) may be between statements at any moment,
    // so only a session idle in a transaction for over 2 s counts, checked for up to 10 s.
    const stuckCount = async () =>
      (
        await c.knex.raw(
          "select count(*)::int as n from pg_stat_activity where datname = current_database() and state like 'idle in transaction%' and state_change < now() - interval '2 seconds'",
        )
      ).rows[0].n as number;
    let stuck = await stuckCount();
    for (let i = 0; i < 20 && stuck > 0; i++) {
      await sleep(500);
      stuck = await stuckCount();
    }
    expect(stuck).toBe(0);

    const delivered = new Set(ledger.received.map((r) => r.serial));
    const undelivered = attested.filter((a) => !delivered.has(a.serial)).length;
    console.log(
      [
        `faults/kill: ${Math.round(loadMs)} ms of load; faults injected: ${faults.join(', ')}`,
        `  ${ledger.summary(c.names)}`,
        `  client failovers: ${failovers}; requests that lost their response: ${ambiguous}`,
        `  outcomes: ${[...outcomes].map(([k, n]) => `${k}: ${n}`).join(', ')}`,
        `  records checked: ${ledger.received.length} received certificates against ${rows.length} rows; ${tokens.length} tokens against ${attested.length} attestations (${undelivered} issued whose response was lost); ${nodeRows.length} nodes`,
      ].join('\n'),
    );
  }, 120_000);
});
