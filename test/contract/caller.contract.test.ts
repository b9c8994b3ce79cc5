import { randomBytes } from 'node:crypto';
import type { AuditContext } from '../../services/ca/src/domain/audit';
import { type Claim, decideCaller, identifyClaim, type NodeClaim } from '../../services/ca/src/domain/caller';
import { FakeClock } from '../../services/ca/src/domain/clock';
import { type IssuedLeaf, issueLeaf } from '../../services/ca/src/domain/issue';
import { renewNode } from '../../services/ca/src/domain/node-identity';
import type {
  CertificateKind,
  CertificateRecord,
  EntryRecord,
  Installation,
  NodeRecord,
  Storage,
} from '../../services/ca/src/domain/ports';
import { issueWorkloadSvid } from '../../services/ca/src/domain/workload-identity';
import { mintJwtSvid } from '../../services/ca/src/domain/jwt-svid';
import { isBatonError } from '../../services/ca/src/ground/errors';
import { readCsr } from '../../services/ca/src/pki/csr';
import { describePublicKey, generateP256, spkiOf } from '../../services/ca/src/pki/keys';
import { migrateLatest } from '../../services/ca/src/storage/knex/database';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { TEST_TD, TEST_URL, testCa } from '../fixtures/test-ca';
import { createTestDatabase, describeEachBackend, type TestDatabase } from '../support/database';
import { createMemoryStorage } from '../support/memory-storage';
import { keyAndCsr } from '../support/node-client';

/**
 * One table of caller cases (issue 15), run through every way Baton decides "this peer may act":
 *  - the caller module (domain/caller.ts) as the routes use it: identifyClaim, unlocked reads;
 *  - the caller module over rows locked in a transaction, as the general paths use it;
 *  - the guarded statements of the fast paths (IssuanceRepository.recordWorkloadGuarded,
 *    recordRenewalGuarded and jwtMintAllowed), which evaluate the same rule in SQL;
 *  - the use cases end to end (issueWorkloadSvid, mintJwtSvid, renewNode), whose refusal must carry
 *    the code the caller module names.
 * On PGlite, PostgreSQL (BATON_TEST_DATABASE_URL) and the in-memory ports, and they must agree: a
 * guard lets a row through exactly when the caller module accepts the caller and the entry is
 * unchanged.
 */

type Outcome = 'ok' | string;

interface World {
  storage: Storage;
  clock: FakeClock;
  ca: ReturnType<typeof testCa>;
  /** Another CA hierarchy for the same trust domain: TLS would not chain it, a stolen key would. */
  otherCa: ReturnType<typeof testCa>;
  installation: Installation;
}

interface Subject {
  node: NodeRecord;
  nodeCert: CertificateRecord;
  entry: EntryRecord;
  admin: CertificateRecord;
}

interface Presented {
  claim: Claim;
  /** The clock of the request (defaults to the world's). */
  now?: Date;
}

interface Case {
  name: string;
  /** Who asks: a node (renewal, workload issuance, feed) or an admin (admin routes). */
  kind: 'node' | 'admin';
  /** Spoils the subject's rows, or presents something else; returns what is presented. */
  arrange(w: World, s: Subject): Promise<Presented>;
  /** What the caller module answers: ok, or the refusal's code. */
  caller: Outcome;
  /** The entry no longer matches what the certificate would be built from (workload guard only). */
  entryChanged?: boolean;
}

const nodeClaim = (s: Subject, cert: CertificateRecord = s.nodeCert): NodeClaim => ({
  kind: 'node',
  nodeId: s.node.id,
  peer: { serial: cert.serial, spiffeId: cert.spiffeId, subject: { CN: s.node.id }, der: cert.der },
});
const adminClaim = (s: Subject, cert: CertificateRecord = s.admin): Claim => ({
  kind: 'admin',
  name: 'alice',
  peer: {
    serial: cert.serial,
    spiffeId: cert.spiffeId,
    subject: { OU: 'admin', CN: 'alice' },
    der: cert.der,
  },
});
const present = (claim: Claim, now?: Date): Presented => ({ claim, now });

/** A leaf with the same identity, signed by the other CA, under the same serial as the real one. */
async function forgedTwin(w: World, real: CertificateRecord): Promise<CertificateRecord> {
  const fake = await issueTo(
    w,
    w.otherCa,
    { kind: real.kind, spiffeId: real.spiffeId, nodeId: real.nodeId },
    forgetful,
  );
  return { ...fake.record, serial: real.serial };
}

