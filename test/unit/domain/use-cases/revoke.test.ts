import { publishAllCrlsIn } from '../../../../services/ca/src/domain/crl-publisher';
import { createJoinToken } from '../../../../services/ca/src/domain/join-token';
import { renewNode } from '../../../../services/ca/src/domain/node-identity';
import type { CertificateKind, Repositories } from '../../../../services/ca/src/domain/ports';
import {
  type RevocationDeps,
  revokeCertificate,
  revokeNode,
} from '../../../../services/ca/src/domain/revocation';
import { issueWorkloadSvid } from '../../../../services/ca/src/domain/workload-identity';
import { BatonError } from '../../../../services/ca/src/ground/errors';
import { TEST_TD } from '../../../fixtures/test-ca';
import { errorOf } from '../../../support/errors';
import {
  AUDIT,
  addEntry,
  addNode,
  auditRows,
  claimFor,
  csrOf,
  dump,
  HOUR,
  nodeDeps,
  type World,
  world,
} from './world';

/** revokeNode and revokeCertificate (domain/revocation.ts) over the in-memory ports. */

/** A publishCrls that records each call and what was visible, inside and outside, at that moment. */
function crlRecorder(w: World) {
  const calls: Array<{ tx: Repositories; eventInside: number; eventOutside: number }> = [];
  return {
    calls,
    publishCrls: async (tx: Repositories) => {
      calls.push({
        tx,
        eventInside: await tx.revocations.lastEventId(),
        eventOutside: await w.storage.revocations.lastEventId(),
      });
    },
  };
}

const revocationDeps = (w: World, publishCrls: RevocationDeps['publishCrls']): RevocationDeps => ({
  clock: w.clock,
  storage: w.storage,
  trustDomain: TEST_TD,
  publishCrls,
});

const workload = async (w: World, n: Awaited<ReturnType<typeof addNode>>, ttlMs: number | null = null) => {
  const entry = await addEntry(w, n.node, { ttlMs });
  const issued = await issueWorkloadSvid(nodeDeps(w), {
    claim: n.claim,
    spiffeId: entry.spiffeId,
    csr: await csrOf(),
    audit: AUDIT,
  });
  return issued.leaf.record;
};

const token = async (w: World, nodeName: string | null) =>
  (
    await createJoinToken(
      { clock: w.clock, tokens: w.storage.tokens },
      { role: 'worker', ttlMs: HOUR, uses: 1, nodeName, createdBy: 'test', pin: w.keyring.pin },
    )
  ).record.id;

const statusOf = async (w: World, serial: string) =>
  (await w.storage.certificates.findBySerial(serial))?.status;

