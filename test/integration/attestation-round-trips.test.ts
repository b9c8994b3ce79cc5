import { sign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Knex } from 'knex';
import pg from 'pg';
import { x509popSignedBytes } from '../../services/ca/src/domain/attestation/x509pop-attestor';
import { fromPem } from '../../services/ca/src/pki/der-reader';
import { CorporatePki } from '../support/corporate-ca';
import { type Backend, describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { attest, type IssuanceBody, keyAndCsr, newToken } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir } from '../support/tools';

/**
 * Issue 20: attestation in at most two database round trips (after the challenge, for a method that
 * has one): the evidence's read (a join token with the node it binds, or the node of an x509pop
 * key; none for a multi-use token read moments ago), then one statement that spends the evidence and records the node, the certificate and the
 * audit row (storage/knex/attestation-statement.ts). Counted twice: every statement knex runs or is
 * told of (its `query` event, which the prepared-statement path emits too), and on PostgreSQL every
 * query the `pg` driver sends, whoever sends it, BEGIN and COMMIT included.
 */

/** The statements sent while `fn` runs, as knex and (on PostgreSQL) the pg driver saw them. */
async function countRoundTrips(
  knex: Knex,
  backend: Backend,
  fn: () => Promise<void>,
): Promise<{ knex: string[]; wire: string[] | null }> {
  const seen: string[] = [];
  const onQuery = (q: { sql: string }) => seen.push(q.sql);
  knex.on('query', onQuery);
  const wire: string[] = [];
  const original = pg.Client.prototype.query;
  if (backend === 'postgres') {
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const q = args[0] as string | { text?: string };
      wire.push(typeof q === 'string' ? q : (q.text ?? ''));
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof original;
  }
  try {
    await fn();
  } finally {
    knex.removeListener('query', onQuery);
    pg.Client.prototype.query = original;
  }
  return { knex: seen, wire: backend === 'postgres' ? wire : null };
}

/** One line of each statement, enough to name it in a failure message. */
const firstLines = (sql: string[]) => sql.map((s) => s.trim().split('\n')[0]!.slice(0, 80));

const ATTESTATION_STATEMENT = /with snap as \(\s*select xmin as version from nodes/;

describeEachBackend('attestation round trips (issue 20)', (backend) => {
  const dir = tempDir();
  const pki = new CorporatePki(dir.path);
  const provisioning = pki.root('Provisioning CA');
  const bundleFile = join(dir.path, 'provisioning.pem');
  let t: TestServer;

  beforeAll(async () => {
    writeFileSync(bundleFile, provisioning.pem);
    t = await startTestServer({ backend, serverFlags: { 'x509pop-ca': bundleFile } });
    // A first attestation opens the pool's connections, so that none is opened while counting.
    const { csrPem } = await keyAndCsr();
    expect((await attest(t, { method: 'join_token', token: await newToken(t), csr: csrPem })).status).toBe(
      201,
    );
  });
  afterAll(async () => {
    await t?.close();
    dir.cleanup();
  });

  const expectTwo = (counted: { knex: string[]; wire: string[] | null }, firstRead: RegExp) => {
    expect(firstLines(counted.knex)).toHaveLength(2);
    expect(counted.knex[0]).toMatch(firstRead);
    expect(counted.knex[1]).toMatch(ATTESTATION_STATEMENT);
    // On the wire too: two queries, no BEGIN or COMMIT around them.
    if (counted.wire) expect(firstLines(counted.wire)).toEqual(firstLines(counted.knex));
  };

  it('join token with several uses: the token read and the statement, then the statement alone', async () => {
    const token = await newToken(t, { uses: 3 });
    for (const expected of [2, 1]) {
      const { csrPem } = await keyAndCsr();
      let r: Awaited<ReturnType<typeof attest>> | undefined;
      const counted = await countRoundTrips(t.db.knex, backend, async () => {
        r = await attest(t, { method: 'join_token', token, csr: csrPem });
      });
      expect(r!.status).toBe(201);
      if (expected === 2) expectTwo(counted, /from join_tokens t left join nodes n on n.id = t.node_name/);
      else {
        // Read moments ago: the per-replica token cache (domain/token-cache.ts); the statement
        // checks the uses left itself.
        expect(firstLines(counted.knex)).toHaveLength(1);
        expect(counted.knex[0]).toMatch(ATTESTATION_STATEMENT);
        if (counted.wire) expect(firstLines(counted.wire)).toEqual(firstLines(counted.knex));
      }
    }
  });

  it.each([
    ['a new node of a 1-use token', {}],
    ['a new node bound by name', { nodeName: 'rt-new', nodeTtlMs: 7_200_000 }],
  ])('join token, %s: the token read and the statement', async (_name, tokenOptions) => {
    const token = await newToken(t, tokenOptions);
    const { csrPem } = await keyAndCsr();
    let r: Awaited<ReturnType<typeof attest>> | undefined;
    const counted = await countRoundTrips(t.db.knex, backend, async () => {
      r = await attest(t, { method: 'join_token', token, csr: csrPem });
    });
    expect(r!.status).toBe(201);
    expectTwo(counted, /from join_tokens t left join nodes n on n.id = t.node_name/);
  });

  it('join token, re-attesting a bound node: still two, and its previous certificate is superseded', async () => {
    const first = await attest(t, {
      method: 'join_token',
      token: await newToken(t, { nodeName: 'rt-again' }),
      csr: (await keyAndCsr()).csrPem,
    });
    expect(first.status).toBe(201);
    const token = await newToken(t, { nodeName: 'rt-again' });
    const { csrPem } = await keyAndCsr();
    let r: Awaited<ReturnType<typeof attest>> | undefined;
    const counted = await countRoundTrips(t.db.knex, backend, async () => {
      r = await attest(t, { method: 'join_token', token, csr: csrPem });
    });
    expect(r!.status).toBe(201);
    expectTwo(counted, /from join_tokens t left join nodes n on n.id = t.node_name/);
    const old = await t.ca.storage.certificates.findBySerial(first.json<IssuanceBody>().serial);
    expect(old!.status).toBe('superseded');
  });

  it.each([
    ['a new node', 1],
    ['the same provisioning key again (an existing node)', 2],
  ])('x509pop, %s: after the challenge, the node read and the statement', async (_name, times) => {
    const req = pki.newRequest('/CN=rt-node');
    const leafPem = pki.sign(req.csrFile, provisioning, {
      ext: ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature'],
      notBefore: new Date(t.clock.now().getTime() - 3600_000),
    });
    const leafKey = readFileSync(req.keyFile, 'utf8');
    for (let i = 0; i < times; i++) {
      const challenge = await https(`${t.url}/v1/attest/challenge`, {
        method: 'POST',
        body: JSON.stringify({ method: 'x509pop' }),
        ca: t.bundle,
      });
      expect(challenge.status).toBe(201);
      const nonce = challenge.json<{ nonce: string }>().nonce;
      const { csrPem } = await keyAndCsr();
      const signature = sign(
        'sha256',
        x509popSignedBytes(nonce, fromPem(csrPem, 'CERTIFICATE REQUEST')),
        leafKey,
      ).toString('base64');
      let r: Awaited<ReturnType<typeof attest>> | undefined;
      const counted = await countRoundTrips(t.db.knex, backend, async () => {
        r = await attest(t, { method: 'x509pop', certificate_chain: leafPem, nonce, signature, csr: csrPem });
      });
      expect(r!.status).toBe(201);
      expectTwo(counted, /from "nodes" where "id" = /);
    }
  });
});