const CASES: Case[] = [
  {
    name: 'a current node certificate of an active node',
    kind: 'node',
    arrange: async (_w, s) => present(nodeClaim(s)),
    caller: 'ok',
  },
  {
    name: 'node revoked',
    kind: 'node',
    arrange: async (w, s) => {
      await w.storage.nodes.markRevoked(s.node.id, w.clock.now(), 1);
      return present(nodeClaim(s));
    },
    caller: 'ERR_NODE_REVOKED',
  },
  {
    name: 'node revoked, its certificates with it (a real revocation)',
    kind: 'node',
    arrange: async (w, s) => {
      await w.storage.nodes.markRevoked(s.node.id, w.clock.now(), 1);
      await w.storage.revocations.revokeCertificates({ nodeId: s.node.id }, w.clock.now(), 1);
      return present(nodeClaim(s));
    },
    caller: 'ERR_CERT_REVOKED',
  },
  {
    name: 'node certificate superseded',
    kind: 'node',
    arrange: async (w, s) => {
      await w.storage.certificates.supersedeForNode(s.node.id, 'node');
      return present(nodeClaim(s));
    },
    caller: 'ERR_CERT_SUPERSEDED',
  },
  {
    name: 'node certificate expired (by the injected clock)',
    kind: 'node',
    arrange: async (_w, s) => present(nodeClaim(s), new Date(s.nodeCert.notAfter.getTime() + 1000)),
    caller: 'ERR_CERT_EXPIRED',
  },
  {
    name: 'node certificate revoked, node active',
    kind: 'node',
    arrange: async (w, s) => {
      await w.storage.revocations.revokeCertificates({ serial: s.nodeCert.serial }, w.clock.now(), 1);
      return present(nodeClaim(s));
    },
    caller: 'ERR_CERT_REVOKED',
  },
  {
    name: 'a certificate from another CA with the same SPIFFE ID and serial',
    kind: 'node',
    arrange: async (w, s) => present(nodeClaim(s, await forgedTwin(w, s.nodeCert))),
    caller: 'ERR_NOT_AUTHENTICATED',
  },
  {
    name: 'a certificate from another CA with the same SPIFFE ID, its own serial',
    kind: 'node',
    arrange: async (w, s) => {
      const fake = await issueTo(
        w,
        w.otherCa,
        { kind: 'node', spiffeId: s.nodeCert.spiffeId, nodeId: s.node.id },
        forgetful,
      );
      return present(nodeClaim(s, fake.record));
    },
    caller: 'ERR_NOT_AUTHENTICATED',
  },
  {
    name: "another node's current certificate presented under this node's name",
    kind: 'node',
    arrange: async (w, s) => {
      const other = await subject(w);
      return present({ ...nodeClaim(s, other.nodeCert), nodeId: s.node.id });
    },
    caller: 'ERR_NOT_AUTHENTICATED',
  },
  {
    name: 'a workload certificate presented as a node',
    kind: 'node',
    arrange: async (w, s) => {
      const wl = await issueTo(w, w.ca, {
        kind: 'workload',
        spiffeId: s.entry.spiffeId,
        issuedVia: s.node.id,
      });
      return present(nodeClaim(s, wl.record));
    },
    caller: 'ERR_NOT_AUTHENTICATED',
  },
  {
    name: 'entry changed (deleted and recreated with other DNS names)',
    kind: 'node',
    arrange: async (w, s) => {
      await w.storage.entries.delete(s.entry.name);
      await w.storage.entries.insert({ ...s.entry, dnsNames: ['other.internal'], createdAt: w.clock.now() });
      return present(nodeClaim(s));
    },
    caller: 'ok',
    entryChanged: true,
  },
  {
    name: 'entry deleted',
    kind: 'node',
    arrange: async (w, s) => {
      await w.storage.entries.delete(s.entry.name);
      return present(nodeClaim(s));
    },
    caller: 'ok',
    entryChanged: true,
  },
  {
    name: 'a current admin certificate',
    kind: 'admin',
    arrange: async (_w, s) => present(adminClaim(s)),
    caller: 'ok',
  },
  {
    name: 'admin revoked',
    kind: 'admin',
    arrange: async (w, s) => {
      await w.storage.revocations.revokeCertificates({ serial: s.admin.serial }, w.clock.now(), 1);
      return present(adminClaim(s));
    },
    caller: 'ERR_CERT_REVOKED',
  },
  {
    name: 'admin certificate expired',
    kind: 'admin',
    arrange: async (_w, s) => present(adminClaim(s), new Date(s.admin.notAfter.getTime() + 1)),
    caller: 'ERR_CERT_EXPIRED',
  },
  {
    name: 'an admin certificate from another CA with the same SPIFFE ID and serial',
    kind: 'admin',
    arrange: async (w, s) => present(adminClaim(s, await forgedTwin(w, s.admin))),
    caller: 'ERR_NOT_AUTHENTICATED',
  },
  {
    name: 'an admin certificate whose role we never write',
    kind: 'admin',
    arrange: async (_w, s) => {
      const claim = adminClaim(s);
      return present({ ...claim, peer: { ...claim.peer, subject: { OU: 'root', CN: 'alice' } } });
    },
    caller: 'ERR_NOT_AUTHENTICATED',
  },
];

