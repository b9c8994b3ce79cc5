import { presentEvidence } from '../../../../services/ca/src/domain/attestation/attestor';
import { joinTokenAttestor } from '../../../../services/ca/src/domain/attestation/join-token-attestor';
import { createJoinToken, parseJoinToken } from '../../../../services/ca/src/domain/join-token';
import { attestNode } from '../../../../services/ca/src/domain/node-identity';
import type {
  AttestationGuard,
  AttestationOutcome,
  NodeRole,
} from '../../../../services/ca/src/domain/ports';
import { readCsr } from '../../../../services/ca/src/pki/csr';
import { revokeNode } from '../../../../services/ca/src/domain/revocation';
import { tokenCache } from '../../../../services/ca/src/domain/token-cache';
import { TEST_TD } from '../../../fixtures/test-ca';
import { errorOf } from '../../../support/errors';
import { keyAndCsr } from '../../../support/node-client';
import { AUDIT, auditRows, badSignatureCsrPem, dump, HOUR, nodeDeps, type World, world, x509 } from './world';

/** attestNode (domain/node-identity.ts) with the join-token attestor, over the in-memory ports. */

async function newToken(
  w: World,
  o: { role?: NodeRole; uses?: number; nodeName?: string; nodeTtlMs?: number; ttlMs?: number } = {},
) {
  return createJoinToken(
    { clock: w.clock, tokens: w.storage.tokens },
    {
      role: o.role ?? 'worker',
      ttlMs: o.ttlMs ?? HOUR,
      uses: o.uses ?? 1,
      nodeName: o.nodeName ?? null,
      nodeTtlMs: o.nodeTtlMs ?? null,
      createdBy: 'test',
      pin: w.keyring.pin,
    },
  );
}

/**
 * The one place that knows attestNode's input: what the HTTP edge reads from a request (an unknown
 * method or a malformed token is the edge's refusal: test/unit/http/attestation-evidence.test.ts).
 */
async function attest(w: World, p: { token: string; csrPem?: string }) {
  return attestNode(nodeDeps(w), {
    evidence: presentEvidence(joinTokenAttestor, { token: parseJoinToken(p.token) }),
    csr: readCsr(p.csrPem ?? (await keyAndCsr()).csrPem),
    audit: AUDIT,
  });
}

const usesLeft = async (w: World, id: string) => (await w.storage.tokens.findById(id))?.usesLeft;

/** The store as before plus exactly one new audit row, the refusal's (no other write). */
async function expectOnlyRefusalRow(
  w: World,
  before: Awaited<ReturnType<typeof dump>>,
  code: string,
  method: string,
) {
  const after = await dump(w.storage);
  expect({ ...after, audit: after.audit.slice(1) }).toEqual(before);
  const refused = await auditRows(w.storage, 'node.attestation_refused');
  expect(refused.at(-1)).toMatchObject({
    actor: AUDIT.actor,
    subject: null,
    outcome: 'failure',
    details: { method, code },
  });
}

