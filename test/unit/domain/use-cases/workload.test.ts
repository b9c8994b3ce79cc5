import { entryCache, type EntrySource } from '../../../../services/ca/src/domain/entry-cache';
import type { EntryRecord } from '../../../../services/ca/src/domain/ports';
import { issueWorkloadSvid } from '../../../../services/ca/src/domain/workload-identity';
import { MAX_TTL } from '../../../../services/ca/src/ground/ttl';
import { errorOf } from '../../../support/errors';
import {
  AUDIT,
  addEntry,
  addNode,
  auditRows,
  csrOf,
  DAY,
  dump,
  nodeDeps,
  withoutFastPaths,
  type World,
  world,
  x509,
} from './world';

/** issueWorkloadSvid (domain/workload-identity.ts): POST /v1/workload-svids over the in-memory ports. */

type Node = Awaited<ReturnType<typeof addNode>>;

const issue = async (
  w: World,
  n: Node,
  spiffeId: string,
  o: Parameters<typeof nodeDeps>[1] & { entries?: EntrySource } = {},
) => issueWorkloadSvid(nodeDeps(w, o), { claim: n.claim, spiffeId, csr: await csrOf(), audit: AUDIT });

const sans = (pem: string) => x509(pem).subjectAltName;

describe('issueWorkloadSvid', () => {
  it.each([
    ['the fast path (one guarded statement)', false],
    ['the general path (the guard refused, a locked transaction)', true],
  ])("issues the entry's SPIFFE ID and DNS names, issued via the node: %s", async (_, general) => {
    const w = await world({ workloadTtlMs: 15 * 60_000 });
    const n = await addNode(w);
    const entry = await addEntry(w, n.node, { name: 'web', dnsNames: ['web.internal', 'web.svc'] });
    const guardRefuses = withoutFastPaths(w.storage);
    const storage = general ? guardRefuses : w.storage;
    const now = w.clock.now().getTime();

    const issued = await issue(w, n, entry.spiffeId, { storage });

    expect(guardRefuses.refused).toEqual(general ? ['workload'] : []);
    const r = issued.leaf.record;
    expect(r).toMatchObject({
      kind: 'workload',
      spiffeId: entry.spiffeId,
      issuedVia: n.node.id,
      nodeId: null,
    });
    expect(r.caId).toBe(w.keyring.signing.record.id);
    // No TTL on the entry: the installation's workload default.
    expect(r.notAfter.getTime() - now).toBe(15 * 60_000);
    expect(sans(issued.leaf.certificatePem)).toBe(`URI:${entry.spiffeId}, DNS:web.internal, DNS:web.svc`);
    // The subject names the entry, nothing comes from the CSR.
    expect(x509(issued.leaf).subject).toContain('CN=web');
    expect(x509(issued.leaf).subject).not.toContain('ignored-by-the-ca');
    expect(issued.nodeId).toBe(n.node.id);
    expect(issued.refreshAt.getTime() - now).toBe(7.5 * 60_000);

    expect(await w.storage.certificates.findBySerial(r.serial)).toMatchObject({
      issuedVia: n.node.id,
      status: 'valid',
    });
    const rows = await auditRows(w.storage, 'certificate.issued');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      actor: AUDIT.actor,
      subject: entry.spiffeId,
      outcome: 'success',
      details: { kind: 'workload', serial: r.serial, entry: 'web', node: n.node.id },
    });
    // Issuing a workload SVID leaves the node's own certificate as it was.
    expect((await w.storage.certificates.findBySerial(n.cert.record.serial))?.status).toBe('valid');
  });

  it("takes the entry's TTL, capped at the workload maximum", async () => {
    const w = await world();
    const n = await addNode(w);
    const short = await addEntry(w, n.node, { ttlMs: 120_000 });
    const long = await addEntry(w, n.node, { ttlMs: 30 * DAY });
    const now = w.clock.now().getTime();
    expect((await issue(w, n, short.spiffeId)).leaf.record.notAfter.getTime() - now).toBe(120_000);
    expect((await issue(w, n, long.spiffeId)).leaf.record.notAfter.getTime() - now).toBe(MAX_TTL.workload);
  });

  describe('refusals write nothing', () => {
    const cases: Array<[string, string, (w: World, n: Node) => Promise<string>]> = [
      ['a SPIFFE ID with no entry', 'ERR_NOT_AUTHORIZED', async () => 'spiffe://test.example.org/svc/none'],
      [
        "another node's entry",
        'ERR_NOT_AUTHORIZED',
        async (w) => (await addEntry(w, (await addNode(w)).node)).spiffeId,
      ],
      [
        'a revoked node (its certificate still valid)',
        'ERR_NODE_REVOKED',
        async (w, n) => {
          const e = await addEntry(w, n.node);
          await w.storage.nodes.markRevoked(n.node.id, w.clock.now(), 1);
          return e.spiffeId;
        },
      ],
      [
        'a revoked node certificate',
        'ERR_CERT_REVOKED',
        async (w, n) => {
          const e = await addEntry(w, n.node);
          await w.storage.revocations.revokeCertificates({ serial: n.cert.record.serial }, w.clock.now(), 1);
          return e.spiffeId;
        },
      ],
      [
        'a node certificate expired by the injected clock',
        'ERR_CERT_EXPIRED',
        async (w, n) => {
          const e = await addEntry(w, n.node);
          w.clock.set(n.cert.record.notAfter);
          return e.spiffeId;
        },
      ],
    ];

    it.each(cases)('%s → %s', async (_, code, arrange) => {
      const w = await world();
      const n = await addNode(w);
      const spiffeId = await arrange(w, n);
      const before = await dump(w.storage);
      expect((await errorOf(issue(w, n, spiffeId))).code).toBe(code);
      expect(await dump(w.storage)).toEqual(before);
    });
  });

  describe('with an entry cache that is stale', () => {
    /** The real cache (domain/entry-cache.ts), its `forget` calls recorded. */
    async function staleCache(w: World, n: Node, entry: EntryRecord) {
      const cache = entryCache(w.storage.entries, { nowMs: () => 0, ttlMs: 60_000 });
      expect(await cache.lookup(n.node.id, entry.spiffeId)).toEqual(entry);
      const forgotten: string[][] = [];
      const source: EntrySource = {
        lookup: cache.lookup,
        forget: (nodeId, spiffeId) => {
          forgotten.push([nodeId, spiffeId]);
          cache.forget(nodeId, spiffeId);
        },
      };
      return { cache, source, forgotten };
    }

    it('the guarded insert refuses the stale entry; the SVID is built from the fresh one', async () => {
      const w = await world();
      const n = await addNode(w);
      const entry = await addEntry(w, n.node, { dnsNames: ['old.internal'] });
      const { cache, source, forgotten } = await staleCache(w, n, entry);
      // The entry is recreated with other DNS names behind the cache's back.
      await w.storage.entries.delete(entry.name);
      w.clock.advance(1000);
      await addEntry(w, n.node, { ...entry, dnsNames: ['new.internal'], createdAt: w.clock.now() });

      const issued = await issue(w, n, entry.spiffeId, { entries: source });

      expect(sans(issued.leaf.certificatePem)).toBe(`URI:${entry.spiffeId}, DNS:new.internal`);
      expect(forgotten).toEqual([[n.node.id, entry.spiffeId]]);
      expect(cache.size).toBe(0);
      // Exactly one certificate and one audit row: the refused insert wrote nothing.
      expect(await w.storage.certificates.list({ kind: 'workload' })).toHaveLength(1);
      expect(await auditRows(w.storage, 'certificate.issued')).toHaveLength(1);
    });

    it('an entry deleted behind the cache is refused, and nothing is written', async () => {
      const w = await world();
      const n = await addNode(w);
      const entry = await addEntry(w, n.node);
      const { source, forgotten } = await staleCache(w, n, entry);
      await w.storage.entries.delete(entry.name);
      const before = await dump(w.storage);

      expect((await errorOf(issue(w, n, entry.spiffeId, { entries: source }))).code).toBe(
        'ERR_NOT_AUTHORIZED',
      );

      expect(forgotten).toEqual([[n.node.id, entry.spiffeId]]);
      expect(await dump(w.storage)).toEqual(before);
    });
  });
});