async function issueTo(
  w: World,
  ca: ReturnType<typeof testCa>,
  p: { kind: CertificateKind; spiffeId: string; nodeId?: string | null; issuedVia?: string | null },
  certificates = w.storage.certificates,
): Promise<IssuedLeaf> {
  return issueLeaf(
    { clock: w.clock, issuer: ca.keyring.signing, certificates },
    {
      kind: p.kind,
      spiffeId: p.spiffeId,
      subject: { O: TEST_TD, OU: p.kind === 'admin' ? 'admin' : p.kind, CN: 'x' },
      key: describePublicKey(spkiOf(generateP256().publicKey)),
      ttlMs: 3_600_000,
      nodeId: p.nodeId ?? null,
      issuedVia: p.issuedVia ?? null,
    },
  );
}

/** The other CA's leaves are recorded nowhere: issueLeaf needs a repository, this one forgets. */
const forgetful = {
  insert: async () => undefined,
} as unknown as Storage['certificates'];

async function subject(w: World): Promise<Subject> {
  const id = `n${randomBytes(5).toString('hex')}`;
  const now = w.clock.now();
  const node: NodeRecord = {
    id,
    role: 'worker',
    status: 'active',
    attestationMethod: 'join_token',
    certTtlMs: null,
    createdAt: now,
    lastAttestedAt: now,
    lastSeenAt: null,
    revokedAt: null,
    revocationReason: null,
  };
  await w.storage.nodes.insert(node);
  const nodeCert = (
    await issueTo(w, w.ca, { kind: 'node', spiffeId: `spiffe://${TEST_TD}/node/${id}`, nodeId: id })
  ).record;
  const entry: EntryRecord = {
    name: `e-${id}`,
    spiffeId: `spiffe://${TEST_TD}/svc-${id}`,
    parentNodeId: id,
    selectors: [],
    dnsNames: [`${id}.internal`],
    allowWildcardDns: false,
    ttlMs: null,
    createdBy: 'test',
    createdAt: now,
  };
  await w.storage.entries.insert(entry);
  const admin = (await issueTo(w, w.ca, { kind: 'admin', spiffeId: `spiffe://${TEST_TD}/admin/alice-${id}` }))
    .record;
  return { node, nodeCert, entry, admin };
}

const outcomeOf = async (f: () => Promise<unknown>): Promise<Outcome> => {
  try {
    await f();
    return 'ok';
  } catch (e) {
    if (isBatonError(e)) return e.code;
    throw e;
  }
};

const AUDIT: AuditContext = { actor: 'test', source: null };

const csr = async () => readCsr((await keyAndCsr()).csrPem);