describe('attestNode (join_token)', () => {
  it("creates a node with the token's role, issues its certificate and spends one use, together", async () => {
    const w = await world({ nodeTtlMs: 2 * HOUR });
    const { token, record } = await newToken(w, { role: 'manager', uses: 3 });
    const now = w.clock.now();

    const issued = await attest(w, { token });

    const node = await w.storage.nodes.findById(issued.nodeId);
    expect(node).toMatchObject({
      role: 'manager',
      status: 'active',
      attestationMethod: 'join_token',
      createdAt: now,
    });
    const r = issued.leaf.record;
    expect(r).toMatchObject({
      kind: 'node',
      nodeId: issued.nodeId,
      spiffeId: `spiffe://${TEST_TD}/node/${issued.nodeId}`,
    });
    expect(r.notAfter.getTime() - now.getTime()).toBe(2 * HOUR);
    expect(x509(issued.leaf).subject).toContain('OU=manager');
    expect(await w.storage.certificates.findBySerial(r.serial)).toMatchObject({ status: 'valid' });
    expect(issued.refreshAt.getTime() - now.getTime()).toBe(HOUR);
    expect(await usesLeft(w, record.id)).toBe(2);
    const rows = await auditRows(w.storage, 'node.attested');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      subject: r.spiffeId,
      outcome: 'success',
      details: { method: 'join_token', role: 'manager', serial: r.serial, token_id: record.id },
    });
  });

  it("a token bound to a node name gives that node id and the token's node lifetime", async () => {
    const w = await world();
    const { token } = await newToken(w, { nodeName: 'web-1', nodeTtlMs: 5 * HOUR });
    const issued = await attest(w, { token });
    expect(issued.nodeId).toBe('web-1');
    expect((await w.storage.nodes.findById('web-1'))?.certTtlMs).toBe(5 * HOUR);
    expect(issued.leaf.record.notAfter.getTime() - w.clock.now().getTime()).toBe(5 * HOUR);
  });

  it('a 1-use token attests once: the second attestation is ERR_TOKEN_INVALID and writes only its audit row', async () => {
    const w = await world();
    const { token, record } = await newToken(w, { uses: 1 });
    await attest(w, { token });
    expect(await usesLeft(w, record.id)).toBe(0);
    const before = await dump(w.storage);

    expect((await errorOf(attest(w, { token }))).code).toBe('ERR_TOKEN_INVALID');

    await expectOnlyRefusalRow(w, before, 'ERR_TOKEN_INVALID', 'join_token');
    expect(before.nodes).toHaveLength(1);
  });

  const refusals: Array<
    [string, string, (w: World, token: string) => Promise<Parameters<typeof attest>[1]>]
  > = [
    [
      'an expired token (by the injected clock)',
      'ERR_TOKEN_INVALID',
      async (w, token) => {
        w.clock.advance(HOUR);
        return { token };
      },
    ],
    [
      'a wrong secret',
      'ERR_TOKEN_INVALID',
      async (_, token) => ({ token: token.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) }),
    ],
    [
      'a CSR whose signature does not verify',
      'ERR_CSR_INVALID',
      async (_, token) => ({ token, csrPem: await badSignatureCsrPem() }),
    ],
    [
      // The token is spent in the transaction, then the insert refuses the key: all rolls back.
      'a CSR whose key is already certified',
      'ERR_KEY_REUSED',
      async (w, token) => {
        const { csrPem } = await keyAndCsr();
        await attest(w, { token: (await newToken(w)).token, csrPem });
        return { token, csrPem };
      },
    ],
  ];
  it.each(refusals)(
    '%s → %s: nothing spent, nothing issued, one refusal audit row',
    async (_, code, arrange) => {
      const w = await world();
      const { token, record } = await newToken(w, { uses: 2 });
      const p = await arrange(w, token);
      const before = await dump(w.storage);

      expect((await errorOf(attest(w, p))).code).toBe(code);

      expect(await usesLeft(w, record.id)).toBe(2);
      await expectOnlyRefusalRow(w, before, code, 'join_token');
    },
  );

  it('re-attesting a revoked node is ERR_NODE_REVOKED; the new token is not spent', async () => {
    const w = await world();
    const first = await attest(w, { token: (await newToken(w, { nodeName: 'web-1' })).token });
    await revokeNode(
      { clock: w.clock, storage: w.storage, trustDomain: TEST_TD, publishCrls: async () => undefined },
      { nodeId: first.nodeId, audit: AUDIT },
    );
    const { token, record } = await newToken(w, { nodeName: 'web-1' });
    const before = await dump(w.storage);

    expect((await errorOf(attest(w, { token }))).code).toBe('ERR_NODE_REVOKED');

    expect(await usesLeft(w, record.id)).toBe(1);
    await expectOnlyRefusalRow(w, before, 'ERR_NODE_REVOKED', 'join_token');
  });

  it('re-attesting an active node supersedes its certificate; another role is refused', async () => {
    const w = await world();
    const first = await attest(w, { token: (await newToken(w, { nodeName: 'web-1' })).token });
    w.clock.advance(60_000);
    const second = await attest(w, { token: (await newToken(w, { nodeName: 'web-1' })).token });
    expect(second.nodeId).toBe('web-1');
    expect((await w.storage.certificates.findBySerial(first.leaf.record.serial))?.status).toBe('superseded');
    expect((await w.storage.nodes.findById('web-1'))?.lastAttestedAt).toEqual(w.clock.now());

    const manager = await newToken(w, { nodeName: 'web-1', role: 'manager' });
    expect((await errorOf(attest(w, { token: manager.token }))).code).toBe('ERR_ATTESTATION_FAILED');
    expect(await usesLeft(w, manager.record.id)).toBe(1);
    expect((await w.storage.certificates.findBySerial(second.leaf.record.serial))?.status).toBe('valid');
  });
});

/**
 * Issue 20: the attestation's database work is the evidence's read and one statement
 * (IssuanceRepository.recordAttestation); what the use case does with each answer of that
 * statement, the statement's own guards being the storage contract's (test/contract).
 */
