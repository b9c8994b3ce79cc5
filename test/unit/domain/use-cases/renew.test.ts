import type { NodeClaim } from '../../../../services/ca/src/domain/caller';
import { renewNode } from '../../../../services/ca/src/domain/node-identity';
import type { UnverifiedCsr } from '../../../../services/ca/src/pki/csr';
import { keyFingerprint } from '../../../../services/ca/src/pki/keys';
import { MAX_TTL } from '../../../../services/ca/src/ground/ttl';
import { TEST_TD } from '../../../fixtures/test-ca';
import { keyAndCsr } from '../../../support/node-client';
import { errorOf } from '../../../support/errors';
import {
  AUDIT,
  addNode,
  auditRows,
  badSignatureCsr,
  claimFor,
  csrOf,
  DAY,
  dump,
  HOUR,
  nodeDeps,
  withoutFastPaths,
  type World,
  world,
  x509,
} from './world';

/** renewNode (domain/node-identity.ts): POST /v1/renew without HTTP, over the in-memory ports. */

const renew = (w: World, claim: NodeClaim, csr: UnverifiedCsr, o: Parameters<typeof nodeDeps>[1] = {}) =>
  renewNode(nodeDeps(w, o), { claim, csr, audit: AUDIT });

describe('renewNode', () => {
  it.each([
    ['the fast path (one guarded statement)', false],
    ['the general path (the guard refused, a locked transaction)', true],
  ])(
    'issues for the claimed node with its role, supersedes the presented certificate: %s',
    async (_, general) => {
      const w = await world({ nodeTtlMs: 2 * HOUR });
      const { node, cert, claim } = await addNode(w, { role: 'manager' });
      w.clock.advance(10 * 60_000);
      const now = w.clock.now();
      const csr = await csrOf();
      const guardRefuses = withoutFastPaths(w.storage);
      const storage = general ? guardRefuses : w.storage;

      const issued = await renew(w, claim, csr, { storage });

      expect(guardRefuses.refused).toEqual(general ? ['renewal'] : []);
      const r = issued.leaf.record;
      expect(issued.nodeId).toBe(node.id);
      expect(r).toMatchObject({ kind: 'node', nodeId: node.id, issuedVia: null, status: 'valid' });
      expect(r.spiffeId).toBe(`spiffe://${TEST_TD}/node/${node.id}`);
      expect(r.caId).toBe(w.keyring.signing.record.id);
      expect(r.notAfter.getTime() - now.getTime()).toBe(2 * HOUR);
      // The key is the CSR's; the role and name come from the node record, never from the CSR.
      expect(r.keyFingerprint).toBe(keyFingerprint(csr.verify().key.spki));
      const x = x509(issued.leaf);
      expect(x.subject).toContain('OU=manager');
      expect(x.subject).toContain(`CN=${node.id}`);
      expect(x.subject).not.toContain('ignored-by-the-ca');
      expect(x.checkIssued(x509(w.keyring.signing.certPem))).toBe(true);
      expect(issued.bundlePem).toBe(w.keyring.bundlePem);

      // Recorded before it is returned; the presented one is superseded; the node was seen now.
      expect(await w.storage.certificates.findBySerial(r.serial)).toMatchObject({ status: 'valid' });
      expect((await w.storage.certificates.findBySerial(cert.record.serial))?.status).toBe('superseded');
      expect((await w.storage.nodes.findById(node.id))?.lastSeenAt).toEqual(now);

      const rows = await auditRows(w.storage, 'certificate.renewed');
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({
        actor: AUDIT.actor,
        source: AUDIT.source,
        subject: r.spiffeId,
        outcome: 'success',
        details: { serial: r.serial, previous: cert.record.serial },
      });
    },
  );

  it("takes the node's own lifetime, capped at the node maximum", async () => {
    const w = await world({ nodeTtlMs: 2 * HOUR });
    const own = await addNode(w, { certTtlMs: 5 * HOUR });
    const long = await addNode(w, { certTtlMs: 90 * DAY });
    const now = w.clock.now().getTime();
    expect((await renew(w, own.claim, await csrOf())).leaf.record.notAfter.getTime() - now).toBe(5 * HOUR);
    expect((await renew(w, long.claim, await csrOf())).leaf.record.notAfter.getTime() - now).toBe(
      MAX_TTL.node,
    );
  });

  it('answers refreshAt at about half-life, jittered by the injected random (±5% of the lifetime)', async () => {
    const w = await world({ nodeTtlMs: 2 * HOUR });
    const now = w.clock.now().getTime();
    const at = async (random: number) => {
      const { claim } = await addNode(w);
      return (await renew(w, claim, await csrOf(), { random: () => random })).refreshAt.getTime() - now;
    };
    expect(await at(0.5)).toBe(HOUR);
    expect(await at(0)).toBe(54 * 60_000); // 45% of 2 h
    expect(await at(1)).toBe(66 * 60_000); // 55% of 2 h
  });

  it('renews again with the new certificate; the old one is refused from then on', async () => {
    const w = await world();
    const { node, claim } = await addNode(w);
    const first = await renew(w, claim, await csrOf());
    const second = await renew(w, claimFor(node.id, first.leaf), await csrOf());
    expect((await w.storage.certificates.findBySerial(first.leaf.record.serial))?.status).toBe('superseded');
    expect((await auditRows(w.storage, 'certificate.renewed')).map((a) => a.details)).toEqual([
      { serial: first.leaf.record.serial, previous: claim.peer.serial },
      { serial: second.leaf.record.serial, previous: first.leaf.record.serial },
    ]);
    expect((await errorOf(renew(w, claim, await csrOf()))).code).toBe('ERR_CERT_SUPERSEDED');
  });

  describe('refusals write nothing', () => {
    type Arrange = (
      w: World,
      s: Awaited<ReturnType<typeof addNode>>,
    ) => Promise<{ claim?: NodeClaim; csr?: UnverifiedCsr }>;
    const cases: Array<[string, string, Arrange]> = [
      [
        'a superseded certificate',
        'ERR_CERT_SUPERSEDED',
        async (w, s) => {
          await renew(w, s.claim, await csrOf());
          return {};
        },
      ],
      [
        'a revoked certificate',
        'ERR_CERT_REVOKED',
        async (w, s) => {
          await w.storage.revocations.revokeCertificates({ serial: s.cert.record.serial }, w.clock.now(), 1);
          return {};
        },
      ],
      [
        'a certificate expired by the injected clock',
        'ERR_CERT_EXPIRED',
        async (w, s) => {
          w.clock.set(s.cert.record.notAfter);
          return {};
        },
      ],
      [
        'a revoked node (its certificate still valid)',
        'ERR_NODE_REVOKED',
        async (w, s) => {
          await w.storage.nodes.markRevoked(s.node.id, w.clock.now(), 1);
          return {};
        },
      ],
      [
        "another node's certificate presented under this node's name",
        'ERR_NOT_AUTHENTICATED',
        async (w, s) => {
          const other = await addNode(w);
          return { claim: { ...other.claim, nodeId: s.node.id } };
        },
      ],
      [
        'a CSR whose key is already certified (to another node)',
        'ERR_KEY_REUSED',
        async (w) => {
          const { csrPem } = await keyAndCsr();
          await renew(w, (await addNode(w)).claim, await csrOf(csrPem));
          return { csr: await csrOf(csrPem) };
        },
      ],
      [
        'a CSR whose signature does not verify',
        'ERR_CSR_INVALID',
        async () => ({ csr: await badSignatureCsr() }),
      ],
    ];

    it.each(cases)('%s → %s', async (_, code, arrange) => {
      const w = await world();
      const s = await addNode(w);
      const { claim = s.claim, csr = await csrOf() } = await arrange(w, s);
      const before = await dump(w.storage);

      expect((await errorOf(renew(w, claim, csr))).code).toBe(code);

      // No certificate, no audit row, nothing superseded, the node not marked as seen.
      expect(await dump(w.storage)).toEqual(before);
    });
  });
});