function runTable(name: string, open: () => Promise<{ storage: Storage; close(): Promise<void> }>) {
  describe(name, () => {
    let w: World;
    let close: () => Promise<void>;
    beforeAll(async () => {
      const opened = await open();
      close = opened.close;
      const ca = testCa({ now: '2026-12-01T10:00:00.000Z' });
      const installation: Installation = {
        trustDomain: TEST_TD,
        publicUrl: TEST_URL,
        nodeTtlMs: 3_600_000,
        workloadTtlMs: 600_000,
        adminTtlMs: 3_600_000,
        createdAt: ca.clock.now(),
      };
      await opened.storage.cas.initialize(installation, ca.records);
      w = {
        storage: opened.storage,
        clock: ca.clock,
        ca,
        otherCa: testCa({ now: '2026-12-01T10:00:00.000Z' }),
        installation,
      };
    });
    afterAll(() => close());

    const callerDeps = (now?: Date) => ({
      clock: { now: () => now ?? w.clock.now() },
      repos: w.storage,
      trustDomain: TEST_TD,
    });

    it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
      const s = await subject(w);
      const { claim, now } = await c.arrange(w, s);
      const at = now ?? w.clock.now();

      // 1. The caller module, as a route asks it.
      expect(await outcomeOf(() => identifyClaim(callerDeps(now), claim))).toBe(c.caller);
      // 2. The caller module over rows locked in a transaction (the general paths).
      const nodeId = claim.kind === 'node' ? claim.nodeId : null;
      const locked = await outcomeOf(() =>
        w.storage.transaction(async (tx) => {
          const node = nodeId ? await tx.nodes.lockById(nodeId) : null;
          const cert = await tx.certificates.lockBySerial(claim.peer.serial);
          return decideCaller(claim, cert, node, at);
        }),
      );
      expect(locked).toBe(c.caller);
      if (c.kind !== 'node' || claim.kind !== 'node') return;

      // 3. The guarded statements: through exactly when the caller module accepts (and, for a
      // workload, the entry is unchanged); a refused statement writes nothing.
      const before = await w.storage.certificates.list({ nodeId: s.node.id });
      const wl = await issueTo(
        w,
        w.ca,
        { kind: 'workload', spiffeId: s.entry.spiffeId, issuedVia: s.node.id },
        forgetful,
      );
      const workloadGuard = await w.storage.issuances.recordWorkloadGuarded(
        wl.record,
        {
          at,
          event: 'certificate.issued',
          actor: 'test',
          source: 'test',
          subject: s.entry.spiffeId,
          outcome: 'success',
          details: {},
        },
        {
          nodeId: claim.nodeId,
          peerSerial: claim.peer.serial,
          peerDer: claim.peer.der,
          now: at,
          entry: s.entry,
        },
      );
      expect(workloadGuard).toBe(c.caller === 'ok' && !c.entryChanged);
      // The JWT-SVID guard reads the entry by SPIFFE ID alone: a recreated entry still names it.
      const jwtGuard = await w.storage.issuances.jwtMintAllowed({
        nodeId: claim.nodeId,
        peerSerial: claim.peer.serial,
        peerDer: claim.peer.der,
        now: at,
        spiffeId: s.entry.spiffeId,
      });
      expect(jwtGuard).toBe(c.caller === 'ok' && c.name !== 'entry deleted');
      expect((await w.storage.certificates.findBySerial(wl.record.serial)) !== null).toBe(workloadGuard);

      const renewed = await issueTo(
        w,
        w.ca,
        { kind: 'node', spiffeId: s.nodeCert.spiffeId, nodeId: s.node.id },
        forgetful,
      );
      const renewalGuard = await w.storage.issuances.recordRenewalGuarded(
        renewed.record,
        {
          at,
          event: 'certificate.renewed',
          actor: 'test',
          source: 'test',
          subject: s.nodeCert.spiffeId,
          outcome: 'success',
          details: {},
        },
        { nodeId: claim.nodeId, peerSerial: claim.peer.serial, peerDer: claim.peer.der, now: at },
      );
      expect(renewalGuard).toBe(c.caller === 'ok');
      const after = await w.storage.certificates.list({ nodeId: s.node.id });
      if (!renewalGuard) {
        // Nothing superseded, nothing inserted.
        expect(after.map((x) => [x.serial, x.status]).sort()).toEqual(
          before.map((x) => [x.serial, x.status]).sort(),
        );
      }
    });

    it.each(CASES.filter((c) => c.kind === 'node').map((c) => [c.name, c] as const))(
      'use cases end to end: %s',
      async (_name, c) => {
        const s = await subject(w);
        const { claim, now } = await c.arrange(w, s);
        if (claim.kind !== 'node') throw new Error('a node case');
        const clock = now ? new FakeClock(now.toISOString()) : w.clock;
        const deps = {
          clock,
          storage: w.storage,
          keyring: w.ca.keyring,
          installation: w.installation,
          attestors: new Map(),
          random: () => 0.5,
        };
        const workload = await outcomeOf(async () =>
          issueWorkloadSvid(deps, { claim, spiffeId: s.entry.spiffeId, csr: await csr(), audit: AUDIT }),
        );
        // A changed entry is found by the general path: deleted → no entry; recreated → issued
        // from the entry as it is now (the guard refused the stale one).
        const expectedWorkload =
          c.caller !== 'ok' ? c.caller : c.name === 'entry deleted' ? 'ERR_NOT_AUTHORIZED' : 'ok';
        expect(workload).toBe(expectedWorkload);
        const jwt = await outcomeOf(() =>
          mintJwtSvid(
            { ...deps, mints: { record: () => undefined } },
            { claim, spiffeId: s.entry.spiffeId, audience: ['a'], ttlMs: 300_000, audit: AUDIT },
          ),
        );
        expect(jwt).toBe(expectedWorkload);
        const renewal = await outcomeOf(async () =>
          renewNode(deps, { claim, csr: await csr(), audit: AUDIT }),
        );
        expect(renewal).toBe(c.caller);
      },
    );
  });
}

describeEachBackend('Caller contract', (backend) => {
  runTable('knex', async () => {
    const db: TestDatabase = await createTestDatabase(backend);
    await migrateLatest(db.knex);
    const storage = knexStorage(db.knex);
    return { storage, close: () => db.drop() };
  });
});

runTable('Caller contract [memory]', async () => ({
  storage: createMemoryStorage(),
  close: async () => undefined,
}));