describe('attestNode and its one statement', () => {
  /** The world's storage, with the statement's answers replaced by `answers` while there are any. */
  function answering(w: World, answers: AttestationOutcome[]): { calls: AttestationGuard[] } {
    const calls: AttestationGuard[] = [];
    const real = w.storage.issuances.recordAttestation;
    w.storage = {
      ...w.storage,
      issuances: {
        ...w.storage.issuances,
        recordAttestation: async (r, a, g) => {
          calls.push(g);
          const next = answers.shift();
          return next ?? real(r, a, g);
        },
      },
    };
    return { calls };
  }

  it('spends the token in the statement that records: the token, its node and role, as data', async () => {
    const w = await world();
    const { token, record } = await newToken(w, { role: 'manager', nodeName: 'web-1', nodeTtlMs: 3 * HOUR });
    const { calls } = answering(w, []);
    const issued = await attest(w, { token });
    expect(calls).toEqual([
      {
        spend: { kind: 'token', tokenId: record.id },
        node: { id: 'web-1', role: 'manager', certTtlMs: 3 * HOUR, existing: false },
        method: 'join_token',
        now: w.clock.now(),
      },
    ]);
    expect(issued.nodeId).toBe('web-1');
  });

  it("re-attesting a bound node: the certificate is built for the node's own lifetime, not the token's", async () => {
    const w = await world();
    await attest(w, { token: (await newToken(w, { nodeName: 'web-1', nodeTtlMs: 3 * HOUR })).token });
    const { calls } = answering(w, []);
    const again = await attest(w, {
      token: (await newToken(w, { nodeName: 'web-1', nodeTtlMs: 5 * HOUR })).token,
    });
    expect(calls.map((g) => g.node)).toEqual([
      { id: 'web-1', role: 'worker', certTtlMs: 3 * HOUR, existing: true },
    ]);
    expect(again.leaf.record.notAfter.getTime() - w.clock.now().getTime()).toBe(3 * HOUR);
  });

  it('node-changed (the node moved between the read and the statement): builds again and records once', async () => {
    const w = await world();
    const { token, record } = await newToken(w, { nodeName: 'web-1' });
    const { calls } = answering(w, ['node-changed']);
    const issued = await attest(w, { token });
    expect(calls).toHaveLength(2);
    // A new certificate each time (a new serial), for the node as read again.
    const serials = (await w.storage.certificates.list({})).map((c) => c.serial);
    expect(serials).toEqual([issued.leaf.record.serial]);
    expect(await auditRows(w.storage, 'node.attested')).toHaveLength(1);
    expect(await usesLeft(w, record.id)).toBe(0);
  });

  it('node-changed three times: 503 ERR_DATABASE_UNAVAILABLE, nothing spent, one refusal row', async () => {
    const w = await world();
    const { token, record } = await newToken(w, { nodeName: 'web-1' });
    const { calls } = answering(w, ['node-changed', 'node-changed', 'node-changed']);
    const before = await dump(w.storage);
    expect((await errorOf(attest(w, { token }))).code).toBe('ERR_DATABASE_UNAVAILABLE');
    expect(calls).toHaveLength(3);
    expect(await usesLeft(w, record.id)).toBe(1);
    await expectOnlyRefusalRow(w, before, 'ERR_DATABASE_UNAVAILABLE', 'join_token');
  });

  it.each([
    ['evidence-spent', 'ERR_TOKEN_INVALID'],
    ['node-revoked', 'ERR_NODE_REVOKED'],
    ['node-role', 'ERR_ATTESTATION_FAILED'],
  ] as [AttestationOutcome, string][])(
    'the statement answers %s (a race after the read): %s, one refusal row',
    async (outcome, code) => {
      const w = await world();
      const { token } = await newToken(w, { uses: 2 });
      answering(w, [outcome]);
      const before = await dump(w.storage);
      expect((await errorOf(attest(w, { token }))).code).toBe(code);
      await expectOnlyRefusalRow(w, before, code, 'join_token');
    },
  );

  it('8 concurrent attestations with a 1-use token: exactly one node, seven ERR_TOKEN_INVALID', async () => {
    const w = await world();
    const { token, record } = await newToken(w, { uses: 1 });
    const csrs = await Promise.all(Array.from({ length: 8 }, () => keyAndCsr()));
    const got = await Promise.allSettled(csrs.map((c) => attest(w, { token, csrPem: c.csrPem })));
    expect(got.filter((g) => g.status === 'fulfilled')).toHaveLength(1);
    const refused = got.filter((g): g is PromiseRejectedResult => g.status === 'rejected');
    expect(refused.map((g) => (g.reason as { code: string }).code)).toEqual(
      Array(7).fill('ERR_TOKEN_INVALID'),
    );
    expect(await w.storage.nodes.list()).toHaveLength(1);
    expect(await usesLeft(w, record.id)).toBe(0);
  });
});

describe('attestNode with the token cache (domain/token-cache.ts)', () => {
  it('a use spent under a cached token: the statement refuses, the token is forgotten and read again', async () => {
    const w = await world();
    const { token, record } = await newToken(w, { uses: 2 });
    let reads = 0;
    const tokens = tokenCache(
      {
        findForAttestation: (id) => {
          reads++;
          return w.storage.tokens.findForAttestation(id);
        },
      },
      { nowMs: () => 0 },
    );
    const attestCached = async () =>
      attestNode(nodeDeps(w, { tokens }), {
        evidence: presentEvidence(joinTokenAttestor, { token: parseJoinToken(token) }),
        csr: readCsr((await keyAndCsr()).csrPem),
        audit: AUDIT,
      });
    await attestCached();
    await attestCached();
    expect(reads).toBe(1);
    expect(await usesLeft(w, record.id)).toBe(0);

    // The cache still says two uses: the statement finds none, and the cache lets go.
    expect((await errorOf(attestCached())).code).toBe('ERR_TOKEN_INVALID');
    expect(reads).toBe(1);
    expect((await errorOf(attestCached())).code).toBe('ERR_TOKEN_INVALID');
    expect(reads).toBe(2);
    expect(await w.storage.nodes.list()).toHaveLength(2);
  });
});
