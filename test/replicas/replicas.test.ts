import { performance } from 'node:perf_hooks';
import { type Cluster, createToken, serverErrors, startCluster } from '../support/cluster';
import {
  asNode,
  attestOnce,
  errorCode,
  Ledger,
  mintOnce,
  type NodeCred,
  pool,
  renewOnce,
  sleep,
} from '../support/load-client';
import { crlContents, ocspStatus } from '../support/revocation-checks';
import { describePostgres } from '../support/database';
import { https } from '../support/https';
import { tempDir } from '../support/tools';

/**
 * Issue 8, item 1: three `baton server` processes on one PostgreSQL, load spread over them at once
 * (attestations with 1-use tokens raced on every replica and a multi-use token, renewals, workload
 * SVIDs, node and certificate revocations), then checked against the database.
 */
const TD = 'replicas.example';
const STEADY = 8;
const VICTIMS = 4;
const ONE_USE_TOKENS = 24;
const MULTI_USES = 15;
const MULTI_ATTEMPTS = 30;
const ROUNDS = 5;
const CONCURRENCY = 16;
/** CrlService's in-memory cache of the current CRL. */
const CRL_CACHE_MS = 1000;

describePostgres('three replicas on one PostgreSQL', () => {
  let c: Cluster;
  // Made in beforeAll: a skipped suite must not leave a directory behind.
  let dir: ReturnType<typeof tempDir>;
  const rep = (i: number) => c.urls()[i % c.urls().length]!;
  const spiffe = (i: number) => `spiffe://${TD}/wl/${i}`;

  beforeAll(async () => {
    dir = tempDir();
    c = await startCluster({ replicas: 3, trustDomain: TD });
  }, 60_000);
  afterAll(async () => {
    await c?.close();
    dir?.cleanup();
  });

  it('load over three replicas at once loses nothing: serials, tokens, CRL numbers, revocation cascades', async () => {
    const ledger = new Ledger();
    const t0 = performance.now();

    // Preparation: nodes that renew and mint, victims to revoke mid-load, one entry each.
    const prep = await createToken(c, rep(0), { uses: STEADY + VICTIMS });
    const creds: NodeCred[] = [];
    for (const r of await Promise.all(
      Array.from({ length: STEADY + VICTIMS }, (_, i) => attestOnce(ledger, rep(i), c.bundle, prep.token)),
    )) {
      expect(r.r.status).toBe(201);
      creds.push(r.cred!);
    }
    for (const [i, n] of creds.entries()) {
      const e = await c.adminCall(rep(i), 'POST', '/v1/admin/entries', {
        name: `wl-${i}`,
        spiffe_id: spiffe(i),
        parent: n.nodeId,
      });
      expect(e.status).toBe(201);
    }
    const steady = creds.slice(0, STEADY);
    const victims = creds.slice(STEADY);
    const oneUse = await Promise.all(
      Array.from({ length: ONE_USE_TOKENS }, (_, i) => createToken(c, rep(i), { uses: 1 })),
    );
    const multi = await createToken(c, rep(1), { uses: MULTI_USES });

    // The load, all at once.
    const raceResults: { token: string; status: number }[] = [];
    const race = oneUse.flatMap((t, ti) =>
      [0, 1, 2].map((k) => async () => {
        const r = await attestOnce(ledger, rep(ti + k), c.bundle, t.token);
        raceResults.push({ token: t.id, status: r.r.status });
      }),
    );
    const multiResults: number[] = [];
    const multiTasks = Array.from({ length: MULTI_ATTEMPTS }, (_, i) => async () => {
      multiResults.push((await attestOnce(ledger, rep(i), c.bundle, multi.token)).r.status);
    });
    const unexpected: string[] = [];
    const workloadSerials: string[] = [];
    // Each steady node: renew on one replica, mint its workload SVID on the next, ROUNDS times.
    const steadyTasks = steady.map((start, i) => async () => {
      let cred = start;
      for (let k = 0; k < ROUNDS; k++) {
        const r = await renewOnce(ledger, rep(i + k), c.bundle, cred);
        if (!r.cred) unexpected.push(`renew ${r.r.status} ${errorCode(r.r)}`);
        else cred = r.cred;
        const m = await mintOnce(ledger, rep(i + k + 1), c.bundle, cred, spiffe(i));
        if (!m.serial) unexpected.push(`mint ${m.r.status} ${errorCode(m.r)}`);
        else workloadSerials.push(m.serial);
      }
      steady[i] = cred;
    });
    // Victims do the same until the CA refuses them; an admin revokes each on some replica.
    const victimRefusals: string[] = [];
    const victimTasks = victims.map((start, v) => async () => {
      let cred = start;
      for (let k = 0; k < 3 * ROUNDS; k++) {
        const r = await renewOnce(ledger, rep(v + k), c.bundle, cred);
        if (!r.cred) {
          victimRefusals.push(`${r.r.status} ${errorCode(r.r)}`);
          return;
        }
        cred = r.cred;
        const m = await mintOnce(ledger, rep(v + k + 2), c.bundle, cred, spiffe(STEADY + v));
        if (!m.serial) {
          victimRefusals.push(`${m.r.status} ${errorCode(m.r)}`);
          return;
        }
      }
    });
    const revokeTasks = victims.map((n, v) => async () => {
      await new Promise((r) => setTimeout(r, 150 + 200 * v));
      const r = await c.adminCall(rep(v + 1), 'POST', `/v1/admin/nodes/${n.nodeId}/revoke`, {
        reason: 'key-compromise',
      });
      ledger.requests++;
      if (r.status !== 200) unexpected.push(`node revoke ${r.status} ${errorCode(r)}`);
    });
    // Certificate revocations of workload SVIDs, as they appear.
    let certRevocations = 0;
    const certRevokeTask = async () => {
      for (let k = 0; k < 6; k++) {
        const deadline = performance.now() + 20_000;
        while (!workloadSerials[k * 4] && performance.now() < deadline) await sleep(50);
        const serial = workloadSerials[k * 4];
        if (!serial) break;
        const r = await c.adminCall(rep(k), 'POST', `/v1/admin/certificates/${serial}/revoke`, {});
        ledger.requests++;
        if (r.status === 200) certRevocations++;
        else unexpected.push(`cert revoke ${r.status} ${errorCode(r)}`);
      }
    };
    const tLoad = performance.now();
    await Promise.all([
      pool(CONCURRENCY, [...race, ...multiTasks]),
      ...steadyTasks.map((f) => f()),
      ...victimTasks.map((f) => f()),
      ...revokeTasks.map((f) => f()),
      certRevokeTask(),
    ]);
    const loadMs = performance.now() - tLoad;

    // What the clients saw.
    if (unexpected.length) console.log(serverErrors(c));
    expect(unexpected).toEqual([]);
    for (const t of oneUse) {
      const statuses = raceResults.filter((r) => r.token === t.id).map((r) => r.status);
      expect(statuses.sort()).toEqual([201, 401, 401]);
    }
    expect(multiResults.filter((s) => s === 201)).toHaveLength(MULTI_USES);
    expect(multiResults.filter((s) => s === 401)).toHaveLength(MULTI_ATTEMPTS - MULTI_USES);
    for (const refusal of victimRefusals) expect(refusal).toMatch(/^403 ERR_(NODE|CERT)_REVOKED$/);

    // The database: every certificate a client received is recorded, byte for byte; no duplicates.
    const serials = ledger.received.map((r) => r.serial);
    expect(new Set(serials).size).toBe(serials.length);
    const rows = (await c
      .knex('certificates')
      .select('serial', 'der', 'kind', 'status', 'node_id', 'issued_via')) as {
      serial: string;
      der: Buffer;
      kind: string;
      status: string;
      node_id: string | null;
      issued_via: string | null;
    }[];
    const bySerial = new Map(rows.map((r) => [r.serial, r]));
    expect(bySerial.size).toBe(rows.length);
    for (const got of ledger.received) {
      const row = bySerial.get(got.serial);
      expect(row?.kind).toBe(got.kind);
      expect(Buffer.compare(row!.der, got.der)).toBe(0);
    }
    const dupDer = await c.knex.raw(
      'select count(*)::int as n from (select der from certificates group by der having count(*) > 1) d',
    );
    expect(dupDer.rows[0].n).toBe(0);

    // Tokens: each 1-use token spent once, the multi-use one exactly MULTI_USES times, and every
    // use is one attestation with its certificate recorded.
    const tokenIds = [...oneUse.map((t) => t.id), multi.id, prep.id];
    const tokens = (await c.knex('join_tokens').whereIn('id', tokenIds)) as {
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
      if (t.id !== multi.id && t.id !== prep.id) expect(t.uses_left).toBe(0);
    }
    expect(tokens.find((t) => t.id === multi.id)!.uses_left).toBe(0);

    // Revoked nodes: nothing of theirs is left valid or superseded, whatever raced the revocation.
    for (const v of victims) {
      const left = rows.filter(
        (r) => (r.node_id === v.nodeId || r.issued_via === v.nodeId) && r.status !== 'revoked',
      );
      expect(left.map((r) => `${r.serial} ${r.kind} ${r.status}`)).toEqual([]);
    }
    const revokedWorkloads = rows.filter((r) => r.kind === 'workload' && r.status === 'revoked').length;

    // CRLs: numbers unique and, per CA, thisUpdate never decreasing as the number grows; the DER
    // carries the number of its row.
    const crls = (await c.knex('crls').orderBy('crl_number')) as {
      ca_id: string;
      crl_number: string;
      this_update: Date;
      der: Buffer;
    }[];
    const numbers = crls.map((r) => BigInt(r.crl_number));
    expect(new Set(numbers).size).toBe(numbers.length);
    const lastByCa = new Map<string, number>();
    for (const r of crls) {
      const t = new Date(r.this_update).getTime();
      expect(t).toBeGreaterThanOrEqual(lastByCa.get(r.ca_id) ?? 0);
      lastByCa.set(r.ca_id, t);
      expect((await crlContents(r.der, dir.path)).number).toBe(BigInt(r.crl_number));
    }

    const perKind = (k: string) => ledger.received.filter((r) => r.kind === k).length;
    console.log(
      [
        `replicas: load of ${Math.round(loadMs)} ms (total ${Math.round(performance.now() - t0)} ms) over 3 replicas`,
        `  ${ledger.summary(c.names)}`,
        `  issued to clients: ${perKind('node')} node, ${perKind('workload')} workload certificates`,
        `  1-use tokens: ${ONE_USE_TOKENS} raced 3x each -> ${raceResults.filter((r) => r.status === 201).length} issued; multi-use (${MULTI_USES} uses): ${MULTI_ATTEMPTS} attempts -> ${multiResults.filter((s) => s === 201).length} issued`,
        `  revocations: ${VICTIMS} nodes (their clients then refused: ${victimRefusals.length}), ${certRevocations} certificates; ${revokedWorkloads} workload certificates revoked in total`,
        `  records checked: ${ledger.received.length} received certificates against ${rows.length} rows, ${tokens.length} tokens against ${attested.length} attestations, ${crls.length} CRLs (numbers ${numbers[0]}..${numbers[numbers.length - 1]})`,
      ].join('\n'),
    );
  }, 120_000);

  it('a revocation made on one replica is enforced by the other two at once', async () => {
    const ledger = new Ledger();
    const [r0, r1, r2] = c.urls() as [string, string, string];
    const tok = await createToken(c, r0, { uses: 2 });
    const victim = (await attestOnce(ledger, r0, c.bundle, tok.token)).cred!;
    const watcher = (await attestOnce(ledger, r1, c.bundle, tok.token)).cred!;

    // Before: good everywhere, not on any CRL (this also warms the replicas' CRL caches).
    const crlOf = async (url: string) => {
      const r = await https(`${url}/v1/crl`, { ca: c.bundle });
      expect(r.status).toBe(200);
      return crlContents(r.body, dir.path);
    };
    const numberBefore = new Map<string, bigint>();
    for (const url of [r1, r2]) {
      expect(await ocspStatus(url, victim.cert, c.bundle, dir.path)).toBe('good');
      const crl = await crlOf(url);
      expect(crl.serials).not.toContain(victim.serial);
      numberBefore.set(url, crl.number);
    }
    const since = (await https(`${r2}/v1/revocations?since=0&wait=0`, asNode(watcher, c.bundle))).json<{
      last: number;
    }>().last;
    let wokeAt = 0;
    const poll = https(`${r2}/v1/revocations?since=${since}&wait=30`, asNode(watcher, c.bundle)).then((r) => {
      wokeAt = performance.now();
      return r;
    });
    await new Promise((r) => setTimeout(r, 300));

    const start = performance.now();
    const revoked = await c.adminCall(r0, 'POST', `/v1/admin/nodes/${victim.nodeId}/revoke`, {});
    const done = performance.now();
    expect(revoked.status).toBe(200);

    // At once, on the other replicas: renewal refused, OCSP revoked, the CRL lists it.
    const renewals = await Promise.all([r1, r2].map((u) => renewOnce(ledger, u, c.bundle, victim)));
    for (const r of renewals) {
      expect(r.r.status).toBe(403);
      expect(errorCode(r.r)).toMatch(/^ERR_(NODE|CERT)_REVOKED$/);
    }
    const ocsp = await Promise.all([r1, r2].map((u) => ocspStatus(u, victim.cert, c.bundle, dir.path)));
    expect(ocsp).toEqual(['revoked', 'revoked']);
    // A replica keeps the CRL it read from the database for up to 1 s (server/crl-service.ts), so
    // the others list the revocation within that second; HTTP caches may keep a CRL longer anyway
    // (Cache-Control max-age), which is why OCSP and the feed are the immediate paths.
    const crlLag: number[] = [];
    for (const url of [r1, r2]) {
      let listed = false;
      for (let k = 0; k < 40 && !listed; k++) {
        const crl = await crlOf(url);
        listed = crl.serials.includes(victim.serial);
        if (listed) expect(crl.number).toBeGreaterThan(numberBefore.get(url)!);
        else await sleep(50);
      }
      crlLag.push(Math.round(performance.now() - done));
      expect(listed).toBe(true);
    }
    for (const lag of crlLag) expect(lag).toBeLessThan(CRL_CACHE_MS + 1000);
    const feed = await poll;
    expect(feed.status).toBe(200);
    const events = feed.json<{ events: { node_id: string; serials: string[] }[] }>().events;
    expect(events.some((e) => e.node_id === victim.nodeId && e.serials.includes(victim.serial))).toBe(true);
    const wakeAfterRevoke = Math.round(wokeAt - done);
    // The feed polls the shared table every 200 ms: another replica's waiter wakes well within 1 s.
    expect(wakeAfterRevoke).toBeLessThan(1000);
    console.log(
      `replicas: revocation on r0 (${Math.round(done - start)} ms) -> renewals on r1,r2 refused (${renewals
        .map((r) => errorCode(r.r))
        .join(
          ', ',
        )}), OCSP on r1,r2 ${ocsp.join(', ')}, CRLs of r1,r2 list it ${crlLag.join(', ')} ms after, feed long-poll on r2 woke ${wakeAfterRevoke} ms after the revocation returned`,
    );
  }, 60_000);
});
