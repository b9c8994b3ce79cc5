import { createPrivateKey, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createIntermediateCa } from '../../services/ca/src/domain/ca-hierarchy';
import { kekFromBase64, unwrapKey, wrapKey } from '../../services/ca/src/pki/kek';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { keyObjectSigner } from '../../services/ca/src/pki/signer';
import { baton, startServerProcess } from '../support/cli';
import { type Cluster, createToken, startCluster } from '../support/cluster';
import { attestOnce, certsOf, errorCode, Ledger, mintOnce, renewOnce, sleep } from '../support/load-client';
import { describePostgres } from '../support/database';
import { https } from '../support/https';
import { keyAndCsr } from '../support/node-client';
import { run } from '../support/tools';

/**
 * Issue 8, item 2: the CA signing key unavailable. At start a wrong KEK stops the server (exit 1,
 * one line). At run time the CA set changes under a replica: a rotation made with ANOTHER KEK, so
 * this replica cannot unwrap the new active intermediate. It must answer issuance with 503 +
 * Retry-After and /readyz 503, and never go on signing with the intermediate it had (no
 * fallback); once the key is readable again it resumes by itself.
 */
const TD = 'kek.example';

describePostgres('faults: the CA signing key unavailable', () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({ replicas: 1, trustDomain: TD });
  }, 60_000);
  afterAll(async () => {
    await c?.close();
  });

  it('a wrong KEK at start: exit 1 with one line', () => {
    const r = baton(['server', '--listen', '127.0.0.1:0'], {
      ...c.env,
      BATON_KEK: randomBytes(32).toString('base64'),
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /^baton: the key-encryption key \(kek-[0-9a-f]+\) is not the one .*\(ERR_KEK_INVALID\)\n$/,
    );
  });

  it('a rotation under another KEK: 503 + Retry-After and /readyz 503, never the old intermediate', async () => {
    const ledger = new Ledger();
    const url = c.urls()[0]!;
    const storage = knexStorage(c.knex);
    const kekA = kekFromBase64(c.env.BATON_KEK!, 'test');
    const kekB = kekFromBase64(randomBytes(32).toString('base64'), 'other');
    const token = await createToken(c, url, { uses: 50 });
    const node = (await attestOnce(ledger, url, c.bundle, token.token)).cred!;
    expect(
      (
        await c.adminCall(url, 'POST', '/v1/admin/entries', {
          name: 'web',
          spiffe_id: `spiffe://${TD}/web`,
          parent: node.nodeId,
        })
      ).status,
    ).toBe(201);
    const issuerOf = (chain: string) =>
      run('openssl', ['x509', '-noout', '-subject'], certsOf(chain)[1]!).out;
    const before = await storage.cas.listCas();
    const oldInter = before.find((x) => x.kind === 'intermediate' && x.active)!;
    expect(issuerOf(node.cert)).toContain(oldInter.id.slice(3));

    // The rotation, done by a tool that holds another KEK: the new intermediate is wrapped under B.
    const root = before.find((x) => x.kind === 'root')!;
    const rootKey = createPrivateKey({
      key: unwrapKey(kekA, root.wrappedKey, root.id),
      format: 'der',
      type: 'pkcs8',
    });
    const installation = (await storage.cas.getInstallation())!;
    const created = createIntermediateCa({
      trustDomain: TD,
      now: new Date(),
      kek: kekB,
      root: { record: root, signer: keyObjectSigner(rootKey) },
      publicUrl: installation.publicUrl,
    });
    const rotatedAt = new Date();
    await storage.transaction((tx) => tx.cas.addActiveIntermediate(created.record));
    const rotatedPerf = performance.now();

    // The replica notices within its background interval (1 s here).
    let noticedAt = 0;
    for (let k = 0; k < 100 && !noticedAt; k++) {
      const r = await ledger.call(url, '/readyz', { ca: c.bundle });
      if (r.status === 503) noticedAt = performance.now();
      else await sleep(100);
    }
    expect(noticedAt).toBeGreaterThan(0);
    const noticedDate = new Date();
    const ready = await ledger.call(url, '/readyz', { ca: c.bundle });
    expect(ready.status).toBe(503);
    expect(ready.headers['retry-after']).toMatch(/^\d+$/);
    expect(ready.json()).toEqual({ status: 'not ready', checks: { database: true, ca_keys: false } });

    // Issuance: 503 + Retry-After, ERR_CA_UNAVAILABLE, nothing spent, nothing signed.
    const usesBefore = (await c.knex('join_tokens').where({ id: token.id }).first()).uses_left as number;
    const attempts = [
      ['attest', (await attestOnce(ledger, url, c.bundle, token.token)).r],
      ['renew', (await renewOnce(ledger, url, c.bundle, node)).r],
      ['workload', (await mintOnce(ledger, url, c.bundle, node, `spiffe://${TD}/web`)).r],
    ] as const;
    for (const [what, r] of attempts) {
      expect({ what, status: r.status, code: errorCode(r), retryAfter: r.headers['retry-after'] }).toEqual({
        what,
        status: 503,
        code: 'ERR_CA_UNAVAILABLE',
        retryAfter: expect.stringMatching(/^\d+$/),
      });
    }
    expect((await c.knex('join_tokens').where({ id: token.id }).first()).uses_left).toBe(usesBefore);
    const signedMeanwhile = (await c.knex('certificates').where('created_at', '>=', noticedDate)) as {
      ca_id: string;
    }[];
    expect(signedMeanwhile).toEqual([]);
    // Revocation still works (it signs nothing new but CRLs of the CAs this replica holds).
    const rv = await c.adminCall(url, 'POST', `/v1/admin/nodes/${node.nodeId}/revoke`, {});
    expect(rv.status).toBe(200);

    // Restarting with the same KEK cannot load the CA set either: exit 1, one line.
    const restart = baton(['server', '--listen', '127.0.0.1:0'], c.env);
    expect(restart.status).toBe(1);
    expect(restart.stderr).toMatch(/^baton: .*\(ERR_KEK_INVALID\)\n$/);

    // The operator re-wraps the new key under the replicas' KEK: the replica resumes by itself.
    const pkcs8 = unwrapKey(kekB, created.record.wrappedKey, created.record.id);
    const rewrapped = wrapKey(kekA, pkcs8, created.record.id);
    await c
      .knex('cas')
      .where({ id: created.record.id })
      .update({ key_kek_id: rewrapped.kekId, key_blob: rewrapped.blob });
    let resumed = false;
    for (let k = 0; k < 100 && !resumed; k++) {
      resumed = (await ledger.call(url, '/readyz', { ca: c.bundle })).status === 200;
      if (!resumed) await sleep(100);
    }
    expect(resumed).toBe(true);
    const after = await attestOnce(ledger, url, c.bundle, token.token);
    expect(after.r.status).toBe(201);
    expect(issuerOf(after.cred!.cert)).toContain(created.record.id.slice(3));
    // And a process started now serves too.
    const fresh = await startServerProcess([], c.env);
    const k = await keyAndCsr();
    const viaFresh = await https(`${fresh.url}/v1/attest`, {
      method: 'POST',
      body: JSON.stringify({ method: 'join_token', token: token.token, csr: k.csrPem }),
      ca: c.bundle,
    });
    await fresh.stop();
    expect(viaFresh.status).toBe(201);

    const rows = (await c.knex('certificates').where('created_at', '>=', rotatedAt)) as { ca_id: string }[];
    const byOld = rows.filter((r) => r.ca_id === oldInter.id);
    console.log(
      `faults/kek: rotation under another KEK noticed in ${Math.round(noticedAt - rotatedPerf)} ms; ${attempts.length} issuance requests answered ${attempts
        .map(([w, r]) => `${w} ${r.status} ${errorCode(r)}`)
        .join(
          ', ',
        )}; restart with the same KEK: exit ${restart.status}; after re-wrapping: resumed, new certificates by ${created.record.id}; records checked: ${rows.length} certificates since the rotation, ${byOld.length} by the old intermediate (before the replica noticed), token uses unchanged by refused attempts; ${ledger.requests} requests`,
    );
  }, 90_000);
});