describe('revokeNode', () => {
  it('revokes the node and, in one transaction, its unexpired certificates and those issued via it', async () => {
    const w = await world();
    const a = await addNode(w);
    const renewed = await renewNode(nodeDeps(w), { claim: a.claim, csr: await csrOf(), audit: AUDIT });
    const superseded = a.cert.record.serial;
    const current = renewed.leaf.record.serial;
    const a2 = { ...a, claim: claimFor(a.node.id, renewed.leaf) };
    const shortLived = await workload(w, a2, 60_000);
    const longLived = await workload(w, a2);
    const b = await addNode(w);
    const bystander = await workload(w, b);
    const [boundToA, unbound, boundToB] = [
      await token(w, a.node.id),
      await token(w, null),
      await token(w, b.node.id),
    ];
    w.clock.advance(2 * 60_000); // the short-lived workload certificate has expired
    const now = w.clock.now();
    const crls = crlRecorder(w);

    const { event, serials } = await revokeNode(revocationDeps(w, crls.publishCrls), {
      nodeId: a.node.id,
      reason: 1,
      audit: AUDIT,
    });

    expect([...serials].sort()).toEqual([superseded, current, longLived.serial].sort());
    for (const serial of serials)
      expect(await w.storage.certificates.findBySerial(serial)).toMatchObject({
        status: 'revoked',
        revokedAt: now,
        revocationReason: 1,
      });
    expect(await statusOf(w, shortLived.serial)).toBe('valid'); // expired: left alone
    expect(await statusOf(w, b.cert.record.serial)).toBe('valid');
    expect(await statusOf(w, bystander.serial)).toBe('valid');
    expect(await w.storage.nodes.findById(a.node.id)).toMatchObject({
      status: 'revoked',
      revokedAt: now,
      revocationReason: 1,
    });
    expect((await w.storage.nodes.findById(b.node.id))?.status).toBe('active');

    // Tokens bound to the node's name are spent; others are not.
    expect((await w.storage.tokens.findById(boundToA))?.usesLeft).toBe(0);
    expect((await w.storage.tokens.findById(unbound))?.usesLeft).toBe(1);
    expect((await w.storage.tokens.findById(boundToB))?.usesLeft).toBe(1);

    expect(event).toMatchObject({
      kind: 'node',
      nodeId: a.node.id,
      reason: 1,
      actor: AUDIT.actor,
      createdAt: now,
    });
    expect(await w.storage.revocations.eventsSince(0, 10)).toEqual([event]);
    const rows = await auditRows(w.storage, 'node.revoked');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      actor: AUDIT.actor,
      subject: `spiffe://${TEST_TD}/node/${a.node.id}`,
      details: { reason: 1, certificates: 3, tokens_spent: 1, event: event.id },
    });

    // The CRLs were published inside the transaction: the event visible to it, not yet to others.
    expect(crls.calls).toHaveLength(1);
    expect(crls.calls[0]).toMatchObject({ eventInside: event.id, eventOutside: 0 });
    expect(crls.calls[0]?.tx).not.toBe(w.storage);
  });

  it('with the real CRL publisher, the signing CA’s new CRL lists what was revoked', async () => {
    const w = await world();
    const a = await addNode(w);
    await workload(w, a);
    const { serials } = await revokeNode(
      revocationDeps(w, (tx) =>
        publishAllCrlsIn(tx, { clock: w.clock, keyring: w.keyring, nextUpdateMs: HOUR }),
      ),
      { nodeId: a.node.id, audit: AUDIT },
    );
    expect(serials).toHaveLength(2);
    expect((await w.storage.crls.latest(w.keyring.signing.record.id))?.entries).toBe(2);
    expect((await w.storage.crls.latest(w.keyring.roots[0]!.record.id))?.entries).toBe(0);
  });

  const refusals: Array<[string, string, (w: World, nodeId: string) => Promise<void>]> = [
    ['an unknown node', 'ERR_NOT_FOUND', async () => undefined],
    [
      'a node already revoked',
      'ERR_CONFLICT',
      async (w, nodeId) =>
        void (await revokeNode(
          revocationDeps(w, async () => undefined),
          { nodeId, audit: AUDIT },
        )),
    ],
  ];
  it.each(refusals)('%s → %s, nothing written, no CRL', async (name, code, arrange) => {
    const w = await world();
    const a = await addNode(w);
    await arrange(w, a.node.id);
    const before = await dump(w.storage);
    const crls = crlRecorder(w);
    const nodeId = name === 'an unknown node' ? 'nobody' : a.node.id;
    expect(
      (await errorOf(revokeNode(revocationDeps(w, crls.publishCrls), { nodeId, audit: AUDIT }))).code,
    ).toBe(code);
    expect(crls.calls).toHaveLength(0);
    expect(await dump(w.storage)).toEqual(before);
  });

  it('a CRL that cannot be published rolls the whole revocation back', async () => {
    const w = await world();
    const a = await addNode(w);
    await token(w, a.node.id);
    const before = await dump(w.storage);
    const failing = async () => {
      throw new BatonError('ERR_CA_UNAVAILABLE', 'signer down');
    };
    expect(
      (await errorOf(revokeNode(revocationDeps(w, failing), { nodeId: a.node.id, audit: AUDIT }))).code,
    ).toBe('ERR_CA_UNAVAILABLE');
    expect(await dump(w.storage)).toEqual(before);
  });
});

describe('revokeCertificate', () => {
  it('revokes one certificate: event, audit row, CRLs in the transaction; the node stays active', async () => {
    const w = await world();
    const a = await addNode(w);
    const target = await workload(w, a);
    const other = await workload(w, a);
    const kinds: CertificateKind[] = [];
    const crls = crlRecorder(w);

    const { event, serials } = await revokeCertificate(revocationDeps(w, crls.publishCrls), {
      serial: target.serial.toUpperCase(),
      audit: AUDIT,
      authorize: (kind) => void kinds.push(kind),
    });

    expect(kinds).toEqual(['workload']);
    expect(serials).toEqual([target.serial]);
    expect(await w.storage.certificates.findBySerial(target.serial)).toMatchObject({
      status: 'revoked',
      revocationReason: 0, // unspecified by default
    });
    expect(await statusOf(w, other.serial)).toBe('valid');
    expect(await statusOf(w, a.cert.record.serial)).toBe('valid');
    expect((await w.storage.nodes.findById(a.node.id))?.status).toBe('active');
    expect(event).toMatchObject({ kind: 'certificate', nodeId: null, serials: [target.serial], reason: 0 });
    const rows = await auditRows(w.storage, 'certificate.revoked');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      subject: target.spiffeId,
      details: { serial: target.serial, reason: 0, event: event.id },
    });
    expect(crls.calls).toHaveLength(1);
    expect(crls.calls[0]).toMatchObject({ eventInside: event.id, eventOutside: 0 });
  });

  it('a node certificate: the event names the node, which stays active', async () => {
    const w = await world();
    const a = await addNode(w);
    const { event } = await revokeCertificate(
      revocationDeps(w, async () => undefined),
      {
        serial: a.cert.record.serial,
        reason: 1,
        audit: AUDIT,
        authorize: () => undefined,
      },
    );
    expect(event).toMatchObject({ kind: 'certificate', nodeId: a.node.id, reason: 1 });
    expect((await w.storage.nodes.findById(a.node.id))?.status).toBe('active');
  });

  const refusals: Array<[string, string, (w: World, serial: string) => Promise<string>]> = [
    ['a serial that is not hexadecimal', 'ERR_BAD_REQUEST', async () => 'xyz'],
    ['a serial over 20 bytes', 'ERR_BAD_REQUEST', async () => 'ab'.repeat(21)],
    ['an unknown serial', 'ERR_NOT_FOUND', async () => '0badc0de'],
    [
      'a certificate already revoked',
      'ERR_CONFLICT',
      async (w, serial) => {
        await w.storage.revocations.revokeCertificates({ serial }, w.clock.now(), 1);
        return serial;
      },
    ],
    [
      'a certificate expired by the injected clock',
      'ERR_CONFLICT',
      async (w, serial) => {
        w.clock.advance(HOUR);
        return serial;
      },
    ],
  ];
  it.each(refusals)('%s → %s, nothing written, no CRL', async (_, code, arrange) => {
    const w = await world();
    const a = await addNode(w);
    const serial = await arrange(w, a.cert.record.serial);
    const before = await dump(w.storage);
    const crls = crlRecorder(w);
    const p = { serial, audit: AUDIT, authorize: () => undefined };
    expect((await errorOf(revokeCertificate(revocationDeps(w, crls.publishCrls), p))).code).toBe(code);
    expect(crls.calls).toHaveLength(0);
    expect(await dump(w.storage)).toEqual(before);
  });

  it('an authorize callback that refuses leaves no revocation, event, audit row or CRL', async () => {
    const w = await world();
    const a = await addNode(w);
    const before = await dump(w.storage);
    const crls = crlRecorder(w);
    const refused = await errorOf(
      revokeCertificate(revocationDeps(w, crls.publishCrls), {
        serial: a.cert.record.serial,
        audit: AUDIT,
        authorize: (kind) => {
          if (kind === 'node') throw new BatonError('ERR_NOT_AUTHORIZED', 'operators revoke workloads only');
        },
      }),
    );
    expect(refused.code).toBe('ERR_NOT_AUTHORIZED');
    expect(crls.calls).toHaveLength(0);
    expect(await dump(w.storage)).toEqual(before);
  });
});
