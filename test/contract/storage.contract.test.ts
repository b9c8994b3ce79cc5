import { randomBytes } from 'node:crypto';
import { BatonError } from '../../services/ca/src/ground/errors';
import { auditHash, auditVerifier } from '../../services/ca/src/domain/audit';
import { issueLeaf } from '../../services/ca/src/domain/issue';
import { loadKeyring } from '../../services/ca/src/domain/keyring';
import type {
  AttestationGuard,
  AttestedNode,
  AuditEvent,
  AuditFilter,
  AuditPageFilter,
  AuditRecord,
  CaRecord,
  CrossCertificateRecord,
  CertificateFilter,
  CertificatePageFilter,
  CertificateRecord,
  CrlRecord,
  EntryRecord,
  EvidenceSpend,
  Installation,
  JwtKeyRecord,
  JwtMintGuard,
  NodePageFilter,
  NodeRecord,
  Page,
  PageKey,
  PageRequest,
  NodeRole,
  RenewalGuard,
  Repositories,
  PendingUpstream,
  RevocationEvent,
  Storage,
  TokenRecord,
  TpmChallengeRecord,
  TpmEnrollmentRecord,
  TpmManufacturerCaRecord,
  WorkloadGuard,
} from '../../services/ca/src/domain/ports';
import { NO_KEY } from '../../services/ca/src/domain/upstream-ca';
import { describePublicKey, generateP256, spkiOf } from '../../services/ca/src/pki/keys';
import { migrateLatest, openDatabase } from '../../services/ca/src/storage/knex/database';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { TEST_TD, TEST_URL, testCa } from '../fixtures/test-ca';
import {
  type Backend,
  POSTGRES_SKIP_REASON,
  type TestDatabase,
  backends,
  createTestDatabase,
  postgresAdminUrl,
} from '../support/database';
import { errorOf } from '../support/errors';
import { createMemoryStorage } from '../support/memory-storage';

/**
 * The contract of every Storage port method (services/ca/src/domain/ports.ts), run on each
 * implementation: knexStorage on PGlite, on PostgreSQL (BATON_TEST_DATABASE_URL), and the in-memory
 * storage of test/support/memory-storage.ts that domain unit tests use instead of a database.
 * Every case goes through the ports only, so the three answer the same questions.
 */
type Implementation = Backend | 'memory';

function describeEachImplementation(title: string, fn: (impl: Implementation) => void): void {
  for (const impl of [...backends, 'memory'] as Implementation[])
    describe(`${title} [${impl}]`, () => fn(impl));
  if (!postgresAdminUrl) {
    describe.skip(`${title} [postgres] (${POSTGRES_SKIP_REASON})`, () => {
      it('runs on PostgreSQL', () => undefined);
    });
  }
}

/** What a promise rejects with, whatever it is; fails the test if it resolves. */
async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection, the operation succeeded');
}

/**
 * A constraint the storage does not translate (foreign key 23503, check 23514): a plain database
 * error carrying PostgreSQL's SQLSTATE, which the HTTP layer answers as a redacted 500.
 */
async function expectUntranslated(p: Promise<unknown>, sqlstate: string): Promise<void> {
  const e = await rejectionOf(p);
  expect(e).not.toBeInstanceOf(BatonError);
  expect((e as { code?: string }).code).toBe(sqlstate);
}

const T0 = Date.parse('2026-11-26T15:00:00.000Z');
const MIN = 60_000;
const HOUR = 3_600_000;
/** A moment relative to T0. */
const at = (ms: number): Date => new Date(T0 + ms);

const byId = (cas: CaRecord[]): CaRecord[] => [...cas].sort((a, b) => a.id.localeCompare(b.id));
const bySerial = (cs: CertificateRecord[]): CertificateRecord[] =>
  [...cs].sort((a, b) => a.serial.localeCompare(b.serial));
const serials = (cs: { serial: string }[]): string[] => cs.map((c) => c.serial).sort();
const tick = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
function gate(): { opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

function installationOf(ca: ReturnType<typeof testCa>, trustDomain = TEST_TD): Installation {
  return {
    trustDomain,
    publicUrl: TEST_URL,
    nodeTtlMs: 24 * 3_600_000,
    workloadTtlMs: 3_600_000,
    // Above 2^31: the bigint column must come back as the same number, not a string.
    adminTtlMs: 30 * 86_400_000,
    createdAt: ca.clock.now(),
  };
}

/** One CA hierarchy for the cases that only need CA rows to refer to (certificates.ca_id, crls.ca_id). */
const CA = testCa();
const CA_ID = CA.keyring.signing.record.id;
const ROOT_ID = CA.records.find((c) => c.kind === 'root')!.id;
const seedCa = (s: Storage) => s.cas.initialize(installationOf(CA), CA.records);

/** A hand-built record: every field set to a value the reader must return unchanged. */
function certificateRecord(caId: string, over: Partial<CertificateRecord> = {}): CertificateRecord {
  return {
    serial: randomBytes(16)
      .toString('hex')
      .replace(/^[89a-f]/, '7'),
    caId,
    kind: 'workload',
    spiffeId: `spiffe://${TEST_TD}/web`,
    nodeId: null,
    issuedVia: null,
    notBefore: new Date('2026-11-26T15:00:00.123Z'),
    notAfter: new Date('2026-11-26T16:00:00.456Z'),
    keyFingerprint: randomBytes(32).toString('hex'),
    der: randomBytes(300),
    status: 'valid',
    createdAt: new Date('2026-11-26T15:01:00.789Z'),
    revokedAt: null,
    revocationReason: null,
    ...over,
  };
}

/** A node SVID of `nodeId`, valid from T0 - 1m to T0 + 1h. */
const nodeCertificate = (nodeId: string, over: Partial<CertificateRecord> = {}): CertificateRecord =>
  certificateRecord(CA_ID, {
    kind: 'node',
    nodeId,
    spiffeId: `spiffe://${TEST_TD}/node/${nodeId}`,
    notBefore: at(-MIN),
    notAfter: at(HOUR),
    createdAt: at(0),
    ...over,
  });

const nodeRecord = (id: string, over: Partial<NodeRecord> = {}): NodeRecord => ({
  id,
  role: 'worker',
  status: 'active',
  attestationMethod: 'join_token',
  certTtlMs: null,
  createdAt: at(0),
  lastAttestedAt: at(0),
  lastSeenAt: null,
  revokedAt: null,
  revocationReason: null,
  ...over,
});

const tokenRecord = (over: Partial<TokenRecord> = {}): TokenRecord => ({
  id: `t-${randomBytes(6).toString('hex')}`,
  secretHash: randomBytes(32),
  role: 'worker',
  expiresAt: at(HOUR),
  usesAllowed: 1,
  usesLeft: 1,
  nodeName: null,
  nodeTtlMs: null,
  createdBy: 'cli:root',
  createdAt: at(0),
  ...over,
});

const entryRecord = (name: string, parentNodeId: string, over: Partial<EntryRecord> = {}): EntryRecord => ({
  name,
  spiffeId: `spiffe://${TEST_TD}/${name}`,
  parentNodeId,
  selectors: [
    { type: 'unix', key: 'uid', value: 1000 },
    { type: 'unix', key: 'gid', value: 50 },
  ],
  dnsNames: [`${name}.example.org`, `${name}.internal`],
  allowWildcardDns: false,
  ttlMs: null,
  createdBy: 'cli:root',
  createdAt: at(0),
  ...over,
});

const auditRow = (over: Partial<AuditEvent> = {}): AuditEvent => ({
  at: at(0),
  event: 'test.event',
  actor: 'cli:root',
  source: null,
  subject: null,
  outcome: 'success',
  details: {},
  ...over,
});

const eventRow = (over: Partial<Omit<RevocationEvent, 'id'>> = {}): Omit<RevocationEvent, 'id'> => ({
  kind: 'certificate',
  nodeId: null,
  serials: ['7a01'],
  reason: 1,
  actor: 'cli:root',
  createdAt: at(0),
  ...over,
});

const crlRecord = (caId: string, crlNumber: bigint, over: Partial<CrlRecord> = {}): CrlRecord => ({
  caId,
  crlNumber,
  thisUpdate: at(0),
  nextUpdate: at(HOUR),
  entries: 3,
  der: randomBytes(200),
  ...over,
});

/**
 * The world of a guarded issuance: nodes n-1 (the caller) and n-2, each with its current node
 * certificate, and the entry `web` under n-1; `now` is T0 + 1m.
 */
interface World {
  node: NodeRecord;
  peer: CertificateRecord;
  other: NodeRecord;
  otherPeer: CertificateRecord;
  entry: EntryRecord;
  now: Date;
}

async function world(s: Storage): Promise<World> {
  if (!(await s.cas.getInstallation())) await seedCa(s);
  const w: World = {
    node: nodeRecord('n-1'),
    peer: nodeCertificate('n-1'),
    other: nodeRecord('n-2'),
    otherPeer: nodeCertificate('n-2'),
    entry: entryRecord('web', 'n-1', { ttlMs: 600_000 }),
    now: at(MIN),
  };
  await s.nodes.insert(w.node);
  await s.nodes.insert(w.other);
  await s.certificates.insert(w.peer);
  await s.certificates.insert(w.otherPeer);
  await s.entries.insert(w.entry);
  return w;
}

const workloadGuard = (w: World): WorkloadGuard => ({
  nodeId: w.node.id,
  peerSerial: w.peer.serial,
  peerDer: w.peer.der,
  now: w.now,
  entry: w.entry,
});
const renewalGuard = (w: World): RenewalGuard => ({
  nodeId: w.node.id,
  peerSerial: w.peer.serial,
  peerDer: w.peer.der,
  now: w.now,
});
/** A workload leaf as the domain builds it (issuedVia and status are the statement's to set). */
const workloadLeaf = (w: World, over: Partial<CertificateRecord> = {}) =>
  certificateRecord(CA_ID, { spiffeId: w.entry.spiffeId, createdAt: w.now, ...over });
const renewedLeaf = (w: World, over: Partial<CertificateRecord> = {}) =>
  nodeCertificate(w.node.id, { createdAt: w.now, notAfter: at(2 * HOUR), ...over });
const issuedAudit = (w: World, serial: string, event = 'certificate.issued'): AuditEvent =>
  auditRow({
    at: w.now,
    event,
    actor: `spiffe://${TEST_TD}/node/${w.node.id}`,
    source: '127.0.0.1',
    subject: w.entry.spiffeId,
    details: { serial },
  });
/** The node an attestation's certificate was built for: by default a new worker, default lifetime. */
const attestedNode = (id: string, over: Partial<AttestedNode> = {}): AttestedNode => ({
  id,
  role: 'worker',
  certTtlMs: null,
  existing: false,
  ...over,
});
const attestationGuard = (spend: EvidenceSpend, node: AttestedNode, now = at(MIN)): AttestationGuard => ({
  spend,
  node,
  method: spend.kind === 'token' ? 'join_token' : spend.method,
  now,
});
/** A node leaf as the domain builds it for an attestation at `now`. */
const attestationLeaf = (nodeId: string, now = at(MIN), over: Partial<CertificateRecord> = {}) =>
  nodeCertificate(nodeId, { createdAt: now, notAfter: new Date(now.getTime() + HOUR), ...over });
const attestationAudit = (leaf: CertificateRecord, now = at(MIN)): AuditEvent =>
  auditRow({
    at: now,
    event: 'node.attested',
    actor: 'anonymous',
    source: '127.0.0.1',
    subject: leaf.spiffeId,
    details: { serial: leaf.serial, method: 'join_token' },
  });
/** The node row an attestation at `now` creates. */
const createdNode = (n: AttestedNode, method: string, now = at(MIN)): NodeRecord =>
  nodeRecord(n.id, {
    role: n.role,
    certTtlMs: n.certTtlMs,
    attestationMethod: method,
    createdAt: now,
    lastAttestedAt: now,
    lastSeenAt: now,
  });

/** An audit row as read back, id aside. */
const asStored = (e: AuditEvent): AuditRecord => ({
  ...e,
  id: expect.any(Number) as unknown as number,
  sealSeq: null,
  prevHash: null,
  hash: null,
});

/** What makes the guard of the world fail, one condition at a time; returns the guard to present. */
type Refusal<G> = [string, (s: Storage, w: World, guard: G) => Promise<G>];

/** The refusals both guarded statements share: the caller and its presented certificate. */
function callerRefusals<G extends RenewalGuard>(): Refusal<G>[] {
  return [
    [
      'the node is revoked',
      async (s, w, g) => {
        await s.nodes.markRevoked(w.node.id, w.now, 1);
        return g;
      },
    ],
    ['the node is unknown', async (_s, _w, g) => ({ ...g, nodeId: 'n-unknown' })],
    [
      'the presented certificate was superseded',
      async (s, w, g) => {
        expect(await s.certificates.supersedeForNode(w.node.id, 'node')).toBe(1);
        return g;
      },
    ],
    [
      'the presented certificate was revoked',
      async (s, w, g) => {
        expect(await s.revocations.revokeCertificates({ serial: w.peer.serial }, w.now, 1)).toEqual([
          w.peer.serial,
        ]);
        return g;
      },
    ],
    ['the presented certificate expires at now', async (_s, w, g) => ({ ...g, now: w.peer.notAfter })],
    ['the presented certificate has expired', async (_s, _w, g) => ({ ...g, now: at(2 * HOUR) })],
    [
      'the presented DER is not the recorded one',
      async (_s, w, g) => {
        const der = Buffer.from(w.peer.der);
        der.writeUInt8(der.readUInt8(0) ^ 1, 0);
        return { ...g, peerDer: der };
      },
    ],
    [
      'the presented DER is a prefix of the recorded one',
      async (_s, w, g) => ({ ...g, peerDer: w.peer.der.subarray(0, w.peer.der.length - 1) }),
    ],
    ['the presented serial is unknown', async (_s, _w, g) => ({ ...g, peerSerial: '7f'.repeat(16) })],
    [
      "the presented certificate is another node's",
      async (_s, w, g) => ({ ...g, peerSerial: w.otherPeer.serial, peerDer: w.otherPeer.der }),
    ],
    [
      'the presented certificate names the node but is not a node certificate',
      async (s, w, g) => {
        const server = nodeCertificate(w.node.id, { kind: 'server' });
        await s.certificates.insert(server);
        return { ...g, peerSerial: server.serial, peerDer: server.der };
      },
    ],
  ];
}

/** The entry the workload certificate was built from must be there, unchanged, under the node. */
const entryRefusals: Refusal<WorkloadGuard>[] = [
  [
    'the entry was deleted',
    async (s, w, g) => {
      expect(await s.entries.delete(w.entry.name)).toBe(true);
      return g;
    },
  ],
  ...(
    [
      ['the entry was recreated (created_at changed)', { createdAt: at(1) }],
      ['the entry was recreated with other DNS names', { dnsNames: ['web.example.org'] }],
      [
        'the entry was recreated with its DNS names reordered',
        { dnsNames: ['web.internal', 'web.example.org'] },
      ],
      ['the entry was recreated with another TTL', { ttlMs: 900_000 }],
      ['the entry was recreated with the default TTL', { ttlMs: null }],
      ['the entry was recreated with another SPIFFE ID', { spiffeId: `spiffe://${TEST_TD}/other` }],
      ['the entry was recreated under another node', { parentNodeId: 'n-2' }],
    ] as [string, Partial<EntryRecord>][]
  ).map(
    ([name, change]): Refusal<WorkloadGuard> => [
      name,
      async (s, w, g) => {
        expect(await s.entries.delete(w.entry.name)).toBe(true);
        await s.entries.insert({ ...w.entry, ...change });
        return g;
      },
    ],
  ),
  [
    'the guard names an entry that does not exist',
    async (_s, w, g) => ({ ...g, entry: { ...w.entry, name: 'nope' } }),
  ],
];

/** Every table the ports write, children before the tables they refer to. */
const EVERY_TABLE = [
  'audit_log',
  'revocation_events',
  'crls',
  'entries',
  'certificates',
  'join_tokens',
  'tpm_challenges',
  'attestation_nonces',
  'tpm_enrollments',
  'tpm_manufacturer_cas',
  'nodes',
  'jwt_keys',
  'ca_cross_certificates',
  'cas',
  'installation',
  'upstream_pending',
  'list_cursor_key',
];

describeEachImplementation('Storage contract', (impl) => {
  let db: TestDatabase | undefined;
  let storage: Storage;

  // One fresh, migrated database per backend, every test starting from empty tables; the memory
  // storage is made anew for every test.
  beforeAll(async () => {
    if (impl === 'memory') return;
    db = await createTestDatabase(impl);
    await migrateLatest(db.knex);
    // A table added by a later migration must be emptied between tests too.
    const tables = (await db
      .knex('information_schema.tables')
      .where({ table_schema: 'public', table_type: 'BASE TABLE' })
      .pluck('table_name')) as string[];
    expect(tables.filter((t) => !t.startsWith('baton_migrations')).sort()).toEqual([...EVERY_TABLE].sort());
  });
  afterAll(() => db?.drop());
  beforeEach(async () => {
    if (!db) {
      storage = createMemoryStorage();
      return;
    }
    // DELETE, children first: on these few rows it costs far less than TRUNCATE on PostgreSQL.
    for (const table of EVERY_TABLE) await db.knex(table).delete();
    storage = knexStorage(db.knex);
  });

  const allCertificates = () => storage.certificates.list({});

  /** Spends the nonce as an attestation does (the only writer of used_at); the outcome. */
  const spendNonce = async (nonce: string, method: string, now: Date) => {
    if (!(await storage.cas.getInstallation())) await seedCa(storage);
    const node = attestedNode(`n-${randomBytes(4).toString('hex')}`);
    const leaf = attestationLeaf(node.id, now);
    return storage.issuances.recordAttestation(
      leaf,
      attestationAudit(leaf, now),
      attestationGuard({ kind: 'nonce', nonce, method }, node, now),
    );
  };
  /** True when an attestation's one statement spent the nonce (it is the only writer of used_at). */
  const useNonce = async (nonce: string, method: string, now: Date) =>
    (await spendNonce(nonce, method, now)) === 'recorded';

  describe('cas', () => {
    it('ok/a fresh database is not initialized', async () => {
      expect(await storage.cas.getInstallation()).toBeNull();
      expect(await storage.cas.listCas()).toEqual([]);
    });

    it('ok/initialize round-trips the installation and every CA field (Buffers, Dates, numbers)', async () => {
      const ca = testCa();
      const installation = installationOf(ca);
      await storage.cas.initialize(installation, ca.records);

      const got = await storage.cas.getInstallation();
      expect(got).toStrictEqual(installation);
      expect(got!.createdAt).toBeInstanceOf(Date);

      const cas = await storage.cas.listCas();
      expect(byId(cas)).toStrictEqual(byId(ca.records));
      for (const c of cas) {
        expect(Buffer.isBuffer(c.certificateDer)).toBe(true);
        expect(Buffer.isBuffer(c.wrappedKey.blob)).toBe(true);
        expect(c.notAfter).toBeInstanceOf(Date);
      }
      // What came back is usable: the wrapped keys unwrap under the KEK and sign.
      const keyring = loadKeyring(cas, ca.kek, TEST_URL, []);
      expect(keyring.pin).toBe(ca.keyring.pin);
      expect(keyring.signing.record.id).toBe(ca.keyring.signing.record.id);
    });

    it('ok/the publication URL round-trips, and is absent when not given', async () => {
      const ca = testCa();
      const installation = { ...installationOf(ca), publicHttpUrl: 'http://pki.example.org:8080' };
      await storage.cas.initialize(installation, ca.records);
      expect(await storage.cas.getInstallation()).toStrictEqual(installation);
    });

    it.each([
      ['fail/second initialize', (s: Storage, i: Installation, r: CaRecord[]) => s.cas.initialize(i, r)],
      [
        'fail/second initialize inside a transaction',
        (s: Storage, i: Installation, r: CaRecord[]) => s.transaction((tx) => tx.cas.initialize(i, r)),
      ],
    ])('%s gives ERR_ALREADY_INITIALIZED and leaves exactly the first installation', async (_name, again) => {
      const first = testCa();
      await storage.cas.initialize(installationOf(first), first.records);
      const second = testCa({ trustDomain: 'other.example.org' });

      const e = await errorOf(again(storage, installationOf(second, 'other.example.org'), second.records));
      expect(e.code).toBe('ERR_ALREADY_INITIALIZED');

      expect(await storage.cas.getInstallation()).toStrictEqual(installationOf(first));
      expect(byId(await storage.cas.listCas())).toStrictEqual(byId(first.records));
    });

    it('ok/concurrent initializes: exactly one wins, the other writes nothing', async () => {
      const a = testCa();
      const b = testCa({ trustDomain: 'other.example.org' });
      const results = await Promise.allSettled([
        storage.cas.initialize(installationOf(a), a.records),
        storage.cas.initialize(installationOf(b, 'other.example.org'), b.records),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(rejected.map((r) => (r.reason as BatonError).code)).toEqual(['ERR_ALREADY_INITIALIZED']);
      const winner = results[0]!.status === 'fulfilled' ? a : b;
      expect(await storage.cas.getInstallation()).toStrictEqual(
        winner === a ? installationOf(a) : installationOf(b, 'other.example.org'),
      );
      expect(byId(await storage.cas.listCas())).toStrictEqual(byId(winner.records));
    });

    it('fail/initialize with a CA whose parent is unknown writes nothing (foreign key)', async () => {
      const orphan = { ...CA.records.find((c) => c.kind === 'intermediate')!, parentId: 'no-such-ca' };
      await expectUntranslated(storage.cas.initialize(installationOf(CA), [orphan]), '23503');
      expect(await storage.cas.getInstallation()).toBeNull();
      expect(await storage.cas.listCas()).toEqual([]);
    });

    it('ok/listCas orders by created_at', async () => {
      const [root, inter] = [
        CA.records.find((c) => c.kind === 'root')!,
        CA.records.find((c) => c.kind !== 'root')!,
      ];
      const older = { ...inter, createdAt: new Date(root.createdAt.getTime() - 1000) };
      await storage.cas.initialize(installationOf(CA), [root, older]);
      expect((await storage.cas.listCas()).map((c) => c.id)).toEqual([older.id, root.id]);
    });

    describe('addActiveIntermediate', () => {
      const successor = (over: Partial<CaRecord> = {}): CaRecord => ({
        ...CA.records.find((c) => c.kind === 'intermediate')!,
        id: `inter-${randomBytes(4).toString('hex')}`,
        certificateDer: randomBytes(400),
        active: false,
        createdAt: at(HOUR),
        ...over,
      });

      it('ok/adds the intermediate as the only active one; the root is untouched', async () => {
        await seedCa(storage);
        const next = successor();
        await storage.cas.addActiveIntermediate(next);
        const cas = await storage.cas.listCas();
        expect(cas.find((c) => c.id === next.id)).toStrictEqual({ ...next, active: true });
        expect(cas.find((c) => c.id === CA_ID)).toStrictEqual({
          ...CA.records.find((c) => c.id === CA_ID)!,
          active: false,
        });
        expect(cas.find((c) => c.id === ROOT_ID)).toStrictEqual(CA.records.find((c) => c.id === ROOT_ID));
        expect(cas.filter((c) => c.active && c.kind === 'intermediate').map((c) => c.id)).toEqual([next.id]);
      });

      it('ok/a second rotation deactivates the first successor', async () => {
        await seedCa(storage);
        const [first, second] = [successor(), successor({ createdAt: at(2 * HOUR) })];
        await storage.cas.addActiveIntermediate(first);
        await storage.cas.addActiveIntermediate(second);
        const active = (await storage.cas.listCas()).filter((c) => c.kind === 'intermediate' && c.active);
        expect(active.map((c) => c.id)).toEqual([second.id]);
      });

      it.each([
        [
          'fail/an existing id',
          (s: Storage, c: CaRecord) => s.cas.addActiveIntermediate({ ...c, id: CA_ID }),
        ],
        [
          'fail/an existing id, inside a transaction',
          (s: Storage, c: CaRecord) =>
            s.transaction((tx) => tx.cas.addActiveIntermediate({ ...c, id: CA_ID })),
        ],
      ])('%s gives ERR_CONFLICT and leaves the active intermediate active', async (_name, add) => {
        await seedCa(storage);
        expect((await errorOf(add(storage, successor()))).code).toBe('ERR_CONFLICT');
        expect(byId(await storage.cas.listCas())).toStrictEqual(byId(CA.records));
      });
    });

    describe('root rotation: addRoot, addCrossCertificate, retireRoots, countCertificatesUnder', () => {
      const NEW_ROOT = 'ca-root0000000000002';
      const NEW_ROOT_DER = randomBytes(400);
      const newRoot = (): CaRecord => ({
        ...CA.records.find((c) => c.kind === 'root')!,
        id: NEW_ROOT,
        certificateDer: NEW_ROOT_DER,
        createdAt: at(HOUR),
      });
      const CROSS_DER = randomBytes(420);
      const cross = (over: Partial<CrossCertificateRecord> = {}): CrossCertificateRecord => ({
        caId: CA_ID,
        issuerId: NEW_ROOT,
        certificateDer: CROSS_DER,
        notBefore: new Date('2026-11-26T15:00:00.123Z'),
        notAfter: new Date('2027-11-26T15:00:00.456Z'),
        createdAt: at(HOUR),
        ...over,
      });

      it('ok/a root is added in the bundle; a cross-certificate round-trips every field', async () => {
        await seedCa(storage);
        await storage.transaction(async (tx) => {
          await tx.cas.lockCaSet();
          await tx.cas.addRoot(newRoot());
          await tx.cas.addCrossCertificate(cross());
        });
        const cas = await storage.cas.listCas();
        expect(cas.find((c) => c.id === NEW_ROOT)).toStrictEqual({
          ...newRoot(),
          kind: 'root',
          parentId: null,
        });
        expect(cas.filter((c) => c.kind === 'root' && c.active)).toHaveLength(2);
        const got = await storage.cas.listCrossCertificates();
        expect(got).toStrictEqual([cross()]);
        expect(Buffer.isBuffer(got[0]!.certificateDer)).toBe(true);
      });

      it('fail/a second cross-certificate by the same issuer is ERR_CONFLICT; an unknown CA a foreign key error', async () => {
        await seedCa(storage);
        await storage.cas.addRoot(newRoot());
        await storage.cas.addCrossCertificate(cross());
        expect((await errorOf(storage.cas.addCrossCertificate(cross()))).code).toBe('ERR_CONFLICT');
        await expectUntranslated(storage.cas.addCrossCertificate(cross({ issuerId: 'no-such-ca' })), '23503');
        expect(await storage.cas.listCrossCertificates()).toHaveLength(1);
      });

      it('ok/retireRoots takes roots out of the bundle once, and only roots', async () => {
        await seedCa(storage);
        await storage.cas.addRoot(newRoot());
        expect(await storage.cas.retireRoots([ROOT_ID, CA_ID])).toBe(1);
        expect(await storage.cas.retireRoots([ROOT_ID])).toBe(0);
        const cas = await storage.cas.listCas();
        expect(cas.find((c) => c.id === ROOT_ID)!.active).toBe(false);
        expect(cas.find((c) => c.id === NEW_ROOT)!.active).toBe(true);
        // The intermediate is untouched.
        expect(cas.find((c) => c.id === CA_ID)!.active).toBe(true);
      });

      it('ok/countCertificatesUnder counts live valid certificates of those CAs: distinct nodes, workloads', async () => {
        await seedCa(storage);
        const now = at(0);
        const live = { notAfter: new Date(now.getTime() + HOUR) };
        await storage.certificates.insert(certificateRecord(CA_ID, { kind: 'node', nodeId: 'n1', ...live }));
        await storage.certificates.insert(certificateRecord(CA_ID, { kind: 'node', nodeId: 'n1', ...live }));
        await storage.certificates.insert(certificateRecord(CA_ID, { kind: 'node', nodeId: 'n2', ...live }));
        await storage.certificates.insert(
          certificateRecord(CA_ID, { kind: 'node', nodeId: 'n3', status: 'superseded', ...live }),
        );
        await storage.certificates.insert(
          certificateRecord(CA_ID, { kind: 'node', nodeId: 'n4', notAfter: now }),
        );
        await storage.certificates.insert(
          certificateRecord(CA_ID, { kind: 'workload', issuedVia: 'n1', ...live }),
        );
        await storage.certificates.insert(
          certificateRecord(CA_ID, { kind: 'workload', issuedVia: 'n1', status: 'revoked', ...live }),
        );
        await storage.certificates.insert(certificateRecord(CA_ID, { kind: 'admin', ...live }));
        expect(await storage.cas.countCertificatesUnder([CA_ID], now)).toEqual({
          nodes: 2,
          workloadCertificates: 1,
        });
        expect(await storage.cas.countCertificatesUnder([ROOT_ID], now)).toEqual({
          nodes: 0,
          workloadCertificates: 0,
        });
        expect(await storage.cas.countCertificatesUnder([], now)).toEqual({
          nodes: 0,
          workloadCertificates: 0,
        });
      });
    });
  });

  describe('upstream', () => {
    const settingsOf = (ca: typeof CA): PendingUpstream['installation'] => {
      const { createdAt: _, ...settings } = installationOf(ca);
      return settings;
    };
    /** A pending upstream CA with every field set (domain/upstream-ca.ts makes real ones). */
    const pending = (caId = 'ca-00112233aabbccdd', over: Partial<PendingUpstream> = {}): PendingUpstream => ({
      installation: { ...settingsOf(CA), publicHttpUrl: 'http://pki.example.org:8080' },
      caId,
      wrappedKey: { alg: 'A256GCM', kekId: 'kek-0123456789abcdef', blob: randomBytes(120) },
      spki: randomBytes(91),
      csrDer: randomBytes(400),
      createdAt: new Date('2026-12-08T02:00:00.123Z'),
      ...over,
    });

    it('ok/none is pending on a fresh database; a saved one round-trips every field', async () => {
      expect(await storage.upstream.getPending()).toBeNull();
      const p = pending();
      await storage.upstream.savePending(p);
      const got = await storage.upstream.getPending();
      expect(got).toStrictEqual(p);
      expect(
        Buffer.isBuffer(got!.csrDer) && Buffer.isBuffer(got!.spki) && Buffer.isBuffer(got!.wrappedKey.blob),
      ).toBe(true);
    });

    it('ok/without a publication URL it comes back without one', async () => {
      const p = pending('ca-00112233aabbccdd', { installation: settingsOf(CA) });
      await storage.upstream.savePending(p);
      expect(await storage.upstream.getPending()).toStrictEqual(p);
    });

    it('fail/a second pending CA gives ERR_UPSTREAM_PENDING and leaves the first', async () => {
      const first = pending();
      await storage.upstream.savePending(first);
      expect((await errorOf(storage.upstream.savePending(pending('ca-ffeeddccbbaa0011')))).code).toBe(
        'ERR_UPSTREAM_PENDING',
      );
      expect(await storage.upstream.getPending()).toStrictEqual(first);
    });

    it('ok/deletePending deletes that CA only; rolled back with its transaction', async () => {
      await storage.upstream.savePending(pending());
      expect(await storage.upstream.deletePending('ca-ffeeddccbbaa0011')).toBe(false);
      const failed = await rejectionOf(
        storage.transaction(async (tx) => {
          expect(await tx.upstream.deletePending('ca-00112233aabbccdd')).toBe(true);
          throw new Error('rolled back');
        }),
      );
      expect((failed as Error).message).toBe('rolled back');
      expect((await storage.upstream.getPending())?.caId).toBe('ca-00112233aabbccdd');
      expect(await storage.upstream.deletePending('ca-00112233aabbccdd')).toBe(true);
      expect(await storage.upstream.getPending()).toBeNull();
      expect(await storage.upstream.deletePending('ca-00112233aabbccdd')).toBe(false);
    });

    it('ok/a CA without a key (an outside CA) round-trips: alg none, empty blob', async () => {
      const keyless: CaRecord = { ...CA.records[0]!, id: 'ext-0011223344556677', wrappedKey: NO_KEY };
      await storage.cas.initialize(installationOf(CA), [keyless]);
      expect(await storage.cas.listCas()).toStrictEqual([keyless]);
    });
  });

  describe('jwtKeys', () => {
    /** A hand-built key row: every field set to a value the reader must return unchanged. */
    const jwtKey = (caId: string, over: Partial<JwtKeyRecord> = {}): JwtKeyRecord => ({
      kid: randomBytes(32).toString('base64url'),
      caId,
      spki: randomBytes(91),
      wrappedKey: { alg: 'A256GCM', kekId: 'kek-0123456789abcdef', blob: randomBytes(150) },
      createdAt: new Date('2026-11-26T15:00:00.123Z'),
      retiredAt: null,
      ...over,
    });
    /** A third CA row for a third key (one key per CA). */
    const OTHER_ID = 'ca-00112233aabbccdd';
    const seedThreeCas = async (s: Storage) => {
      await seedCa(s);
      await s.cas.addActiveIntermediate({
        ...CA.records.find((c) => c.kind === 'intermediate')!,
        id: OTHER_ID,
        certificateDer: randomBytes(400),
        createdAt: at(HOUR),
      });
    };

    it('ok/a fresh database has no key', async () => {
      expect(await storage.jwtKeys.list()).toEqual([]);
    });

    it('ok/insert then list round-trips every field (Buffers, Dates, null), oldest first, then by kid', async () => {
      await seedThreeCas(storage);
      const keys = [
        jwtKey(OTHER_ID, { createdAt: at(2 * HOUR), kid: 'b' }),
        jwtKey(CA_ID, { createdAt: at(0), retiredAt: new Date(T0 + HOUR + 0.5) }),
        jwtKey(ROOT_ID, { createdAt: at(2 * HOUR), kid: 'a' }),
      ];
      for (const k of keys) await storage.jwtKeys.insert(k);
      const got = await storage.jwtKeys.list();
      expect(got).toStrictEqual([keys[1], keys[2], keys[0]]);
      for (const k of got) {
        expect(Buffer.isBuffer(k.spki)).toBe(true);
        expect(Buffer.isBuffer(k.wrappedKey.blob)).toBe(true);
        expect(k.createdAt).toBeInstanceOf(Date);
      }
      expect(got[0]!.retiredAt).toBeInstanceOf(Date);
    });

    it.each([
      ['fail/a duplicate kid (another CA)', (k: JwtKeyRecord) => jwtKey(ROOT_ID, { kid: k.kid })],
      ['fail/a second key for the same CA', () => jwtKey(CA_ID)],
    ])('%s gives ERR_CONFLICT and keeps the first key', async (_name, second) => {
      await seedCa(storage);
      const first = jwtKey(CA_ID);
      await storage.jwtKeys.insert(first);
      expect((await errorOf(storage.jwtKeys.insert(second(first)))).code).toBe('ERR_CONFLICT');
      expect(await storage.jwtKeys.list()).toStrictEqual([first]);
    });

    it('ok/concurrent inserts of a key for one CA (two replicas starting): exactly one wins', async () => {
      await seedCa(storage);
      const [a, b] = [jwtKey(CA_ID), jwtKey(CA_ID)];
      const results = await Promise.allSettled([
        storage.transaction((tx) => tx.jwtKeys.insert(a)),
        storage.transaction((tx) => tx.jwtKeys.insert(b)),
      ]);
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(rejected.map((r) => (r.reason as BatonError).code)).toEqual(['ERR_CONFLICT']);
      const winner = results[0]!.status === 'fulfilled' ? a : b;
      expect(await storage.jwtKeys.list()).toStrictEqual([winner]);
    });

    it('fail/an unknown CA is refused untranslated (foreign key)', async () => {
      await seedCa(storage);
      await expectUntranslated(storage.jwtKeys.insert(jwtKey('ca-ffffffffffffffff')), '23503');
      expect(await storage.jwtKeys.list()).toEqual([]);
    });

    it('ok/retireOthers sets retired_at on every other unretired key, keeps earlier retirements, and counts', async () => {
      await seedThreeCas(storage);
      const earlier = jwtKey(ROOT_ID, { createdAt: at(0), retiredAt: at(HOUR) });
      const previous = jwtKey(CA_ID, { createdAt: at(HOUR) });
      const current = jwtKey(OTHER_ID, { createdAt: at(2 * HOUR) });
      for (const k of [earlier, previous, current]) await storage.jwtKeys.insert(k);

      expect(await storage.jwtKeys.retireOthers(current.kid, at(3 * HOUR))).toBe(1);
      expect(await storage.jwtKeys.list()).toStrictEqual([
        earlier,
        { ...previous, retiredAt: at(3 * HOUR) },
        current,
      ]);
      // Nothing left to retire; an unknown kid retires every key that has no retirement yet.
      expect(await storage.jwtKeys.retireOthers(current.kid, at(4 * HOUR))).toBe(0);
      expect(await storage.jwtKeys.retireOthers('no-such-kid', at(5 * HOUR))).toBe(1);
      expect((await storage.jwtKeys.list()).map((k) => k.retiredAt)).toStrictEqual([
        at(HOUR),
        at(3 * HOUR),
        at(5 * HOUR),
      ]);
    });

    it('ok/a key inserted and others retired in a transaction that rolls back are not', async () => {
      await seedThreeCas(storage);
      const previous = jwtKey(CA_ID, { createdAt: at(0) });
      await storage.jwtKeys.insert(previous);
      const boom = new Error('boom');
      await expect(
        storage.transaction(async (tx) => {
          const next = jwtKey(OTHER_ID, { createdAt: at(HOUR) });
          await tx.jwtKeys.insert(next);
          expect(await tx.jwtKeys.retireOthers(next.kid, at(HOUR))).toBe(1);
          expect(await tx.jwtKeys.list()).toHaveLength(2);
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await storage.jwtKeys.list()).toStrictEqual([previous]);
    });

    it('ok/what the caller does to a key it passed or got back changes nothing stored', async () => {
      await seedCa(storage);
      const key = jwtKey(CA_ID);
      const copy = {
        ...key,
        spki: Buffer.from(key.spki),
        wrappedKey: { ...key.wrappedKey, blob: Buffer.from(key.wrappedKey.blob) },
      };
      await storage.jwtKeys.insert(key);
      key.spki.fill(0);
      key.wrappedKey.blob.fill(0);
      const [got] = await storage.jwtKeys.list();
      expect(got).toStrictEqual(copy);
      got!.spki.fill(1);
      got!.createdAt.setTime(0);
      expect(await storage.jwtKeys.list()).toStrictEqual([copy]);
    });
  });

  describe('certificates', () => {
    let ca: ReturnType<typeof testCa>;
    beforeEach(async () => {
      ca = testCa();
      await storage.cas.initialize(installationOf(ca), ca.records);
    });

    const issue = (key = describePublicKey(spkiOf(generateP256().publicKey)), name = 'web') =>
      issueLeaf(
        { clock: ca.clock, issuer: ca.keyring.signing, certificates: storage.certificates },
        {
          kind: 'workload',
          spiffeId: `spiffe://${TEST_TD}/${name}`,
          subject: { CN: name },
          key,
          ttlMs: 3_600_000,
        },
      );

    it('ok/an issued leaf is found by serial with every field equal', async () => {
      const leaf = await issue();
      const got = await storage.certificates.findBySerial(leaf.record.serial);
      expect(got).toStrictEqual(leaf.record);
      expect(Buffer.isBuffer(got!.der)).toBe(true);
    });

    it.each([
      [
        'ok/node SVID with its node id',
        { kind: 'node', nodeId: 'n-1', spiffeId: `spiffe://${TEST_TD}/node/n-1` },
      ],
      ['ok/workload issued via a node', { kind: 'workload', issuedVia: 'n-1' }],
      ['ok/admin certificate', { kind: 'admin', spiffeId: `spiffe://${TEST_TD}/admin/alice` }],
      ['ok/superseded server certificate', { kind: 'server', status: 'superseded' }],
      ['ok/revoked certificate', { status: 'revoked' }],
      [
        'ok/revoked certificate with its time and reason',
        { status: 'revoked', revokedAt: new Date('2026-11-26T15:30:00.001Z'), revocationReason: 4 },
      ],
      ['ok/serial with leading zero octet', { serial: `00${randomBytes(15).toString('hex')}` }],
    ] as [string, Partial<CertificateRecord>][])('%s round-trips', async (_name, over) => {
      const record = certificateRecord(ca.keyring.signing.record.id, over);
      await storage.certificates.insert(record);
      expect(await storage.certificates.findBySerial(record.serial)).toStrictEqual(record);
    });

    it('ok/findByCertificate gives the node of a node certificate, every field; nothing for another kind or serial', async () => {
      const node: NodeRecord = {
        id: 'n-find',
        role: 'manager',
        status: 'active',
        attestationMethod: 'join_token',
        certTtlMs: 7_200_000,
        createdAt: new Date('2026-11-26T15:00:00.001Z'),
        lastAttestedAt: new Date('2026-11-26T15:00:00.002Z'),
        lastSeenAt: new Date('2026-11-26T15:30:00.003Z'),
        revokedAt: null,
        revocationReason: null,
      };
      await storage.nodes.insert(node);
      const caId = ca.keyring.signing.record.id;
      const cert = certificateRecord(caId, {
        kind: 'node',
        nodeId: node.id,
        spiffeId: `spiffe://${TEST_TD}/node/${node.id}`,
      });
      const workload = certificateRecord(caId, { kind: 'workload', issuedVia: node.id });
      await storage.certificates.insert(cert);
      await storage.certificates.insert(workload);
      // Twice: on PostgreSQL the second call runs the statement prepared by the first.
      expect(await storage.nodes.findByCertificate(cert.serial)).toStrictEqual(node);
      expect(await storage.nodes.findByCertificate(cert.serial)).toStrictEqual(node);
      expect(await storage.nodes.findByCertificate(workload.serial)).toBeNull();
      expect(await storage.nodes.findByCertificate('7f'.repeat(16))).toBeNull();
    });

    it('fail/a key certified once cannot be certified again, for any identity (ERR_KEY_REUSED); findByKeyFingerprint finds it', async () => {
      const key = describePublicKey(spkiOf(generateP256().publicKey));
      const a = await issue(key, 'web');
      const e = await errorOf(issue(key, 'api'));
      expect(e.code).toBe('ERR_KEY_REUSED');
      await issue(undefined, 'other');
      const got = await storage.certificates.findByKeyFingerprint(a.record.keyFingerprint);
      expect(bySerial(got)).toStrictEqual(bySerial([a.record]));
    });

    it.each([
      ['ok/unknown serial', (s: Storage) => s.certificates.findBySerial('7f'.repeat(16)), null],
      ['ok/unknown fingerprint', (s: Storage) => s.certificates.findByKeyFingerprint('00'.repeat(32)), []],
    ] as const)('%s finds nothing', async (_name, find, nothing) => {
      await issue();
      expect(await find(storage)).toStrictEqual(nothing);
    });

    it('fail/duplicate serial gives ERR_CONFLICT and keeps the first record', async () => {
      const first = certificateRecord(ca.keyring.signing.record.id);
      await storage.certificates.insert(first);
      const dup = certificateRecord(ca.keyring.signing.record.id, {
        serial: first.serial,
        spiffeId: 'spiffe://x/y',
      });
      expect((await errorOf(storage.certificates.insert(dup))).code).toBe('ERR_CONFLICT');
      expect(await storage.certificates.findBySerial(first.serial)).toStrictEqual(first);
      expect(await allCertificates()).toHaveLength(1);
    });

    it('fail/a duplicate serial with a reused key is ERR_CONFLICT (the serial is checked first)', async () => {
      const first = certificateRecord(ca.keyring.signing.record.id);
      await storage.certificates.insert(first);
      expect((await errorOf(storage.certificates.insert({ ...first }))).code).toBe('ERR_CONFLICT');
    });

    it.each([
      ['fail/an unknown CA (foreign key)', { caId: 'no-such-ca' }, '23503'],
      ['fail/an unknown kind (check)', { kind: 'bogus' as CertificateRecord['kind'] }, '23514'],
      ['fail/an unknown status (check)', { status: 'bogus' as CertificateRecord['status'] }, '23514'],
    ] as [string, Partial<CertificateRecord>, string][])(
      '%s is refused untranslated, nothing written',
      async (_n, over, code) => {
        const bad = certificateRecord(ca.keyring.signing.record.id, over);
        await expectUntranslated(storage.certificates.insert(bad), code);
        expect(await storage.certificates.findBySerial(bad.serial)).toBeNull();
      },
    );

    it.each([
      [
        'a SPIFFE ID',
        (s: Storage, c: CertificateRecord) => s.certificates.insert({ ...c, spiffeId: 'spiffe://x/\u0000' }),
      ],
      ['a looked-up serial', (s: Storage) => s.certificates.findBySerial('7f\u0000')],
    ])('fail/a NUL character in %s is ERR_BAD_REQUEST', async (_name, call) => {
      const c = certificateRecord(ca.keyring.signing.record.id);
      expect((await errorOf(call(storage, c))).code).toBe('ERR_BAD_REQUEST');
      expect(await allCertificates()).toEqual([]);
    });

    it('ok/what the caller does to a record it passed or got back changes nothing stored', async () => {
      const record = certificateRecord(ca.keyring.signing.record.id);
      const original = { ...record, der: Buffer.from(record.der) };
      await storage.certificates.insert(record);
      record.der.writeUInt8(record.der.readUInt8(0) ^ 0xff, 0);
      record.status = 'revoked';
      const got = (await storage.certificates.findBySerial(record.serial))!;
      expect(got).toStrictEqual(original);
      got.der.writeUInt8(got.der.readUInt8(1) ^ 0xff, 1);
      got.notAfter.setTime(0);
      got.status = 'superseded';
      expect(await storage.certificates.findBySerial(record.serial)).toStrictEqual(original);
    });

    it('ok/lockBySerial reads the record inside a transaction, null for an unknown serial', async () => {
      const record = certificateRecord(ca.keyring.signing.record.id);
      await storage.certificates.insert(record);
      const [got, unknown] = await storage.transaction(async (tx) => [
        await tx.certificates.lockBySerial(record.serial),
        await tx.certificates.lockBySerial('7f'.repeat(16)),
      ]);
      expect(got).toStrictEqual(record);
      expect(unknown).toBeNull();
      expect(await storage.certificates.lockBySerial(record.serial)).toStrictEqual(record);
    });

    it("ok/supersedeForNode moves only the node's valid certificates of that kind, and counts them", async () => {
      const caId = ca.keyring.signing.record.id;
      const node = (over: Partial<CertificateRecord>) =>
        certificateRecord(caId, { kind: 'node', nodeId: 'n-1', ...over });
      const current = [node({}), node({})];
      const untouched = [
        node({ status: 'revoked' }),
        node({ status: 'superseded' }),
        node({ kind: 'server' }),
        node({ nodeId: 'n-2' }),
        certificateRecord(caId, { kind: 'node', nodeId: null, issuedVia: 'n-1' }),
      ];
      // Expired but valid: superseded too (the statement does not look at time).
      const expired = node({ notAfter: at(-HOUR) });
      for (const c of [...current, ...untouched, expired]) await storage.certificates.insert(c);

      expect(await storage.certificates.supersedeForNode('n-1', 'node')).toBe(3);
      for (const c of [...current, expired])
        expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual({
          ...c,
          status: 'superseded',
        });
      for (const c of untouched) expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual(c);
      expect(await storage.certificates.supersedeForNode('n-1', 'node')).toBe(0);
      expect(await storage.certificates.supersedeForNode('n-unknown', 'node')).toBe(0);
    });

    describe('list', () => {
      // Six certificates, created a minute apart (c0 first), each a different case of the filters.
      let cs: CertificateRecord[];
      beforeEach(async () => {
        const caId = ca.keyring.signing.record.id;
        const base = (i: number, over: Partial<CertificateRecord>) =>
          certificateRecord(caId, { createdAt: at(i * MIN), notAfter: at(HOUR), ...over });
        cs = [
          base(0, { kind: 'node', nodeId: 'n-1' }),
          base(1, { kind: 'node', nodeId: 'n-1', status: 'superseded', notAfter: at(10 * MIN) }),
          base(2, { kind: 'workload', issuedVia: 'n-1' }),
          base(3, { kind: 'node', nodeId: 'n-2', status: 'revoked' }),
          base(4, { kind: 'admin', notAfter: at(30 * MIN) }),
          base(5, { kind: 'server' }),
        ];
        for (const c of cs) await storage.certificates.insert(c);
      });

      const idx = (got: CertificateRecord[]) => got.map((c) => cs.findIndex((x) => x.serial === c.serial));

      it.each([
        ['no filter: all, newest first', {}, [5, 4, 3, 2, 1, 0]],
        ['nodeId: identifies or was issued via the node', { nodeId: 'n-1' }, [2, 1, 0]],
        ['kind', { kind: 'node' }, [3, 1, 0]],
        ['status', { status: 'valid' }, [5, 4, 2, 0]],
        ['expiredAt: not_after <= the time', { expiredAt: at(30 * MIN) }, [4, 1]],
        ['validAt: not_after > the time', { validAt: at(30 * MIN) }, [5, 3, 2, 0]],
        ['limit: the newest', { limit: 2 }, [5, 4]],
        ['filters combine', { nodeId: 'n-1', kind: 'node', status: 'valid' }, [0]],
        ['an unknown node', { nodeId: 'n-unknown' }, []],
      ] as [string, CertificateFilter, number[]][])('ok/%s', async (_name, filter, want) => {
        const got = await storage.certificates.list(filter);
        expect(idx(got)).toEqual(want);
        for (const c of got) expect(c).toStrictEqual(cs[idx([c])[0]!]);
      });
    });

    describe('deleteExpired (retention)', () => {
      // notAfter at T0 + i minutes, every status and kind among them.
      let cs: CertificateRecord[];
      beforeEach(async () => {
        const caId = ca.keyring.signing.record.id;
        const statuses = ['valid', 'superseded', 'revoked'] as const;
        const kinds = ['node', 'workload', 'admin', 'server'] as const;
        cs = Array.from({ length: 8 }, (_, i) =>
          certificateRecord(caId, {
            notAfter: at(i * MIN),
            status: statuses[i % 3]!,
            kind: kinds[i % 4]!,
            ...(statuses[i % 3] === 'revoked' ? { revokedAt: at(-HOUR), revocationReason: 1 } : {}),
          }),
        );
        // Inserted out of order: the order of deletion is notAfter's, not the rows'.
        for (const c of [...cs].reverse()) await storage.certificates.insert(c);
      });
      const left = async () => serials(await allCertificates());

      it('ok/deletes exactly the rows with notAfter before the time, whatever their status and kind', async () => {
        expect(await storage.certificates.deleteExpired(at(4 * MIN), 100)).toBe(4);
        expect(await left()).toEqual(serials(cs.slice(4)));
        // notAfter equal to the time is not before it.
        expect(await storage.certificates.findBySerial(cs[4]!.serial)).toStrictEqual(cs[4]);
        expect(await storage.certificates.deleteExpired(at(4 * MIN), 100)).toBe(0);
      });

      it('ok/at most `limit` a call, earliest notAfter first', async () => {
        expect(await storage.certificates.deleteExpired(at(HOUR), 3)).toBe(3);
        expect(await left()).toEqual(serials(cs.slice(3)));
        expect(await storage.certificates.deleteExpired(at(HOUR), 3)).toBe(3);
        expect(await storage.certificates.deleteExpired(at(HOUR), 3)).toBe(2);
        expect(await left()).toEqual([]);
      });

      it('ok/a deleted key may be certified again; the kept ones may not (the unique index covers kept rows)', async () => {
        await storage.certificates.deleteExpired(at(MIN), 100);
        const again = certificateRecord(ca.keyring.signing.record.id, {
          keyFingerprint: cs[0]!.keyFingerprint,
        });
        await storage.certificates.insert(again);
        const reused = certificateRecord(ca.keyring.signing.record.id, {
          keyFingerprint: cs[1]!.keyFingerprint,
        });
        expect((await errorOf(storage.certificates.insert(reused))).code).toBe('ERR_KEY_REUSED');
      });

      it('ok/a delete in a transaction that rolls back is undone', async () => {
        await expect(
          storage.transaction(async (tx) => {
            expect(await tx.certificates.deleteExpired(at(HOUR), 100)).toBe(8);
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        expect(await left()).toEqual(serials(cs));
      });

      // PostgreSQL only: the memory storage runs one writer at a time, and PGlite has one connection,
      // so neither can hold a row in one transaction while another statement runs.
      if (impl === 'postgres')
        it('ok/a row another transaction holds is skipped, not waited for (FOR UPDATE SKIP LOCKED)', async () => {
          const held = gate();
          const locked = gate();
          const holder = storage.transaction(async (tx) => {
            await tx.certificates.lockBySerial(cs[0]!.serial);
            locked.open();
            await held.opened;
          });
          await locked.opened;
          expect(await storage.certificates.deleteExpired(at(HOUR), 100)).toBe(7);
          held.open();
          await holder;
          expect(await left()).toEqual([cs[0]!.serial]);
          expect(await storage.certificates.deleteExpired(at(HOUR), 100)).toBe(1);
        });
    });
  });

  describe('nodes', () => {
    const full = nodeRecord('n-full', {
      role: 'manager',
      status: 'revoked',
      attestationMethod: 'x509pop',
      // Above 2^31: bigint.
      certTtlMs: 40 * 86_400_000,
      createdAt: new Date('2026-11-26T15:00:00.001Z'),
      lastAttestedAt: new Date('2026-11-26T15:00:00.002Z'),
      lastSeenAt: new Date('2026-11-26T15:00:00.003Z'),
      revokedAt: new Date('2026-11-26T15:00:00.004Z'),
      revocationReason: 1,
    });

    it.each([
      ['ok/every field set', full],
      ['ok/the nullable fields null', nodeRecord('n-nulls')],
    ])('%s round-trips through insert and findById', async (_name, node) => {
      await storage.nodes.insert(node);
      expect(await storage.nodes.findById(node.id)).toStrictEqual(node);
    });

    it('fail/a duplicate id gives ERR_CONFLICT and keeps the first node', async () => {
      await storage.nodes.insert(full);
      expect((await errorOf(storage.nodes.insert(nodeRecord(full.id)))).code).toBe('ERR_CONFLICT');
      expect(await storage.nodes.findById(full.id)).toStrictEqual(full);
    });

    it.each([
      ['role', { role: 'admin' as NodeRecord['role'] }],
      ['status', { status: 'gone' as NodeRecord['status'] }],
    ])('fail/an unknown %s is refused untranslated (check)', async (_name, over) => {
      await expectUntranslated(storage.nodes.insert(nodeRecord('n-bad', over)), '23514');
      expect(await storage.nodes.findById('n-bad')).toBeNull();
    });

    it('ok/unknown ids find nothing', async () => {
      expect(await storage.nodes.findById('n-unknown')).toBeNull();
      expect(await storage.nodes.lockById('n-unknown')).toBeNull();
      expect(await storage.nodes.list()).toEqual([]);
    });

    it('ok/lockById reads the node inside a transaction', async () => {
      await storage.nodes.insert(full);
      expect(await storage.transaction((tx) => tx.nodes.lockById(full.id))).toStrictEqual(full);
    });

    it('ok/list gives every node, oldest first', async () => {
      const nodes = [
        nodeRecord('n-b', { createdAt: at(2) }),
        nodeRecord('n-a', { createdAt: at(3) }),
        nodeRecord('n-c', { createdAt: at(1) }),
      ];
      for (const n of nodes) await storage.nodes.insert(n);
      expect(await storage.nodes.list()).toStrictEqual([nodes[2], nodes[0], nodes[1]]);
    });

    it.each([
      [
        'recordSeen: the time last seen',
        (s: Storage) => s.nodes.recordSeen('n-1', at(6)),
        { lastSeenAt: at(6) },
      ],
      [
        'markRevoked: status, time and reason',
        (s: Storage) => s.nodes.markRevoked('n-1', at(7), 4),
        { status: 'revoked', revokedAt: at(7), revocationReason: 4 },
      ],
    ] as [string, (s: Storage) => Promise<void>, Partial<NodeRecord>][])(
      'ok/%s change only those fields of only that node; on an unknown node nothing',
      async (_name, change, changed) => {
        const [n1, n2] = [nodeRecord('n-1', { certTtlMs: 7_200_000 }), nodeRecord('n-2')];
        await storage.nodes.insert(n1);
        await storage.nodes.insert(n2);
        await expect(change(storage)).resolves.toBeUndefined();
        expect(await storage.nodes.findById('n-1')).toStrictEqual({ ...n1, ...changed });
        expect(await storage.nodes.findById('n-2')).toStrictEqual(n2);
        // On a node that does not exist: no error, no row.
        await storage.nodes.recordSeen('n-unknown', at(8));
        await storage.nodes.markRevoked('n-unknown', at(8), 1);
        expect(await storage.nodes.findById('n-unknown')).toBeNull();
      },
    );

    it('ok/countActive counts active nodes that hold a valid node certificate unexpired at now', async () => {
      await seedCa(storage);
      const now = at(30 * MIN);
      const cases: [NodeRecord, Partial<CertificateRecord>[]][] = [
        [nodeRecord('n-counted'), [{}]],
        [nodeRecord('n-twice'), [{}, {}]],
        [nodeRecord('n-revoked', { status: 'revoked' }), [{}]],
        [nodeRecord('n-superseded'), [{ status: 'superseded' }]],
        [nodeRecord('n-cert-revoked'), [{ status: 'revoked' }]],
        [nodeRecord('n-expired'), [{ notAfter: now }]],
        [nodeRecord('n-not-node-kind'), [{ kind: 'server' }]],
        [nodeRecord('n-none'), []],
      ];
      for (const [node, certs] of cases) {
        await storage.nodes.insert(node);
        for (const over of certs) await storage.certificates.insert(nodeCertificate(node.id, over));
      }
      expect(await storage.nodes.countActive(now)).toBe(2);
      expect(await storage.nodes.countActive(at(2 * HOUR))).toBe(0);
    });
    it('ok/reinstate: a revoked node is active again with the role given, its revocation cleared; nothing else changes', async () => {
      const revoked = nodeRecord('n-1', {
        status: 'revoked',
        revokedAt: at(7),
        revocationReason: 1,
        certTtlMs: 7_200_000,
      });
      const other = nodeRecord('n-2', { status: 'revoked', revokedAt: at(7), revocationReason: 1 });
      await storage.nodes.insert(revoked);
      await storage.nodes.insert(other);
      await storage.nodes.insert(nodeRecord('n-active'));
      expect(await storage.nodes.reinstate('n-1', 'manager')).toBe(true);
      expect(await storage.nodes.findById('n-1')).toStrictEqual({
        ...revoked,
        role: 'manager',
        status: 'active',
        revokedAt: null,
        revocationReason: null,
      });
      expect(await storage.nodes.findById('n-2')).toStrictEqual(other);
      // Not revoked, or unknown: false, nothing changed.
      expect(await storage.nodes.reinstate('n-1', 'worker')).toBe(false);
      expect((await storage.nodes.findById('n-1'))?.role).toBe('manager');
      expect(await storage.nodes.reinstate('n-active', 'manager')).toBe(false);
      expect((await storage.nodes.findById('n-active'))?.role).toBe('worker');
      expect(await storage.nodes.reinstate('n-unknown', 'worker')).toBe(false);
      expect(await storage.nodes.findById('n-unknown')).toBeNull();
    });

    it('fail/reinstate with an unknown role is refused untranslated (check) and changes nothing', async () => {
      const revoked = nodeRecord('n-1', { status: 'revoked', revokedAt: at(7), revocationReason: 1 });
      await storage.nodes.insert(revoked);
      await expectUntranslated(storage.nodes.reinstate('n-1', 'admin' as NodeRecord['role']), '23514');
      expect(await storage.nodes.findById('n-1')).toStrictEqual(revoked);
    });
  });

  describe('tpm', () => {
    const EK_A = 'a'.repeat(64);
    const EK_B = 'b'.repeat(64);
    const EXPIRES = at(5 * MIN);
    const enrollment = (over: Partial<TpmEnrollmentRecord> = {}): TpmEnrollmentRecord => ({
      ekId: EK_A,
      role: 'worker',
      enrolledBy: 'spiffe://test.example.org/admin/root',
      enrolledAt: at(1),
      ...over,
    });
    const maker = (
      fingerprint: string,
      over: Partial<TpmManufacturerCaRecord> = {},
    ): TpmManufacturerCaRecord => ({
      fingerprint,
      certificateDer: randomBytes(300),
      subject: 'CN=TPM Maker',
      notBefore: at(-HOUR),
      notAfter: at(10 * 365 * 24 * HOUR),
      role: 'manager',
      createdBy: 'spiffe://test.example.org/admin/root',
      createdAt: at(2),
      ...over,
    });
    const challenge = (nonce: string, over: Partial<TpmChallengeRecord> = {}): TpmChallengeRecord => ({
      nonce,
      expiresAt: EXPIRES,
      ekId: EK_A,
      role: 'worker',
      admittedBy: 'enrollment',
      akSpki: randomBytes(91),
      akQualifiedName: randomBytes(34),
      secretHash: randomBytes(32),
      ...over,
    });

    it('ok/enroll round-trips; enrolling again replaces the role and the enroller (an upsert)', async () => {
      const first = enrollment();
      await storage.tpm.enroll(first);
      await storage.tpm.enroll(enrollment({ ekId: EK_B }));
      expect(await storage.tpm.findEnrollment(EK_A)).toStrictEqual(first);
      const again = enrollment({
        role: 'manager',
        enrolledBy: 'spiffe://test.example.org/admin/other',
        enrolledAt: at(9),
      });
      await storage.tpm.enroll(again);
      expect(await storage.tpm.findEnrollment(EK_A)).toStrictEqual(again);
      expect(await storage.tpm.findEnrollment(EK_B)).toStrictEqual(enrollment({ ekId: EK_B }));
      expect(await storage.tpm.findEnrollment('c'.repeat(64))).toBeNull();
    });

    it.each([
      ['an EK id that is not 64 lowercase hex digits', { ekId: 'A'.repeat(64) }],
      ['a short EK id', { ekId: 'a'.repeat(63) }],
      ['an unknown role', { role: 'admin' as NodeRole }],
    ] as [string, Partial<TpmEnrollmentRecord>][])(
      'fail/enroll with %s is refused untranslated (check)',
      async (_name, over) => {
        await expectUntranslated(storage.tpm.enroll(enrollment(over)), '23514');
        expect(await storage.tpm.findEnrollment(over.ekId ?? EK_A)).toBeNull();
      },
    );

    it('ok/manufacturer CAs round-trip, listed oldest first then by fingerprint; a duplicate is ERR_CONFLICT', async () => {
      const cas = [
        maker('f2', { createdAt: at(5) }),
        maker('f3', { createdAt: at(1), role: 'worker' }),
        maker('f1', { createdAt: at(5) }),
      ];
      for (const c of cas) await storage.tpm.addManufacturerCa(c);
      expect(await storage.tpm.listManufacturerCas()).toStrictEqual([cas[1], cas[2], cas[0]]);
      expect((await errorOf(storage.tpm.addManufacturerCa(maker('f1', { subject: 'CN=Other' })))).code).toBe(
        'ERR_CONFLICT',
      );
      expect((await storage.tpm.listManufacturerCas()).find((c) => c.fingerprint === 'f1')).toStrictEqual(
        cas[2],
      );
    });

    it('fail/a manufacturer CA with an unknown role is refused untranslated (check)', async () => {
      await expectUntranslated(
        storage.tpm.addManufacturerCa(maker('f1', { role: 'admin' as NodeRole })),
        '23514',
      );
      expect(await storage.tpm.listManufacturerCas()).toEqual([]);
    });

    it('ok/a challenge: found while its tpm nonce is unused and unexpired, spent by an attestation like any nonce', async () => {
      const c = challenge('tpm-1');
      await storage.tpm.insertChallenge(c);
      expect(await storage.tpm.findChallenge('tpm-1', at(0))).toStrictEqual(c);
      expect(await storage.tpm.findChallenge('tpm-1', new Date(EXPIRES.getTime() - 1))).toStrictEqual(c);
      expect(await storage.tpm.findChallenge('tpm-1', EXPIRES)).toBeNull();
      expect(await storage.tpm.findChallenge('tpm-unknown', at(0))).toBeNull();
      // Its nonce is an attestation_nonces row of method tpm: another method does not spend it.
      expect(await useNonce('tpm-1', 'x509pop', at(0))).toBe(false);
      expect(await useNonce('tpm-1', 'tpm', at(0))).toBe(true);
      expect(await storage.tpm.findChallenge('tpm-1', at(0))).toBeNull();
      expect(await useNonce('tpm-1', 'tpm', at(0))).toBe(false);
    });

    it('ok/an x509pop nonce has no challenge; a duplicate nonce is ERR_CONFLICT and writes neither row', async () => {
      await storage.nonces.insert('pop-1', 'x509pop', EXPIRES);
      expect(await storage.tpm.findChallenge('pop-1', at(0))).toBeNull();
      expect((await errorOf(storage.tpm.insertChallenge(challenge('pop-1')))).code).toBe('ERR_CONFLICT');
      expect(await storage.tpm.findChallenge('pop-1', at(0))).toBeNull();
      // The x509pop nonce is untouched.
      expect(await useNonce('pop-1', 'x509pop', at(0))).toBe(true);
      await storage.tpm.insertChallenge(challenge('tpm-1'));
      expect((await errorOf(storage.tpm.insertChallenge(challenge('tpm-1', { ekId: EK_B })))).code).toBe(
        'ERR_CONFLICT',
      );
      expect((await storage.tpm.findChallenge('tpm-1', at(0)))?.ekId).toBe(EK_A);
    });

    it('fail/a challenge with an unknown role writes neither its nonce nor its row', async () => {
      await expectUntranslated(
        storage.tpm.insertChallenge(challenge('tpm-1', { role: 'admin' as NodeRole })),
        '23514',
      );
      expect(await useNonce('tpm-1', 'tpm', at(0))).toBe(false);
      await storage.tpm.insertChallenge(challenge('tpm-1'));
      expect(await storage.tpm.findChallenge('tpm-1', at(0))).not.toBeNull();
    });

    it('ok/purging an expired nonce deletes its challenge too (the name is free again)', async () => {
      await storage.tpm.insertChallenge(challenge('tpm-old', { expiresAt: at(MIN) }));
      await storage.tpm.insertChallenge(challenge('tpm-live', { expiresAt: at(HOUR) }));
      expect(await storage.nonces.purgeExpired(at(10 * MIN), 10)).toBe(1);
      expect(await storage.tpm.findChallenge('tpm-live', at(10 * MIN))).not.toBeNull();
      const again = challenge('tpm-old', { expiresAt: at(HOUR) });
      await storage.tpm.insertChallenge(again);
      expect(await storage.tpm.findChallenge('tpm-old', at(10 * MIN))).toStrictEqual(again);
    });

    it('ok/what a transaction that rolls back wrote is not there', async () => {
      const boom = new Error('boom');
      await expect(
        storage.transaction(async (tx) => {
          await tx.tpm.enroll(enrollment());
          await tx.tpm.addManufacturerCa(maker('f1'));
          await tx.tpm.insertChallenge(challenge('tpm-1'));
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await storage.tpm.findEnrollment(EK_A)).toBeNull();
      expect(await storage.tpm.listManufacturerCas()).toEqual([]);
      expect(await storage.tpm.findChallenge('tpm-1', at(0))).toBeNull();
    });

    it('ok/concurrent enrollments of one EK: one row, one of the roles', async () => {
      await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          storage.tpm.enroll(enrollment({ role: i % 2 ? 'manager' : 'worker' })),
        ),
      );
      expect(['worker', 'manager']).toContain((await storage.tpm.findEnrollment(EK_A))?.role);
    });
  });

  describe('tokens', () => {
    it.each([
      ['ok/unbound, default TTL', tokenRecord()],
      [
        'ok/bound to a node name, with a node TTL above 2^31 ms',
        tokenRecord({
          role: 'manager',
          nodeName: 'node-a',
          nodeTtlMs: 40 * 86_400_000,
          usesAllowed: 5,
          usesLeft: 3,
        }),
      ],
    ])('%s round-trips through insert and findById', async (_name, token) => {
      await storage.tokens.insert(token);
      const got = await storage.tokens.findById(token.id);
      expect(got).toStrictEqual(token);
      expect(Buffer.isBuffer(got!.secretHash)).toBe(true);
    });

    it('fail/a duplicate id gives ERR_CONFLICT and keeps the first token', async () => {
      const token = tokenRecord();
      await storage.tokens.insert(token);
      expect((await errorOf(storage.tokens.insert({ ...token, usesAllowed: 9, usesLeft: 9 }))).code).toBe(
        'ERR_CONFLICT',
      );
      expect(await storage.tokens.findById(token.id)).toStrictEqual(token);
    });

    it.each([
      ['more uses left than allowed', { usesAllowed: 1, usesLeft: 2 }],
      ['negative uses left', { usesLeft: -1 }],
      ['an unknown role', { role: 'admin' as TokenRecord['role'] }],
    ] as [string, Partial<TokenRecord>][])('fail/%s is refused untranslated (check)', async (_name, over) => {
      const token = tokenRecord(over);
      await expectUntranslated(storage.tokens.insert(token), '23514');
      expect(await storage.tokens.findById(token.id)).toBeNull();
    });

    it('ok/an unknown token is not found', async () => {
      expect(await storage.tokens.findById('t-unknown')).toBeNull();
      expect(await storage.tokens.findForAttestation('t-unknown')).toBeNull();
    });

    it('ok/findForAttestation: the token, and the node its name binds when that node exists', async () => {
      const unbound = tokenRecord();
      const boundNew = tokenRecord({ nodeName: 'node-new', nodeTtlMs: 40 * 86_400_000 });
      const boundOld = tokenRecord({ nodeName: 'node-old', role: 'manager' });
      const node = nodeRecord('node-old', {
        role: 'manager',
        status: 'revoked',
        certTtlMs: 7_200_000,
        lastSeenAt: at(3),
        revokedAt: at(4),
        revocationReason: 1,
      });
      for (const t of [unbound, boundNew, boundOld]) await storage.tokens.insert(t);
      await storage.nodes.insert(node);
      await storage.nodes.insert(nodeRecord('node-other'));

      expect(await storage.tokens.findForAttestation(unbound.id)).toStrictEqual({
        token: unbound,
        boundNode: null,
      });
      expect(await storage.tokens.findForAttestation(boundNew.id)).toStrictEqual({
        token: boundNew,
        boundNode: null,
      });
      const got = await storage.tokens.findForAttestation(boundOld.id);
      expect(got).toStrictEqual({ token: boundOld, boundNode: node });
      expect(Buffer.isBuffer(got!.token.secretHash)).toBe(true);
    });

    it('ok/spendBoundTo spends every remaining use of the tokens bound to the name and counts the tokens', async () => {
      const bound = [
        tokenRecord({ nodeName: 'node-a', usesAllowed: 3, usesLeft: 2 }),
        tokenRecord({ nodeName: 'node-a', usesAllowed: 1, usesLeft: 1, expiresAt: at(-HOUR) }),
      ];
      const spent = tokenRecord({ nodeName: 'node-a', usesAllowed: 1, usesLeft: 0 });
      const others = [tokenRecord({ nodeName: 'node-b' }), tokenRecord({ nodeName: null })];
      for (const t of [...bound, spent, ...others]) await storage.tokens.insert(t);

      expect(await storage.tokens.spendBoundTo('node-a')).toBe(2);
      for (const t of [...bound, spent])
        expect(await storage.tokens.findById(t.id)).toStrictEqual({ ...t, usesLeft: 0 });
      for (const t of others) expect(await storage.tokens.findById(t.id)).toStrictEqual(t);
      expect(await storage.tokens.spendBoundTo('node-a')).toBe(0);
      expect(await storage.tokens.spendBoundTo('node-unknown')).toBe(0);
    });
  });

  describe('nonces', () => {
    const EXPIRES = at(5 * MIN);

    it('ok/a nonce is spent once', async () => {
      await storage.nonces.insert('nonce-1', 'x509pop', EXPIRES);
      expect(await spendNonce('nonce-1', 'x509pop', at(0))).toBe('recorded');
      expect(await spendNonce('nonce-1', 'x509pop', at(0))).toBe('evidence-spent');
    });

    it('fail/a duplicate nonce gives ERR_CONFLICT', async () => {
      await storage.nonces.insert('nonce-1', 'x509pop', EXPIRES);
      expect((await errorOf(storage.nonces.insert('nonce-1', 'x509pop', at(HOUR)))).code).toBe(
        'ERR_CONFLICT',
      );
      // The first one stands: it still expires at EXPIRES.
      expect(await spendNonce('nonce-1', 'x509pop', EXPIRES)).toBe('evidence-spent');
    });

    it('ok/a nonce inserted in a transaction that rolls back is not', async () => {
      const boom = new Error('boom');
      await expect(
        storage.transaction(async (tx) => {
          await tx.nonces.insert('nonce-2', 'x509pop', EXPIRES);
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await spendNonce('nonce-2', 'x509pop', at(0))).toBe('evidence-spent');
      await storage.nonces.insert('nonce-2', 'x509pop', EXPIRES);
      expect(await spendNonce('nonce-2', 'x509pop', at(0))).toBe('recorded');
    });

    it('ok/purgeExpired deletes up to `limit` nonces expired at now, used or not, and counts them', async () => {
      const now = at(10 * MIN);
      for (const [nonce, expires] of [
        ['old-1', at(MIN)],
        ['old-2', at(2 * MIN)],
        ['old-used', at(3 * MIN)],
        ['at-now', now],
        ['fresh', at(HOUR)],
      ] as const)
        await storage.nonces.insert(nonce, 'x509pop', expires);
      expect(await spendNonce('old-used', 'x509pop', at(0))).toBe('recorded');

      expect(await storage.nonces.purgeExpired(now, 3)).toBe(3);
      expect(await storage.nonces.purgeExpired(now, 3)).toBe(1);
      expect(await storage.nonces.purgeExpired(now, 3)).toBe(0);
      // The purged names are free again; the fresh nonce was kept (a duplicate) and still works.
      for (const nonce of ['old-1', 'old-2', 'old-used', 'at-now'])
        await storage.nonces.insert(nonce, 'x509pop', at(HOUR));
      expect((await errorOf(storage.nonces.insert('fresh', 'x509pop', at(HOUR)))).code).toBe('ERR_CONFLICT');
      expect(await spendNonce('fresh', 'x509pop', now)).toBe('recorded');
    });
  });

  describe('entries', () => {
    beforeEach(async () => {
      await storage.nodes.insert(nodeRecord('n-1'));
      await storage.nodes.insert(nodeRecord('n-2'));
    });

    it.each([
      ['ok/default TTL, no DNS names', entryRecord('web', 'n-1', { dnsNames: [], selectors: [] })],
      [
        'ok/every field set',
        entryRecord('api', 'n-2', {
          ttlMs: 40 * 86_400_000,
          allowWildcardDns: true,
          dnsNames: ['*.api.example.org', 'api.example.org'],
          selectors: [
            { type: 'unix', key: 'uid', value: 1000 },
            { type: 'unix', key: 'path', value: '/usr/bin/api server' },
          ],
          hint: 'internal',
          createdAt: new Date('2026-11-26T15:00:00.123Z'),
        }),
      ],
    ])('%s round-trips through insert and findByName', async (_name, entry) => {
      await storage.entries.insert(entry);
      expect(await storage.entries.findByName(entry.name)).toStrictEqual(entry);
    });

    it('ok/the same SPIFFE ID under another node is another entry', async () => {
      const a = entryRecord('web-a', 'n-1', { spiffeId: `spiffe://${TEST_TD}/web` });
      const b = entryRecord('web-b', 'n-2', { spiffeId: `spiffe://${TEST_TD}/web` });
      await storage.entries.insert(a);
      await storage.entries.insert(b);
      expect(await storage.entries.findForNode('n-1', a.spiffeId)).toStrictEqual(a);
      expect(await storage.entries.findForNode('n-2', a.spiffeId)).toStrictEqual(b);
    });

    it.each([
      ['the same name', { spiffeId: `spiffe://${TEST_TD}/other`, parentNodeId: 'n-2' }],
      ['the same SPIFFE ID under the same node', { name: 'web-2' }],
    ] as [string, Partial<EntryRecord>][])(
      'fail/%s gives ERR_CONFLICT and keeps the first entry',
      async (_name, over) => {
        const first = entryRecord('web', 'n-1');
        await storage.entries.insert(first);
        const dup = { ...first, ...over };
        expect((await errorOf(storage.entries.insert(dup))).code).toBe('ERR_CONFLICT');
        expect(await storage.entries.list()).toStrictEqual([first]);
      },
    );

    it('fail/an unknown parent node is refused untranslated (foreign key)', async () => {
      await expectUntranslated(storage.entries.insert(entryRecord('web', 'n-unknown')), '23503');
      expect(await storage.entries.findByName('web')).toBeNull();
    });

    it('ok/findForNode: by parent and SPIFFE ID, nothing for another node or ID', async () => {
      const entry = entryRecord('web', 'n-1');
      await storage.entries.insert(entry);
      expect(await storage.entries.findForNode('n-1', entry.spiffeId)).toStrictEqual(entry);
      expect(await storage.entries.findForNode('n-2', entry.spiffeId)).toBeNull();
      expect(await storage.entries.findForNode('n-1', `spiffe://${TEST_TD}/api`)).toBeNull();
      expect(await storage.entries.findByName('api')).toBeNull();
    });

    it.each([
      ['no filter: all, by name', undefined, ['a', 'b', 'c']],
      ['an empty filter: all', {}, ['a', 'b', 'c']],
      ['by parent', { parentNodeId: 'n-1' }, ['a', 'c']],
      ['by an unknown parent', { parentNodeId: 'n-unknown' }, []],
    ])('ok/list %s', async (_name, filter, names) => {
      const entries = [entryRecord('c', 'n-1'), entryRecord('a', 'n-1'), entryRecord('b', 'n-2')];
      for (const e of entries) await storage.entries.insert(e);
      const got = await storage.entries.list(filter);
      expect(got).toStrictEqual(names.map((n) => entries.find((e) => e.name === n)));
    });

    it('ok/delete: true when it existed, then false; the name and the SPIFFE ID are free again', async () => {
      const entry = entryRecord('web', 'n-1');
      await storage.entries.insert(entry);
      expect(await storage.entries.delete('web')).toBe(true);
      expect(await storage.entries.delete('web')).toBe(false);
      expect(await storage.entries.findByName('web')).toBeNull();
      expect(await storage.entries.findForNode('n-1', entry.spiffeId)).toBeNull();
      // Recreated by name: a new entry with its own created_at (what the guarded issuance compares).
      const again = { ...entry, createdAt: at(MIN), dnsNames: ['web.example.org'] };
      await storage.entries.insert(again);
      expect(await storage.entries.findByName('web')).toStrictEqual(again);
      expect(await storage.entries.findForNode('n-1', entry.spiffeId)).toStrictEqual(again);
    });

    it('ok/what the caller does to an entry it got back changes nothing stored', async () => {
      const entry = entryRecord('web', 'n-1');
      await storage.entries.insert(entry);
      const got = (await storage.entries.findByName('web'))!;
      got.dnsNames.push('evil.example.org');
      got.selectors[0]!.value = 0;
      expect(await storage.entries.findByName('web')).toStrictEqual(entry);
    });
  });

  describe('revocations', () => {
    beforeEach(() => seedCa(storage));

    describe('revokeCertificates', () => {
      it('ok/by serial: a valid or superseded certificate, unexpired at `at`, with its time and reason', async () => {
        const valid = certificateRecord(CA_ID);
        const superseded = certificateRecord(CA_ID, { status: 'superseded' });
        for (const c of [valid, superseded]) await storage.certificates.insert(c);
        for (const c of [valid, superseded]) {
          expect(await storage.revocations.revokeCertificates({ serial: c.serial }, at(MIN), 4)).toEqual([
            c.serial,
          ]);
          expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual({
            ...c,
            status: 'revoked',
            revokedAt: at(MIN),
            revocationReason: 4,
          });
        }
      });

      it.each([
        [
          'already revoked (the first time and reason stay)',
          { status: 'revoked', revokedAt: at(0), revocationReason: 1 },
          at(MIN),
        ],
        ['expired at `at`', {}, new Date('2026-11-26T16:00:00.456Z')],
      ] as [string, Partial<CertificateRecord>, Date][])(
        'ok/by serial, nothing when %s',
        async (_name, over, when) => {
          const c = certificateRecord(CA_ID, over);
          await storage.certificates.insert(c);
          expect(await storage.revocations.revokeCertificates({ serial: c.serial }, when, 9)).toEqual([]);
          expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual(c);
          expect(
            await storage.revocations.revokeCertificates({ serial: '7f'.repeat(16) }, at(MIN), 9),
          ).toEqual([]);
        },
      );

      it("ok/by node: every unexpired certificate that identifies the node or was issued through it, no other node's", async () => {
        const hit = [
          certificateRecord(CA_ID, { kind: 'node', nodeId: 'n-1' }),
          certificateRecord(CA_ID, { kind: 'node', nodeId: 'n-1', status: 'superseded' }),
          certificateRecord(CA_ID, { issuedVia: 'n-1' }),
        ];
        const missed = [
          certificateRecord(CA_ID, { kind: 'node', nodeId: 'n-1', notAfter: at(0) }),
          certificateRecord(CA_ID, {
            issuedVia: 'n-1',
            status: 'revoked',
            revokedAt: at(0),
            revocationReason: 1,
          }),
          certificateRecord(CA_ID, { kind: 'node', nodeId: 'n-2' }),
          certificateRecord(CA_ID, { issuedVia: 'n-2' }),
        ];
        for (const c of [...hit, ...missed]) await storage.certificates.insert(c);
        const got = await storage.revocations.revokeCertificates({ nodeId: 'n-1' }, at(MIN), 1);
        expect([...got].sort()).toEqual(serials(hit));
        for (const c of hit)
          expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual({
            ...c,
            status: 'revoked',
            revokedAt: at(MIN),
            revocationReason: 1,
          });
        for (const c of missed) expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual(c);
        expect(await storage.revocations.revokeCertificates({ nodeId: 'n-1' }, at(MIN), 1)).toEqual([]);
      });
    });

    describe('events', () => {
      it('ok/a fresh feed is empty', async () => {
        expect(await storage.revocations.lastEventId()).toBe(0);
        expect(await storage.revocations.eventsSince(0, 10)).toEqual([]);
      });

      it('ok/appendEvent returns the event with an id; ids grow; eventsSince pages in id order', async () => {
        const e1 = await storage.revocations.appendEvent(
          eventRow({ kind: 'node', nodeId: 'n-1', serials: ['7a', '7b'] }),
        );
        const e2 = await storage.revocations.appendEvent(
          eventRow({ serials: [], reason: 0, createdAt: at(1) }),
        );
        const e3 = await storage.revocations.appendEvent(eventRow({ actor: 'spiffe://x/admin/bob' }));
        expect(e1).toStrictEqual({
          ...eventRow({ kind: 'node', nodeId: 'n-1', serials: ['7a', '7b'] }),
          id: e1.id,
        });
        expect(e1.id).toBeGreaterThan(0);
        expect(e2.id).toBeGreaterThan(e1.id);
        expect(e3.id).toBeGreaterThan(e2.id);
        expect(await storage.revocations.eventsSince(0, 10)).toStrictEqual([e1, e2, e3]);
        expect(await storage.revocations.eventsSince(e1.id, 10)).toStrictEqual([e2, e3]);
        expect(await storage.revocations.eventsSince(e1.id, 1)).toStrictEqual([e2]);
        expect(await storage.revocations.eventsSince(e3.id, 10)).toEqual([]);
        expect(await storage.revocations.lastEventId()).toBe(e3.id);
      });

      it('ok/an event appended in a transaction that rolls back is gone, and its id is not given again', async () => {
        const e1 = await storage.revocations.appendEvent(eventRow());
        let burned = 0;
        await expect(
          storage.transaction(async (tx) => {
            burned = (await tx.revocations.appendEvent(eventRow())).id;
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        const e3 = await storage.revocations.appendEvent(eventRow());
        expect(burned).toBeGreaterThan(e1.id);
        expect(e3.id).toBeGreaterThan(burned);
        expect(await storage.revocations.eventsSince(0, 10)).toStrictEqual([e1, e3]);
        expect(await storage.revocations.lastEventId()).toBe(e3.id);
      });

      it('ok/an entry event (no serials) is stored and read back', async () => {
        const e = await storage.revocations.appendEvent(
          eventRow({ kind: 'entry', serials: [], nodeId: 'n-1' }),
        );
        expect(await storage.revocations.eventsSince(e.id - 1, 10)).toStrictEqual([e]);
      });

      it('fail/an unknown kind is refused untranslated (check)', async () => {
        await expectUntranslated(
          storage.revocations.appendEvent(eventRow({ kind: 'expired' as RevocationEvent['kind'] })),
          '23514',
        );
        expect(await storage.revocations.lastEventId()).toBe(0);
      });
    });

    it("ok/revokedForCa: the CA's revoked certificates unexpired at now, by serial, with time and reason", async () => {
      const listed = [
        certificateRecord(CA_ID, {
          serial: '7b01',
          status: 'revoked',
          revokedAt: at(1),
          revocationReason: 1,
        }),
        certificateRecord(CA_ID, {
          serial: '7a01',
          status: 'revoked',
          revokedAt: at(2),
          revocationReason: 0,
        }),
      ];
      const unlisted = [
        certificateRecord(CA_ID, {
          status: 'revoked',
          revokedAt: at(1),
          revocationReason: 1,
          notAfter: at(MIN),
        }),
        certificateRecord(CA_ID, { status: 'valid' }),
        certificateRecord(CA_ID, { status: 'superseded' }),
        certificateRecord(ROOT_ID, { status: 'revoked', revokedAt: at(1), revocationReason: 1 }),
      ];
      for (const c of [...listed, ...unlisted]) await storage.certificates.insert(c);
      expect(await storage.revocations.revokedForCa(CA_ID, at(MIN))).toStrictEqual([
        { serial: '7a01', revokedAt: at(2), reason: 0 },
        { serial: '7b01', revokedAt: at(1), reason: 1 },
      ]);
      expect(await storage.revocations.revokedForCa('no-such-ca', at(MIN))).toEqual([]);
      expect(await storage.revocations.revokedForCa(CA_ID, at(2 * HOUR))).toEqual([]);
    });

    it('ok/a certificate revoked through revokeCertificates is listed for its CA', async () => {
      const c = certificateRecord(CA_ID);
      await storage.certificates.insert(c);
      await storage.revocations.revokeCertificates({ serial: c.serial }, at(MIN), 5);
      expect(await storage.revocations.revokedForCa(CA_ID, at(MIN))).toStrictEqual([
        { serial: c.serial, revokedAt: at(MIN), reason: 5 },
      ]);
    });
  });

  describe('crls', () => {
    beforeEach(() => seedCa(storage));

    it('ok/nextNumber only grows, never repeats (also concurrently), a bigint', async () => {
      const a = await storage.crls.nextNumber();
      const b = await storage.crls.nextNumber();
      expect(typeof a).toBe('bigint');
      expect(b).toBeGreaterThan(a);
      const many = await Promise.all(Array.from({ length: 6 }, () => storage.crls.nextNumber()));
      expect(new Set(many).size).toBe(6);
      for (const n of many) expect(n).toBeGreaterThan(b);
    });

    it('ok/a number drawn in a transaction that rolls back is not given again', async () => {
      let drawn = 0n;
      await expect(
        storage.transaction(async (tx) => {
          drawn = await tx.crls.nextNumber();
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect(await storage.crls.nextNumber()).toBeGreaterThan(drawn);
    });

    it("ok/latest gives each CA's highest-numbered CRL, every field; null before the first", async () => {
      expect(await storage.crls.latest(CA_ID)).toBeNull();
      const crls = [
        crlRecord(CA_ID, 5n),
        crlRecord(CA_ID, 7n, { entries: 0 }),
        crlRecord(ROOT_ID, 9n),
        crlRecord(CA_ID, 6n),
      ];
      for (const c of crls) await storage.crls.insert(c);
      const got = await storage.crls.latest(CA_ID);
      expect(got).toStrictEqual(crls[1]);
      expect(Buffer.isBuffer(got!.der)).toBe(true);
      expect(await storage.crls.latest(ROOT_ID)).toStrictEqual(crls[2]);
      expect(await storage.crls.latest('no-such-ca')).toBeNull();
    });

    it('ok/a CRL number above 2^53 round-trips exactly', async () => {
      const crl = crlRecord(CA_ID, 2n ** 60n + 1n);
      await storage.crls.insert(crl);
      expect(await storage.crls.latest(CA_ID)).toStrictEqual(crl);
    });

    it.each([
      ['the same CA', CA_ID],
      ['another CA', ROOT_ID],
    ])('fail/a CRL number used by %s gives ERR_CONFLICT', async (_name, caId) => {
      const first = crlRecord(CA_ID, 5n);
      await storage.crls.insert(first);
      expect((await errorOf(storage.crls.insert(crlRecord(caId, 5n)))).code).toBe('ERR_CONFLICT');
      expect(await storage.crls.latest(CA_ID)).toStrictEqual(first);
    });

    it('fail/an unknown CA is refused untranslated (foreign key)', async () => {
      await expectUntranslated(storage.crls.insert(crlRecord('no-such-ca', 5n)), '23503');
      expect(await storage.crls.latest('no-such-ca')).toBeNull();
    });

    it('ok/lockBuilder resolves outside a transaction (released at once)', async () => {
      await expect(storage.crls.lockBuilder()).resolves.toBeUndefined();
      await expect(storage.crls.lockBuilder()).resolves.toBeUndefined();
    });
  });

  describe('audit', () => {
    it('ok/append then list: every field, details as JSON, no seal yet', async () => {
      const event = auditRow({
        event: 'node.attested',
        actor: 'spiffe://test.example.org/admin/alice',
        source: '10.0.0.1',
        subject: 'spiffe://test.example.org/node/n-1',
        outcome: 'failure',
        details: { serial: '7a', nested: { list: [1, 'two', null, true], n: 1.5 }, empty: {} },
      });
      await storage.audit.append(event);
      const [got] = await storage.audit.list({});
      expect(got).toStrictEqual(asStored(event));
      expect(await storage.audit.countUnsealed()).toBe(1);
      expect(await storage.audit.sealedAfter(0, 10)).toEqual([]);
    });

    it('ok/details are stored as JSON: undefined members are dropped', async () => {
      await storage.audit.append(auditRow({ details: { kept: 1, dropped: undefined } }));
      expect((await storage.audit.list({}))[0]!.details).toStrictEqual({ kept: 1 });
    });

    it('fail/a NUL character in the details is ERR_BAD_REQUEST, nothing written', async () => {
      expect((await errorOf(storage.audit.append(auditRow({ details: { x: 'a\u0000b' } })))).code).toBe(
        'ERR_BAD_REQUEST',
      );
      expect(await storage.audit.list({})).toEqual([]);
    });

    describe('list', () => {
      // Six rows, one per minute: n is the order of append.
      beforeEach(async () => {
        const rows: Partial<AuditEvent>[] = [
          { actor: 'alice', subject: 's1', event: 'e.a' },
          { actor: 'bob', subject: 's1', event: 'e.b' },
          { actor: 'alice', subject: 's2', event: 'e.b' },
          { actor: 'bob', subject: null, event: 'e.a' },
          { actor: 'alice', subject: 's1', event: 'e.c' },
          { actor: 'carol', subject: 's2', event: 'e.a' },
        ];
        for (const [n, row] of rows.entries())
          await storage.audit.append(auditRow({ ...row, at: at(n * MIN), details: { n } }));
      });

      it.each([
        ['no filter: newest first', {}, [5, 4, 3, 2, 1, 0]],
        ['actor', { actor: 'alice' }, [4, 2, 0]],
        ['subject', { subject: 's1' }, [4, 1, 0]],
        ['event', { event: 'e.a' }, [5, 3, 0]],
        ['since: at >= the time', { since: at(2 * MIN) }, [5, 4, 3, 2]],
        ['until: at < the time', { until: at(2 * MIN) }, [1, 0]],
        ['limit: the newest', { limit: 2 }, [5, 4]],
        ['filters combine', { actor: 'alice', subject: 's1', since: at(MIN) }, [4]],
        ['nothing matches', { actor: 'nobody' }, []],
      ] as [string, AuditFilter, number[]][])('ok/%s', async (_name, filter, want) => {
        const got = await storage.audit.list(filter);
        expect(got.map((r) => r.details.n)).toEqual(want);
        // Ids grow in append order.
        expect(got.map((r) => r.id)).toEqual([...got.map((r) => r.id)].sort((a, b) => b - a));
      });
    });

    it('ok/list gives at most 100 rows by default', async () => {
      await storage.transaction(async (tx) => {
        for (let n = 0; n < 103; n++) await tx.audit.append(auditRow({ details: { n } }));
      });
      const got = await storage.audit.list({});
      expect(got.map((r) => r.details.n)).toEqual(Array.from({ length: 100 }, (_, i) => 102 - i));
    });

    describe('seal', () => {
      const appendThree = async () => {
        for (const n of [0, 1, 2]) await storage.audit.append(auditRow({ at: at(n), details: { n } }));
      };

      it('ok/nothing to seal: 0', async () => {
        expect(await storage.audit.seal(10, auditHash)).toBe(0);
      });

      it('ok/seals up to `limit` rows in id order into one chain, continued by the next seal', async () => {
        await appendThree();
        expect(await storage.audit.seal(2, auditHash)).toBe(2);
        expect(await storage.audit.countUnsealed()).toBe(1);
        expect(await storage.audit.seal(10, auditHash)).toBe(1);
        expect(await storage.audit.countUnsealed()).toBe(0);
        expect(await storage.audit.seal(10, auditHash)).toBe(0);

        const chain = await storage.audit.sealedAfter(0, 10);
        expect(chain.map((r) => [r.sealSeq, r.details.n])).toEqual([
          [1, 0],
          [2, 1],
          [3, 2],
        ]);
        expect(chain[0]!.prevHash).toBeNull();
        expect(chain[1]!.prevHash).toStrictEqual(chain[0]!.hash);
        expect(chain[2]!.prevHash).toStrictEqual(chain[1]!.hash);
        for (const r of chain) expect(r.hash).toStrictEqual(auditHash(r, r.prevHash));
        const verifier = auditVerifier();
        for (const r of chain) verifier.check(r);
        expect(verifier.result()).toEqual({ ok: true, rows: 3, from: 1 });
        // The sealed rows read the same through list.
        expect((await storage.audit.list({})).reverse()).toStrictEqual(chain);
      });

      it('ok/hashOf gets each row as read, numbered, without its chain columns, and the previous hash', async () => {
        await appendThree();
        const calls: [AuditRecord, Buffer | null][] = [];
        const hashOf = (row: AuditRecord, prev: Buffer | null) => {
          calls.push([row, prev]);
          return auditHash(row, prev);
        };
        expect(await storage.audit.seal(2, hashOf)).toBe(2);
        const [r0, r1] = (await storage.audit.list({})).reverse();
        expect(calls).toStrictEqual([
          [{ ...r0!, sealSeq: 1, prevHash: null, hash: null }, null],
          [{ ...r1!, sealSeq: 2, prevHash: null, hash: null }, r0!.hash],
        ]);
        expect(r0!.sealSeq).toBe(1);
      });

      it('ok/sealedAfter pages the chain', async () => {
        await appendThree();
        await storage.audit.seal(10, auditHash);
        expect((await storage.audit.sealedAfter(1, 1)).map((r) => r.sealSeq)).toEqual([2]);
        expect((await storage.audit.sealedAfter(1, 10)).map((r) => r.sealSeq)).toEqual([2, 3]);
        expect(await storage.audit.sealedAfter(3, 10)).toEqual([]);
      });

      it('fail/a hashOf that throws seals nothing', async () => {
        await appendThree();
        const boom = new Error('boom');
        let calls = 0;
        const hashOf = (row: AuditRecord, prev: Buffer | null) => {
          if (++calls === 2) throw boom;
          return auditHash(row, prev);
        };
        await expect(storage.audit.seal(10, hashOf)).rejects.toBe(boom);
        expect(await storage.audit.countUnsealed()).toBe(3);
        expect(await storage.audit.sealedAfter(0, 10)).toEqual([]);
      });

      it('ok/concurrent sealers build one chain: every row sealed once, in order', async () => {
        for (let n = 0; n < 7; n++) await storage.audit.append(auditRow({ details: { n } }));
        const counts = await Promise.all([2, 3, 10].map((limit) => storage.audit.seal(limit, auditHash)));
        expect(counts.reduce((a, b) => a + b, 0)).toBe(7);
        const chain = await storage.audit.sealedAfter(0, 100);
        expect(chain.map((r) => r.sealSeq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
        expect(chain.map((r) => r.details.n)).toEqual([0, 1, 2, 3, 4, 5, 6]);
        const verifier = auditVerifier();
        for (const r of chain) verifier.check(r);
        expect(verifier.result()).toEqual({ ok: true, rows: 7, from: 1 });
      });

      it('ok/a seal in a transaction that rolls back is undone', async () => {
        await appendThree();
        await expect(
          storage.transaction(async (tx) => {
            expect(await tx.audit.seal(10, auditHash)).toBe(3);
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        expect(await storage.audit.countUnsealed()).toBe(3);
      });
    });

    describe('head, pruneCut, deleteSealedThrough (audit retention)', () => {
      /** Rows recorded at T0 + n minutes for each n, all sealed (seal_seq n + 1), then `unsealed` more. */
      const chainAt = async (minutes: number[], unsealed = 0) => {
        for (const n of minutes) await storage.audit.append(auditRow({ at: at(n * MIN), details: { n } }));
        await storage.audit.seal(1000, auditHash);
        for (let i = 0; i < unsealed; i++) await storage.audit.append(auditRow({ at: at(0) }));
      };
      const seqs = async () => (await storage.audit.sealedAfter(0, 1000)).map((r) => r.sealSeq);

      it('ok/head: null before the first seal, then the newest sealed row (unsealed ones are not the head)', async () => {
        expect(await storage.audit.head()).toBeNull();
        await storage.audit.append(auditRow());
        expect(await storage.audit.head()).toBeNull();
        await chainAt([1, 2], 2);
        const chain = await storage.audit.sealedAfter(0, 10);
        expect(chain).toHaveLength(3);
        expect(await storage.audit.head()).toStrictEqual(chain[2]);
      });

      it.each([
        [
          'the run up to the first row recorded at or after the time',
          [0, 1, 2, 3, 4, 5],
          3,
          100,
          { first: 1, through: 3, complete: true },
        ],
        [
          'never the head, even when every row is older',
          [0, 1, 2],
          60,
          100,
          { first: 1, through: 2, complete: true },
        ],
        [
          'stops at the first newer row even when an older one follows (a prefix only)',
          [0, 5, 1, 2],
          3,
          100,
          { first: 1, through: 1, complete: true },
        ],
        [
          'at most `limit` rows: not complete',
          [0, 1, 2, 3, 4, 5],
          4,
          2,
          { first: 1, through: 2, complete: false },
        ],
        [
          '`limit` reaching the stop exactly: complete',
          [0, 1, 2, 3, 4, 5],
          2,
          3,
          { first: 1, through: 2, complete: true },
        ],
        ['nothing when the oldest row is not older', [3, 4], 3, 100, null],
        ['nothing when the head is the only row', [0], 60, 100, null],
        ['nothing on an empty chain', [], 60, 100, null],
      ] as [string, number[], number, number, object | null][])(
        'ok/pruneCut: %s',
        async (_n, minutes, beforeMin, limit, want) => {
          await chainAt(minutes, 1);
          expect(await storage.audit.pruneCut(at(beforeMin * MIN), limit)).toEqual(want);
        },
      );

      it('ok/pruneCut starts at the oldest kept row after a prune', async () => {
        await chainAt([0, 1, 2, 3, 4, 5]);
        expect(await storage.audit.deleteSealedThrough(2, 100)).toBe(2);
        expect(await storage.audit.pruneCut(at(4 * MIN), 100)).toEqual({
          first: 3,
          through: 4,
          complete: true,
        });
      });

      it('ok/deleteSealedThrough: at most `limit` sealed rows up to the seal_seq, lowest first; never an unsealed one', async () => {
        await chainAt([0, 1, 2, 3, 4, 5], 2);
        expect(await storage.audit.deleteSealedThrough(4, 3)).toBe(3);
        expect(await seqs()).toEqual([4, 5, 6]);
        expect(await storage.audit.deleteSealedThrough(4, 3)).toBe(1);
        expect(await storage.audit.deleteSealedThrough(4, 3)).toBe(0);
        expect(await seqs()).toEqual([5, 6]);
        expect(await storage.audit.countUnsealed()).toBe(2);
        // The kept chain verifies from its first row, whose prev_hash is the anchor, given a prune
        // that licenses the cut (domain/audit.ts).
        const kept = await storage.audit.sealedAfter(0, 10);
        expect(kept[0]!.prevHash).not.toBeNull();
        const anchored = auditVerifier({ anchored: true });
        for (const r of kept) expect(anchored.check(r)).toBe(true);
        expect(anchored.result()).toEqual({ ok: true, rows: 2, from: 5 });
      });

      it('ok/sealing goes on after a prune: the next row links to the head', async () => {
        await chainAt([0, 1, 2]);
        await storage.audit.deleteSealedThrough(2, 100);
        await chainAt([3]);
        const kept = await storage.audit.sealedAfter(0, 10);
        expect(kept.map((r) => r.sealSeq)).toEqual([3, 4]);
        expect(kept[1]!.prevHash).toStrictEqual(kept[0]!.hash);
      });
    });
  });

  describe('issuances', () => {
    describe('recordWorkloadGuarded', () => {
      it('ok/records the certificate, issued via the node and valid, and its audit row', async () => {
        const w = await world(storage);
        const leaf = workloadLeaf(w, { status: 'revoked', issuedVia: 'n-2' });
        const audit = issuedAudit(w, leaf.serial);
        expect(await storage.issuances.recordWorkloadGuarded(leaf, audit, workloadGuard(w))).toBe(true);
        expect(await storage.certificates.findBySerial(leaf.serial)).toStrictEqual({
          ...leaf,
          issuedVia: w.node.id,
          status: 'valid',
        });
        expect(await storage.audit.list({})).toStrictEqual([asStored(audit)]);
        // Nothing else changed.
        expect(await storage.certificates.findBySerial(w.peer.serial)).toStrictEqual(w.peer);
        expect(await storage.nodes.findById(w.node.id)).toStrictEqual(w.node);
      });

      it.each([...callerRefusals<WorkloadGuard>(), ...entryRefusals])(
        'fail/refused, nothing written, when %s',
        async (_name, perturb) => {
          const w = await world(storage);
          const guard = await perturb(storage, w, workloadGuard(w));
          const leaf = workloadLeaf(w);
          expect(
            await storage.issuances.recordWorkloadGuarded(leaf, issuedAudit(w, leaf.serial), guard),
          ).toBe(false);
          expect(await storage.certificates.findBySerial(leaf.serial)).toBeNull();
          expect(await storage.audit.list({})).toEqual([]);
        },
      );

      it('ok/concurrent requests (one batch): each row guarded on its own, the refused one alone writes nothing', async () => {
        const w = await world(storage);
        const revoked = nodeCertificate(w.node.id, { status: 'revoked' });
        await storage.certificates.insert(revoked);
        const leaves = Array.from({ length: 6 }, () => workloadLeaf(w));
        const refused = 3;
        const got = await Promise.all(
          leaves.map((leaf, i) =>
            storage.issuances.recordWorkloadGuarded(
              leaf,
              issuedAudit(w, leaf.serial),
              i === refused
                ? { ...workloadGuard(w), peerSerial: revoked.serial, peerDer: revoked.der }
                : workloadGuard(w),
            ),
          ),
        );
        expect(got).toEqual(leaves.map((_, i) => i !== refused));
        for (const [i, leaf] of leaves.entries()) {
          const stored = await storage.certificates.findBySerial(leaf.serial);
          expect(stored).toStrictEqual(i === refused ? null : { ...leaf, issuedVia: w.node.id });
        }
        const audited = (await storage.audit.list({})).map((r) => r.details.serial);
        expect([...audited].sort()).toEqual(serials(leaves.filter((_, i) => i !== refused)));
      });

      it.each([
        ['a reused key', 'ERR_KEY_REUSED', (w: World) => ({ keyFingerprint: w.otherPeer.keyFingerprint })],
        ['an existing serial', 'ERR_CONFLICT', (w: World) => ({ serial: w.otherPeer.serial })],
      ] as [string, string, (w: World) => Partial<CertificateRecord>][])(
        'fail/a row with %s fails alone (%s); the other rows of its batch are recorded',
        async (_name, code, bad) => {
          const w = await world(storage);
          const leaves = Array.from({ length: 5 }, (_, i) => workloadLeaf(w, i === 2 ? bad(w) : {}));
          const got = await Promise.allSettled(
            leaves.map((leaf) =>
              storage.issuances.recordWorkloadGuarded(leaf, issuedAudit(w, leaf.serial), workloadGuard(w)),
            ),
          );
          expect(got.map((r) => r.status)).toEqual([
            'fulfilled',
            'fulfilled',
            'rejected',
            'fulfilled',
            'fulfilled',
          ]);
          expect(((got[2] as PromiseRejectedResult).reason as BatonError).code).toBe(code);
          for (const r of got) if (r.status === 'fulfilled') expect(r.value).toBe(true);
          expect(await storage.certificates.findBySerial(w.otherPeer.serial)).toStrictEqual(w.otherPeer);
          const audited = (await storage.audit.list({})).map((r) => r.details.serial);
          expect([...audited].sort()).toEqual(serials(leaves.filter((_, i) => i !== 2)));
        },
      );

      it('ok/inside a transaction: recorded with it, rolled back with it', async () => {
        const w = await world(storage);
        const leaf = workloadLeaf(w);
        await expect(
          storage.transaction(async (tx) => {
            expect(
              await tx.issuances.recordWorkloadGuarded(leaf, issuedAudit(w, leaf.serial), workloadGuard(w)),
            ).toBe(true);
            expect(await tx.certificates.findBySerial(leaf.serial)).not.toBeNull();
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        expect(await storage.certificates.findBySerial(leaf.serial)).toBeNull();
        expect(await storage.audit.list({})).toEqual([]);
        const again = workloadLeaf(w);
        expect(
          await storage.transaction((tx) =>
            tx.issuances.recordWorkloadGuarded(again, issuedAudit(w, again.serial), workloadGuard(w)),
          ),
        ).toBe(true);
        expect(await storage.certificates.findBySerial(again.serial)).toStrictEqual({
          ...again,
          issuedVia: w.node.id,
        });
      });
    });

    describe('jwtMintAllowed', () => {
      const jwtGuard = (w: World): JwtMintGuard => ({ ...renewalGuard(w), spiffeId: w.entry.spiffeId });

      it('ok/true for the node’s current certificate and an entry of the node with that SPIFFE ID; writes nothing', async () => {
        const w = await world(storage);
        const before = bySerial(await allCertificates());
        expect(await storage.issuances.jwtMintAllowed(jwtGuard(w))).toBe(true);
        // The entry is matched by SPIFFE ID alone: a recreated entry (other DNS names) still names it.
        expect(await storage.entries.delete(w.entry.name)).toBe(true);
        await storage.entries.insert({ ...w.entry, dnsNames: ['other.internal'], createdAt: at(1) });
        expect(await storage.issuances.jwtMintAllowed(jwtGuard(w))).toBe(true);
        expect(bySerial(await allCertificates())).toStrictEqual(before);
        expect(await storage.nodes.findById(w.node.id)).toStrictEqual(w.node);
        expect(await storage.audit.list({})).toEqual([]);
      });

      it.each([
        ...callerRefusals<JwtMintGuard>(),
        [
          'the entry was deleted',
          async (s: Storage, w: World, g: JwtMintGuard) => {
            expect(await s.entries.delete(w.entry.name)).toBe(true);
            return g;
          },
        ],
        [
          'the SPIFFE ID is no entry’s',
          async (_s: Storage, _w: World, g: JwtMintGuard) => ({
            ...g,
            spiffeId: `spiffe://${TEST_TD}/other`,
          }),
        ],
        [
          'the SPIFFE ID is an entry of another node',
          async (s: Storage, w: World, g: JwtMintGuard) => {
            await s.entries.insert(entryRecord('api', w.other.id));
            return { ...g, spiffeId: entryRecord('api', w.other.id).spiffeId };
          },
        ],
        [
          'the SPIFFE ID differs in case',
          async (_s: Storage, w: World, g: JwtMintGuard) => ({
            ...g,
            spiffeId: w.entry.spiffeId.toUpperCase(),
          }),
        ],
      ] as Refusal<JwtMintGuard>[])('fail/false, nothing written, when %s', async (_name, perturb) => {
        const w = await world(storage);
        const guard = await perturb(storage, w, jwtGuard(w));
        const before = bySerial(await allCertificates());
        expect(await storage.issuances.jwtMintAllowed(guard)).toBe(false);
        expect(bySerial(await allCertificates())).toStrictEqual(before);
        expect(await storage.audit.list({})).toEqual([]);
      });

      it('ok/concurrent reads (one batch): each judged on its own', async () => {
        const w = await world(storage);
        const revoked = nodeCertificate(w.node.id, { status: 'revoked' });
        await storage.certificates.insert(revoked);
        const guards = Array.from({ length: 7 }, (_, i): JwtMintGuard => {
          if (i === 2) return { ...jwtGuard(w), peerSerial: revoked.serial, peerDer: revoked.der };
          if (i === 5) return { ...jwtGuard(w), spiffeId: `spiffe://${TEST_TD}/nope` };
          return jwtGuard(w);
        });
        expect(await Promise.all(guards.map((g) => storage.issuances.jwtMintAllowed(g)))).toEqual(
          guards.map((_, i) => i !== 2 && i !== 5),
        );
      });

      it('fail/a guard PostgreSQL cannot read (a NUL in the SPIFFE ID) fails alone: its batch neighbours are answered', async () => {
        const w = await world(storage);
        const got = await Promise.allSettled(
          [0, 1, 2].map((i) =>
            storage.issuances.jwtMintAllowed(
              i === 1 ? { ...jwtGuard(w), spiffeId: `${w.entry.spiffeId}\u0000` } : jwtGuard(w),
            ),
          ),
        );
        expect(got.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as BatonError).code))).toEqual([
          true,
          'ERR_BAD_REQUEST',
          true,
        ]);
      });

      it('ok/inside a transaction: reads what the transaction wrote', async () => {
        const w = await world(storage);
        const api = entryRecord('api', w.node.id);
        await expect(
          storage.transaction(async (tx) => {
            await tx.entries.insert(api);
            expect(await tx.issuances.jwtMintAllowed({ ...jwtGuard(w), spiffeId: api.spiffeId })).toBe(true);
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        expect(await storage.issuances.jwtMintAllowed({ ...jwtGuard(w), spiffeId: api.spiffeId })).toBe(
          false,
        );
      });
    });

    describe('recordRenewalGuarded', () => {
      it("ok/supersedes the node's valid node certificates, records when it was seen, the new certificate and its audit row", async () => {
        const w = await world(storage);
        const older = nodeCertificate(w.node.id, { createdAt: at(-HOUR) });
        const workload = certificateRecord(CA_ID, { issuedVia: w.node.id });
        const server = nodeCertificate(w.node.id, { kind: 'server' });
        for (const c of [older, workload, server]) await storage.certificates.insert(c);
        const leaf = renewedLeaf(w, { status: 'revoked', issuedVia: 'n-2' });
        const audit = issuedAudit(w, leaf.serial, 'certificate.renewed');

        expect(await storage.issuances.recordRenewalGuarded(leaf, audit, renewalGuard(w))).toBe(true);
        expect(await storage.certificates.findBySerial(leaf.serial)).toStrictEqual({
          ...leaf,
          issuedVia: null,
          status: 'valid',
        });
        for (const c of [w.peer, older])
          expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual({
            ...c,
            status: 'superseded',
          });
        for (const c of [workload, server, w.otherPeer])
          expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual(c);
        expect(await storage.nodes.findById(w.node.id)).toStrictEqual({ ...w.node, lastSeenAt: w.now });
        expect(await storage.nodes.findById(w.other.id)).toStrictEqual(w.other);
        expect(await storage.audit.list({})).toStrictEqual([asStored(audit)]);
      });

      it.each(callerRefusals<RenewalGuard>())(
        'fail/refused, nothing written, when %s',
        async (_name, perturb) => {
          const w = await world(storage);
          const guard = await perturb(storage, w, renewalGuard(w));
          const before = bySerial(await allCertificates());
          const nodes = await storage.nodes.list();
          const leaf = renewedLeaf(w);
          expect(
            await storage.issuances.recordRenewalGuarded(
              leaf,
              issuedAudit(w, leaf.serial, 'certificate.renewed'),
              guard,
            ),
          ).toBe(false);
          expect(bySerial(await allCertificates())).toStrictEqual(before);
          expect(await storage.nodes.list()).toStrictEqual(nodes);
          expect(await storage.audit.list({})).toEqual([]);
        },
      );

      it('ok/two concurrent renewals of one certificate: exactly one succeeds', async () => {
        const w = await world(storage);
        const leaves = [renewedLeaf(w), renewedLeaf(w)];
        const got = await Promise.all(
          leaves.map((leaf) =>
            storage.issuances.recordRenewalGuarded(
              leaf,
              issuedAudit(w, leaf.serial, 'certificate.renewed'),
              renewalGuard(w),
            ),
          ),
        );
        expect([...got].sort()).toEqual([false, true]);
        const winner = leaves[got.indexOf(true)]!;
        const loser = leaves[got.indexOf(false)]!;
        expect(await storage.certificates.findBySerial(winner.serial)).toStrictEqual(winner);
        expect(await storage.certificates.findBySerial(loser.serial)).toBeNull();
        expect((await storage.certificates.findBySerial(w.peer.serial))!.status).toBe('superseded');
        expect((await storage.audit.list({})).map((r) => r.details.serial)).toEqual([winner.serial]);
      });

      it('ok/the renewed certificate renews next; the superseded one no longer does', async () => {
        const w = await world(storage);
        const first = renewedLeaf(w);
        expect(
          await storage.issuances.recordRenewalGuarded(first, issuedAudit(w, first.serial), renewalGuard(w)),
        ).toBe(true);
        const second = renewedLeaf(w);
        expect(
          await storage.issuances.recordRenewalGuarded(
            second,
            issuedAudit(w, second.serial),
            renewalGuard(w),
          ),
        ).toBe(false);
        const guard = { ...renewalGuard(w), peerSerial: first.serial, peerDer: first.der };
        expect(
          await storage.issuances.recordRenewalGuarded(second, issuedAudit(w, second.serial), guard),
        ).toBe(true);
        expect((await storage.certificates.findBySerial(first.serial))!.status).toBe('superseded');
        expect((await storage.certificates.findBySerial(second.serial))!.status).toBe('valid');
      });

      it.each([
        ['a reused key', 'ERR_KEY_REUSED', (w: World) => ({ keyFingerprint: w.otherPeer.keyFingerprint })],
        ['an existing serial', 'ERR_CONFLICT', (w: World) => ({ serial: w.otherPeer.serial })],
      ] as [string, string, (w: World) => Partial<CertificateRecord>][])(
        'fail/a new certificate with %s gives %s and writes nothing (nothing superseded, not seen)',
        async (_name, code, bad) => {
          const w = await world(storage);
          const before = bySerial(await allCertificates());
          const leaf = renewedLeaf(w, bad(w));
          expect(
            (
              await errorOf(
                storage.issuances.recordRenewalGuarded(leaf, issuedAudit(w, leaf.serial), renewalGuard(w)),
              )
            ).code,
          ).toBe(code);
          expect(bySerial(await allCertificates())).toStrictEqual(before);
          expect(await storage.nodes.findById(w.node.id)).toStrictEqual(w.node);
          expect(await storage.audit.list({})).toEqual([]);
        },
      );

      it('ok/inside a transaction: rolled back with it', async () => {
        const w = await world(storage);
        const leaf = renewedLeaf(w);
        await expect(
          storage.transaction(async (tx) => {
            expect(
              await tx.issuances.recordRenewalGuarded(leaf, issuedAudit(w, leaf.serial), renewalGuard(w)),
            ).toBe(true);
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        expect(await storage.certificates.findBySerial(leaf.serial)).toBeNull();
        expect(await storage.certificates.findBySerial(w.peer.serial)).toStrictEqual(w.peer);
        expect(await storage.nodes.findById(w.node.id)).toStrictEqual(w.node);
        expect(await storage.audit.list({})).toEqual([]);
      });
    });

    describe('recordAttestation', () => {
      /** Everything the statement may write. */
      const written = async (tokenIds: string[] = []) => ({
        certificates: bySerial(await allCertificates()),
        nodes: await storage.nodes.list(),
        audit: await storage.audit.list({}),
        tokens: await Promise.all(tokenIds.map((id) => storage.tokens.findById(id))),
      });
      const tokenSpend = (t: TokenRecord): EvidenceSpend => ({ kind: 'token', tokenId: t.id });
      const attest = async (spend: EvidenceSpend, node: AttestedNode, now = at(MIN)) => {
        const leaf = attestationLeaf(node.id, now);
        const audit = attestationAudit(leaf, now);
        const outcome = await storage.issuances.recordAttestation(
          leaf,
          audit,
          attestationGuard(spend, node, now),
        );
        return { leaf, audit, outcome };
      };
      beforeEach(() => seedCa(storage));

      it('ok/a new node: creates it, spends one use, records the certificate and its audit row', async () => {
        const token = tokenRecord({ usesAllowed: 3, usesLeft: 3 });
        const other = tokenRecord();
        for (const t of [token, other]) await storage.tokens.insert(t);
        const node = attestedNode('n-new', { role: 'manager', certTtlMs: 40 * 86_400_000 });
        const leaf = attestationLeaf(node.id, at(MIN), { status: 'revoked', issuedVia: 'n-x' });
        const audit = attestationAudit(leaf);

        expect(
          await storage.issuances.recordAttestation(leaf, audit, attestationGuard(tokenSpend(token), node)),
        ).toBe('recorded');

        expect(await storage.nodes.list()).toStrictEqual([createdNode(node, 'join_token')]);
        expect(await storage.certificates.findBySerial(leaf.serial)).toStrictEqual({
          ...leaf,
          issuedVia: null,
          status: 'valid',
        });
        expect(await storage.audit.list({})).toStrictEqual([asStored(audit)]);
        expect(await storage.tokens.findById(token.id)).toStrictEqual({ ...token, usesLeft: 2 });
        expect(await storage.tokens.findById(other.id)).toStrictEqual(other);
      });

      it('ok/an existing node: records the attestation, supersedes only its valid node certificates', async () => {
        const w = await world(storage);
        const older = nodeCertificate(w.node.id, { status: 'superseded' });
        const workload = certificateRecord(CA_ID, { issuedVia: w.node.id });
        const server = nodeCertificate(w.node.id, { kind: 'server' });
        for (const c of [older, workload, server]) await storage.certificates.insert(c);
        await storage.nonces.insert('nonce-1', 'x509pop', at(HOUR));
        const now = at(2 * MIN);

        const { leaf, outcome } = await attest(
          { kind: 'nonce', nonce: 'nonce-1', method: 'x509pop' },
          attestedNode(w.node.id, { existing: true }),
          now,
        );

        expect(outcome).toBe('recorded');
        expect(await storage.nodes.findById(w.node.id)).toStrictEqual({
          ...w.node,
          lastAttestedAt: now,
          attestationMethod: 'x509pop',
        });
        expect(await storage.nodes.findById(w.other.id)).toStrictEqual(w.other);
        expect((await storage.certificates.findBySerial(w.peer.serial))!.status).toBe('superseded');
        for (const c of [older, workload, server, w.otherPeer])
          expect(await storage.certificates.findBySerial(c.serial)).toStrictEqual(c);
        expect((await storage.certificates.findBySerial(leaf.serial))!.status).toBe('valid');
        // The nonce is spent.
        expect(
          (await attest({ kind: 'nonce', nonce: 'nonce-1', method: 'x509pop' }, attestedNode('n-9'))).outcome,
        ).toBe('evidence-spent');
      });

      it.each([
        ['an unknown token', {}, (t: TokenRecord): EvidenceSpend => ({ kind: 'token', tokenId: `${t.id}x` })],
        ['a used-up token', { usesAllowed: 2, usesLeft: 0 }, tokenSpend],
        ['a token expiring at now', { expiresAt: at(MIN) }, tokenSpend],
        ['an expired token', { expiresAt: at(0) }, tokenSpend],
        [
          'an unknown nonce',
          {},
          (): EvidenceSpend => ({ kind: 'nonce', nonce: 'nonce-x', method: 'x509pop' }),
        ],
        [
          'a nonce of another method',
          {},
          (): EvidenceSpend => ({ kind: 'nonce', nonce: 'nonce-1', method: 'tpm' }),
        ],
        [
          'a nonce expiring at now',
          {},
          (): EvidenceSpend => ({ kind: 'nonce', nonce: 'nonce-now', method: 'x509pop' }),
        ],
      ] as [string, Partial<TokenRecord>, (t: TokenRecord) => EvidenceSpend][])(
        'fail/%s: evidence-spent, nothing written',
        async (_name, over, spendOf) => {
          const token = tokenRecord(over);
          await storage.tokens.insert(token);
          await storage.nonces.insert('nonce-1', 'x509pop', at(HOUR));
          await storage.nonces.insert('nonce-now', 'x509pop', at(MIN));
          const before = await written([token.id]);

          expect((await attest(spendOf(token), attestedNode('n-new'))).outcome).toBe('evidence-spent');

          expect(await written([token.id])).toStrictEqual(before);
          // The x509pop nonce is still there to spend.
          expect(
            (await attest({ kind: 'nonce', nonce: 'nonce-1', method: 'x509pop' }, attestedNode('n-2')))
              .outcome,
          ).toBe('recorded');
        },
      );

      it('ok/a token a millisecond before its expiry is spent', async () => {
        const token = tokenRecord({ expiresAt: new Date(at(MIN).getTime() + 1) });
        await storage.tokens.insert(token);
        expect((await attest(tokenSpend(token), attestedNode('n-new'))).outcome).toBe('recorded');
        expect((await storage.tokens.findById(token.id))!.usesLeft).toBe(0);
      });

      it.each([
        ['the node is revoked', 'node-revoked', { existing: true }, { status: 'revoked' }],
        ['a new node that exists, revoked', 'node-revoked', { existing: false }, { status: 'revoked' }],
        ['the node has another role', 'node-role', { existing: true }, { role: 'manager' }],
        ['a new node that exists with another role', 'node-role', { existing: false }, { role: 'manager' }],
        ['the node has another lifetime', 'node-changed', { existing: true }, { certTtlMs: 7_200_000 }],
        ['a new node that exists', 'node-changed', { existing: false }, {}],
        ['an existing node that does not exist', 'node-changed', { existing: true }, null],
      ] as [string, string, Partial<AttestedNode>, Partial<NodeRecord> | null][])(
        'fail/%s: %s, nothing written, the token not spent',
        async (_name, outcome, expected, row) => {
          if (row) await storage.nodes.insert(nodeRecord('n-1', row));
          const token = tokenRecord();
          await storage.tokens.insert(token);
          const before = await written([token.id]);

          expect((await attest(tokenSpend(token), attestedNode('n-1', expected))).outcome).toBe(outcome);

          expect(await written([token.id])).toStrictEqual(before);
        },
      );

      it('fail/a revoked node with a spent token: node-revoked (the node is judged first)', async () => {
        await storage.nodes.insert(nodeRecord('n-1', { status: 'revoked' }));
        const token = tokenRecord({ usesLeft: 0 });
        await storage.tokens.insert(token);
        expect((await attest(tokenSpend(token), attestedNode('n-1', { existing: true }))).outcome).toBe(
          'node-revoked',
        );
      });

      it.each([
        ['a reused key', 'ERR_KEY_REUSED', (w: World) => ({ keyFingerprint: w.otherPeer.keyFingerprint })],
        ['an existing serial', 'ERR_CONFLICT', (w: World) => ({ serial: w.otherPeer.serial })],
      ] as [string, string, (w: World) => Partial<CertificateRecord>][])(
        'fail/a certificate with %s gives %s and writes nothing (no node, no use spent, nothing superseded)',
        async (_name, code, bad) => {
          const w = await world(storage);
          const token = tokenRecord();
          await storage.tokens.insert(token);
          const before = await written([token.id]);
          for (const node of [attestedNode('n-new'), attestedNode(w.node.id, { existing: true })]) {
            const leaf = attestationLeaf(node.id, at(MIN), bad(w));
            const e = await errorOf(
              storage.issuances.recordAttestation(
                leaf,
                attestationAudit(leaf),
                attestationGuard(tokenSpend(token), node),
              ),
            );
            expect(e.code).toBe(code);
            expect(await written([token.id])).toStrictEqual(before);
          }
        },
      );

      it.each([
        [1, 8],
        [3, 8],
      ])('ok/concurrent attestations on a %i-use token: exactly that many nodes', async (uses, callers) => {
        const token = tokenRecord({ usesAllowed: uses, usesLeft: uses });
        await storage.tokens.insert(token);
        const got = await Promise.all(
          Array.from({ length: callers }, (_, i) => attest(tokenSpend(token), attestedNode(`n-${i}`))),
        );
        const won = got.filter((g) => g.outcome === 'recorded');
        expect(won).toHaveLength(uses);
        expect(got.filter((g) => g.outcome === 'evidence-spent')).toHaveLength(callers - uses);
        expect((await storage.nodes.list()).map((n) => n.id).sort()).toEqual(
          won.map((g) => g.leaf.nodeId).sort(),
        );
        expect(serials(await allCertificates())).toEqual(serials(won.map((g) => g.leaf)));
        expect((await storage.audit.list({})).map((a) => a.details.serial).sort()).toEqual(
          serials(won.map((g) => g.leaf)),
        );
        expect((await storage.tokens.findById(token.id))!.usesLeft).toBe(0);
      });

      it('ok/concurrent attestations with one nonce: exactly one', async () => {
        await storage.nonces.insert('nonce-1', 'x509pop', at(HOUR));
        const got = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            attest({ kind: 'nonce', nonce: 'nonce-1', method: 'x509pop' }, attestedNode(`n-${i}`)),
          ),
        );
        expect(got.filter((g) => g.outcome === 'recorded')).toHaveLength(1);
        expect(await storage.nodes.list()).toHaveLength(1);
      });

      it('ok/two concurrent first attestations of one node: one creates it, the other writes nothing (node-changed)', async () => {
        const tokens = [tokenRecord({ nodeName: 'n-1' }), tokenRecord({ nodeName: 'n-1' })];
        for (const t of tokens) await storage.tokens.insert(t);
        const got = await Promise.all(tokens.map((t) => attest(tokenSpend(t), attestedNode('n-1'))));
        expect(got.map((g) => g.outcome).sort()).toEqual(['node-changed', 'recorded']);
        const loser = tokens[got.findIndex((g) => g.outcome === 'node-changed')]!;
        expect(await storage.tokens.findById(loser.id)).toStrictEqual(loser);
        expect(await storage.nodes.list()).toHaveLength(1);
        expect(await allCertificates()).toHaveLength(1);
      });

      it('ok/inside a transaction: rolled back with it', async () => {
        const token = tokenRecord();
        await storage.tokens.insert(token);
        const before = await written([token.id]);
        const node = attestedNode('n-new');
        const leaf = attestationLeaf(node.id);
        await expect(
          storage.transaction(async (tx) => {
            expect(
              await tx.issuances.recordAttestation(
                leaf,
                attestationAudit(leaf),
                attestationGuard(tokenSpend(token), node),
              ),
            ).toBe('recorded');
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
        expect(await written([token.id])).toStrictEqual(before);
      });
    });
  });

  /**
   * Issue 20: the keyset pages of the admin lists. Each list is read page by page with the `next`
   * key given back as `after`: the pages together are the whole filtered list in its order, none
   * longer than `limit`, the last one (and only it) without `next`, and rows inserted between two
   * pages never make a row that existed before be skipped or repeated.
   */
  describe('paging', () => {
    /** Every page of a list, in order; fails on a list that would not end. */
    const pagesOf = async <T>(read: (p: PageRequest) => Promise<Page<T>>, limit: number): Promise<T[][]> => {
      const pages: T[][] = [];
      let after: PageKey | null = null;
      for (let i = 0; i < 1000; i++) {
        const page: Page<T> = await read({ limit, after });
        pages.push(page.items);
        if (page.next === null) return pages;
        after = page.next;
      }
      throw new Error('the list does not end');
    };
    /** The pages are the expected list: full pages but the last, which is not empty unless all are. */
    const expectPages = <T>(pages: T[][], limit: number, want: T[]) => {
      expect(pages.flat()).toStrictEqual(want);
      expect(pages.map((p) => p.length)).toEqual(
        want.length === 0
          ? [0]
          : Array.from({ length: Math.ceil(want.length / limit) }, (_, i) =>
              Math.min(limit, want.length - i * limit),
            ),
      );
    };
    const LIMITS = [1, 2, 3, 1000];

    describe('nodes: by id', () => {
      // Ids sort the same in every collation (lowercase letters and digits, one length); created
      // in another order than their ids, so the order is the id's.
      const nodes = [
        nodeRecord('n5', { role: 'manager', createdAt: at(1) }),
        nodeRecord('n1', { createdAt: at(2) }),
        nodeRecord('n3', { status: 'revoked', revokedAt: at(3), revocationReason: 1, createdAt: at(3) }),
        nodeRecord('n0', { role: 'manager', status: 'revoked', revokedAt: at(4), revocationReason: 4 }),
        nodeRecord('n2', { role: 'manager', createdAt: at(5) }),
        nodeRecord('n4', { createdAt: at(6) }),
      ];
      const ids = (want: string[]) => want.map((id) => nodes.find((n) => n.id === id)!);
      beforeEach(async () => {
        for (const n of nodes) await storage.nodes.insert(n);
      });

      it.each(
        (
          [
            ['no filter', {}, ['n0', 'n1', 'n2', 'n3', 'n4', 'n5']],
            ['status active', { status: 'active' }, ['n1', 'n2', 'n4', 'n5']],
            ['status revoked', { status: 'revoked' }, ['n0', 'n3']],
            ['role manager', { role: 'manager' }, ['n0', 'n2', 'n5']],
            ['role worker', { role: 'worker' }, ['n1', 'n3', 'n4']],
            ['both (AND)', { status: 'active', role: 'manager' }, ['n2', 'n5']],
            ['status revoked, role worker', { status: 'revoked', role: 'worker' }, ['n3']],
          ] as [string, NodePageFilter, string[]][]
        ).flatMap(([name, filter, want]) => LIMITS.map((limit) => [name, limit, filter, want] as const)),
      )('ok/%s, limit %d', async (_name, limit, filter, want) => {
        expectPages(await pagesOf((p) => storage.nodes.page(filter, p), limit), limit, ids(want));
      });

      it('ok/an empty list is one empty page', async () => {
        expect(
          await storage.nodes.page({ status: 'revoked', role: 'worker' }, { limit: 5, after: ['n3'] }),
        ).toEqual({
          items: [],
          next: null,
        });
      });

      it('ok/nodes inserted between pages: the rest of the list is the rows after the key, old and new', async () => {
        const first = await storage.nodes.page({}, { limit: 2, after: null });
        expect(first.items.map((n) => n.id)).toEqual(['n0', 'n1']);
        await storage.nodes.insert(nodeRecord('n0a'));
        await storage.nodes.insert(nodeRecord('n2a'));
        await storage.nodes.insert(nodeRecord('n9'));
        const rest = await pagesOf((p) => storage.nodes.page({}, { ...p, after: p.after ?? first.next }), 2);
        expect(rest.flat().map((n) => n.id)).toEqual(['n2', 'n2a', 'n3', 'n4', 'n5', 'n9']);
      });
    });

    describe('entries: by name', () => {
      const names = ['web', 'api', 'db', 'cache', 'queue'];
      beforeEach(async () => {
        await storage.nodes.insert(nodeRecord('n-1'));
        for (const name of names) await storage.entries.insert(entryRecord(name, 'n-1'));
      });

      it.each(LIMITS)('ok/limit %d', async (limit) => {
        const want = [...names].sort().map((name) => entryRecord(name, 'n-1'));
        expectPages(await pagesOf((p) => storage.entries.page(p), limit), limit, want);
      });

      it('ok/entries inserted and deleted between pages: no row that stays is skipped or repeated', async () => {
        const first = await storage.entries.page({ limit: 2, after: null });
        expect(first.items.map((e) => e.name)).toEqual(['api', 'cache']);
        await storage.entries.insert(entryRecord('b', 'n-1'));
        await storage.entries.insert(entryRecord('zeta', 'n-1'));
        // The cursor's own row may go: the key is a position, not a row.
        expect(await storage.entries.delete('cache')).toBe(true);
        const rest = await pagesOf((p) => storage.entries.page({ ...p, after: p.after ?? first.next }), 2);
        expect(rest.flat().map((e) => e.name)).toEqual(['db', 'queue', 'web', 'zeta']);
      });
    });

    describe('certificates: newest first, serial breaking ties', () => {
      // Serials fixed so that ties of created_at have a known order: c3, c4, c5 share a millisecond.
      const cert = (serial: string, minute: number, over: Partial<CertificateRecord> = {}) =>
        certificateRecord(CA_ID, { serial, createdAt: at(minute * MIN), notAfter: at(HOUR), ...over });
      const certs = [
        cert('7a00', 0, { kind: 'node', nodeId: 'n-1', spiffeId: `spiffe://${TEST_TD}/node/n-1` }),
        cert('7a01', 1, { issuedVia: 'n-1' }),
        cert('7a02', 2, { status: 'revoked', revokedAt: at(3 * MIN), revocationReason: 1, issuedVia: 'n-2' }),
        cert('7a05', 3, { issuedVia: 'n-1', notAfter: at(10 * MIN) }),
        cert('7a03', 3, { status: 'superseded', kind: 'node', nodeId: 'n-1' }),
        cert('7a04', 3, { issuedVia: 'n-2' }),
        // Both columns name n-1: listed once.
        cert('7a06', 4, { kind: 'node', nodeId: 'n-1', issuedVia: 'n-1', status: 'revoked' }),
        cert('7a07', 5, { notAfter: at(20 * MIN) }),
      ];
      const serialsOf = (cs: CertificateRecord[]) => cs.map((c) => c.serial);
      beforeEach(async () => {
        await seedCa(storage);
        for (const c of certs) await storage.certificates.insert(c);
      });

      it.each(
        (
          [
            ['no filter', {}, ['7a07', '7a06', '7a05', '7a04', '7a03', '7a02', '7a01', '7a00']],
            [
              'node: its own and issued through it',
              { nodeId: 'n-1' },
              ['7a06', '7a05', '7a03', '7a01', '7a00'],
            ],
            ['status revoked', { status: 'revoked' }, ['7a06', '7a02']],
            [
              'status valid, unexpired (validAt)',
              { status: 'valid', validAt: at(15 * MIN) },
              ['7a07', '7a04', '7a01', '7a00'],
            ],
            ['status valid, expired (expiredAt)', { status: 'valid', expiredAt: at(15 * MIN) }, ['7a05']],
            ['node and status (AND)', { nodeId: 'n-1', status: 'valid' }, ['7a05', '7a01', '7a00']],
            ['node and a status it has none of', { nodeId: 'n-2', status: 'superseded' }, []],
            ['an unknown node', { nodeId: 'n-9' }, []],
          ] as [string, CertificatePageFilter, string[]][]
        ).flatMap(([name, filter, want]) => LIMITS.map((limit) => [name, limit, filter, want] as const)),
      )('ok/%s, limit %d', async (_name, limit, filter, want) => {
        const pages = await pagesOf((p) => storage.certificates.page(filter, p), limit);
        expectPages(
          pages,
          limit,
          want.map((s) => certs.find((c) => c.serial === s)!),
        );
      });

      it('ok/certificates inserted between pages: newer ones are before the key, older and tied ones after it', async () => {
        const first = await storage.certificates.page({}, { limit: 4, after: null });
        expect(serialsOf(first.items)).toEqual(['7a07', '7a06', '7a05', '7a04']);
        for (const c of [
          cert('7b00', 9),
          // Same created_at as the key's row: by serial, one before it and one after it.
          cert('7a04ff', 3),
          cert('7a03ff', 3),
          // A row older than every one (a replica's clock behind): after the key.
          cert('7b01', -5),
        ])
          await storage.certificates.insert(c);
        const rest = await pagesOf(
          (p) => storage.certificates.page({}, { ...p, after: p.after ?? first.next }),
          2,
        );
        expect(serialsOf(rest.flat())).toEqual(['7a03ff', '7a03', '7a02', '7a01', '7a00', '7b01']);
      });

      it('ok/a node filter pages across both of its index scans', async () => {
        // The node's own certificates and those issued through it interleave in time.
        for (let i = 0; i < 6; i++)
          await storage.certificates.insert(
            cert(`7c0${i}`, 10 + i, i % 2 ? { issuedVia: 'n-3' } : { kind: 'node', nodeId: 'n-3' }),
          );
        const pages = await pagesOf((p) => storage.certificates.page({ nodeId: 'n-3' }, p), 2);
        expect(pages.map(serialsOf)).toEqual([
          ['7c05', '7c04'],
          ['7c03', '7c02'],
          ['7c01', '7c00'],
        ]);
      });
    });

    describe('audit: newest first, id breaking ties', () => {
      // n is the order of append (ids grow with it); rows 2, 3 and 4 share a time.
      const rows: Partial<AuditEvent>[] = [
        { actor: 'alice', subject: 's1', event: 'e.a', at: at(0) },
        { actor: 'bob', subject: 's1', event: 'e.b', at: at(MIN) },
        { actor: 'alice', subject: 's2', event: 'e.b', at: at(2 * MIN) },
        { actor: 'bob', subject: null, event: 'e.a', at: at(2 * MIN) },
        { actor: 'alice', subject: 's1', event: 'e.c', at: at(2 * MIN) },
        // Recorded later with an earlier time (a replica's clock behind): the time decides.
        { actor: 'carol', subject: 's2', event: 'e.a', at: at(30_000) },
      ];
      beforeEach(async () => {
        for (const [n, row] of rows.entries())
          await storage.audit.append(auditRow({ ...row, details: { n } }));
      });
      const ns = (rs: AuditRecord[]) => rs.map((r) => r.details.n);

      it.each(
        (
          [
            ['no filter', {}, [4, 3, 2, 1, 5, 0]],
            ['actor', { actor: 'alice' }, [4, 2, 0]],
            ['subject', { subject: 's1' }, [4, 1, 0]],
            ['event', { event: 'e.a' }, [3, 5, 0]],
            ['since: at >= the time', { since: at(MIN) }, [4, 3, 2, 1]],
            ['until: at < the time', { until: at(2 * MIN) }, [1, 5, 0]],
            ['filters combine', { actor: 'alice', subject: 's1', since: at(MIN) }, [4]],
            ['nothing matches', { actor: 'nobody' }, []],
          ] as [string, AuditPageFilter, number[]][]
        ).flatMap(([name, filter, want]) => LIMITS.map((limit) => [name, limit, filter, want] as const)),
      )('ok/%s, limit %d', async (_name, limit, filter, want) => {
        const pages = await pagesOf((p) => storage.audit.page(filter, p), limit);
        expect(ns(pages.flat())).toEqual(want);
        expectPages(pages.map(ns), limit, want);
        for (const r of pages.flat())
          expect(r).toStrictEqual(
            asStored(auditRow({ ...rows[r.details.n as number], details: { n: r.details.n } })),
          );
      });

      it('ok/rows appended between pages: new ones are before the key, a late one with an old time after it', async () => {
        const first = await storage.audit.page({}, { limit: 3, after: null });
        expect(ns(first.items)).toEqual([4, 3, 2]);
        await storage.audit.append(auditRow({ at: at(HOUR), details: { n: 6 } }));
        // The same time as the key's row: a larger id, so before it in the order.
        await storage.audit.append(auditRow({ at: at(2 * MIN), details: { n: 7 } }));
        await storage.audit.append(auditRow({ at: at(-HOUR), details: { n: 8 } }));
        const rest = await pagesOf((p) => storage.audit.page({}, { ...p, after: p.after ?? first.next }), 2);
        expect(ns(rest.flat())).toEqual([1, 5, 0, 8]);
      });
    });

    describe('listCursorKey', () => {
      it('ok/the first call stores its candidate; later ones get that key, whatever they offer', async () => {
        const [a, b] = [randomBytes(32), randomBytes(32)];
        expect(await storage.listCursorKey.getOrCreate(a, at(0))).toStrictEqual(a);
        expect(await storage.listCursorKey.getOrCreate(b, at(1))).toStrictEqual(a);
      });

      it('ok/concurrent first calls (replicas at once) all get the one key that won', async () => {
        const candidates = Array.from({ length: 8 }, () => randomBytes(32));
        const got = await Promise.all(candidates.map((c) => storage.listCursorKey.getOrCreate(c, at(0))));
        expect(candidates).toContainEqual(got[0]);
        for (const k of got) expect(k).toStrictEqual(got[0]);
      });
    });
  });

  describe('transaction', () => {
    it('ok/commits every write and returns the value of fn', async () => {
      const ca = testCa();
      const record = certificateRecord(ca.keyring.signing.record.id);
      const result = await storage.transaction(async (tx) => {
        await tx.cas.initialize(installationOf(ca), ca.records);
        await tx.certificates.insert(record);
        // Reads inside the transaction see its own writes.
        expect(await tx.certificates.findBySerial(record.serial)).toStrictEqual(record);
        return 'done';
      });
      expect(result).toBe('done');
      expect(await storage.cas.getInstallation()).toStrictEqual(installationOf(ca));
      expect(await storage.certificates.findBySerial(record.serial)).toStrictEqual(record);
    });

    it('fail/rolls back every write when fn throws, and rethrows the same error', async () => {
      const ca = testCa();
      const record = certificateRecord(ca.keyring.signing.record.id);
      const boom = new Error('boom');
      const outcome = storage.transaction(async (tx) => {
        await tx.cas.initialize(installationOf(ca), ca.records);
        await tx.certificates.insert(record);
        throw boom;
      });
      await expect(outcome).rejects.toBe(boom);
      expect(await storage.cas.getInstallation()).toBeNull();
      expect(await storage.cas.listCas()).toEqual([]);
      expect(await storage.certificates.findBySerial(record.serial)).toBeNull();
      expect(await allCertificates()).toHaveLength(0);
    });

    it('fail/rolls back earlier writes when a later write conflicts', async () => {
      const ca = testCa();
      await storage.cas.initialize(installationOf(ca), ca.records);
      const existing = certificateRecord(ca.keyring.signing.record.id);
      await storage.certificates.insert(existing);
      const fresh = certificateRecord(ca.keyring.signing.record.id);
      const e = await errorOf(
        storage.transaction(async (tx) => {
          await tx.certificates.insert(fresh);
          await tx.certificates.insert({ ...fresh, serial: existing.serial });
        }),
      );
      expect(e.code).toBe('ERR_CONFLICT');
      expect(await storage.certificates.findBySerial(fresh.serial)).toBeNull();
      expect(await storage.certificates.findBySerial(existing.serial)).toStrictEqual(existing);
    });

    it('fail/a failed statement aborts the transaction: later statements fail, and it rolls back even if fn goes on', async () => {
      await seedCa(storage);
      const existing = certificateRecord(CA_ID);
      await storage.certificates.insert(existing);
      const fresh = certificateRecord(CA_ID);
      const result = await storage.transaction(async (tx) => {
        await tx.certificates.insert(fresh);
        expect((await errorOf(tx.certificates.insert({ ...existing }))).code).toBe('ERR_CONFLICT');
        await expect(tx.nodes.insert(nodeRecord('n-1'))).rejects.toThrow(/current transaction is aborted/);
        return 'went on';
      });
      expect(result).toBe('went on');
      expect(await storage.certificates.findBySerial(fresh.serial)).toBeNull();
      expect(await storage.nodes.findById('n-1')).toBeNull();
    });

    it('ok/a refusal in code (ERR_ALREADY_INITIALIZED) does not abort the transaction', async () => {
      await seedCa(storage);
      await storage.transaction(async (tx) => {
        expect((await errorOf(tx.cas.initialize(installationOf(CA), CA.records))).code).toBe(
          'ERR_ALREADY_INITIALIZED',
        );
        await tx.nodes.insert(nodeRecord('n-1'));
      });
      expect(await storage.nodes.findById('n-1')).toStrictEqual(nodeRecord('n-1'));
    });

    /** A holds its lock until released; B takes the same lock meanwhile. What happened, in order. */
    async function secondWaits(
      lockA: (tx: Repositories) => Promise<unknown>,
      lockB: (tx: Repositories) => Promise<unknown>,
    ): Promise<string[]> {
      const events: string[] = [];
      const release = gate();
      const aLocked = gate();
      const a = storage.transaction(async (tx) => {
        await lockA(tx);
        events.push('a locked');
        aLocked.open();
        await release.opened;
        events.push('a commits');
      });
      await aLocked.opened;
      const b = storage.transaction(async (tx) => {
        await lockB(tx);
        events.push('b locked');
      });
      await tick(150);
      events.push('released');
      release.open();
      await Promise.all([a, b]);
      return events;
    }
    const waited = ['a locked', 'released', 'a commits', 'b locked'];

    it('ok/lockBuilder: a second builder waits until the first commits', async () => {
      expect(
        await secondWaits(
          (tx) => tx.crls.lockBuilder(),
          (tx) => tx.crls.lockBuilder(),
        ),
      ).toEqual(waited);
    });

    it("ok/lockById: a second locker waits until the first commits, then sees the first's write", async () => {
      await storage.nodes.insert(nodeRecord('n-1'));
      let seen: NodeRecord | null = null;
      const events = await secondWaits(
        async (tx) => {
          await tx.nodes.lockById('n-1');
          await tx.nodes.markRevoked('n-1', at(MIN), 1);
        },
        async (tx) => {
          seen = await tx.nodes.lockById('n-1');
        },
      );
      expect(events).toEqual(waited);
      expect(seen).toStrictEqual(
        nodeRecord('n-1', { status: 'revoked', revokedAt: at(MIN), revocationReason: 1 }),
      );
    });

    it("ok/lockBySerial: a second locker waits until the first commits, then sees the first's write", async () => {
      await seedCa(storage);
      const c = nodeCertificate('n-1');
      await storage.certificates.insert(c);
      let seen: CertificateRecord | null = null;
      const events = await secondWaits(
        async (tx) => {
          await tx.certificates.lockBySerial(c.serial);
          await tx.certificates.supersedeForNode('n-1', 'node');
        },
        async (tx) => {
          seen = await tx.certificates.lockBySerial(c.serial);
        },
      );
      expect(events).toEqual(waited);
      expect(seen).toStrictEqual({ ...c, status: 'superseded' });
    });

    // PGlite has one connection: a read outside an open transaction would wait for it to end.
    if (impl !== 'pglite') {
      it('ok/outside readers see a transaction’s writes only once it commits', async () => {
        const release = gate();
        const written = gate();
        const tx = storage.transaction(async (t) => {
          await t.nodes.insert(nodeRecord('n-1'));
          written.open();
          await release.opened;
        });
        await written.opened;
        expect(await storage.nodes.findById('n-1')).toBeNull();
        release.open();
        await tx;
        expect(await storage.nodes.findById('n-1')).toStrictEqual(nodeRecord('n-1'));
      });
    }
  });

  describe('exclusive (job locks)', () => {
    it('ok/runs fn and gives its value; the lock is free again after, also after fn threw', async () => {
      expect(await storage.exclusive('certificate-retention', async () => 42)).toEqual({ value: 42 });
      await expect(
        storage.exclusive('certificate-retention', async () => {
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      expect(await storage.exclusive('certificate-retention', async () => 'again')).toEqual({
        value: 'again',
      });
    });

    // PGlite is one process on one connection: there is no other replica to exclude, and holding
    // its only connection would stop every request (storage/knex/job-lock.ts).
    if (impl === 'pglite')
      it('ok/PGlite: a second caller runs too (one process, one connection, no replica to exclude)', async () => {
        const inside = gate();
        const held = gate();
        const first = storage.exclusive('certificate-retention', async () => {
          inside.open();
          await held.opened;
          return 'first';
        });
        await inside.opened;
        expect(await storage.exclusive('certificate-retention', async () => 'second')).toEqual({
          value: 'second',
        });
        held.open();
        expect(await first).toEqual({ value: 'first' });
      });
    else
      it('ok/a second holder of this storage gets null at once, without running fn, while the first holds it', async () => {
        const held = gate();
        const inside = gate();
        const first = storage.exclusive('certificate-retention', async () => {
          inside.open();
          await held.opened;
          return 'first';
        });
        await inside.opened;
        let ran = false;
        expect(
          await storage.exclusive('certificate-retention', async () => {
            ran = true;
          }),
        ).toBeNull();
        expect(ran).toBe(false);
        held.open();
        expect(await first).toEqual({ value: 'first' });
      });
  });

  it('ok/ping resolves', async () => {
    await expect(storage.ping()).resolves.toBeUndefined();
  });
});

describe('Memory storage, beyond the contract', () => {
  it('fail/a write outside the transaction from inside it is refused (it would wait for itself)', async () => {
    const storage = createMemoryStorage();
    await expect(
      storage.transaction(async () => {
        await storage.nodes.insert(nodeRecord('n-1'));
      }),
    ).rejects.toThrow(/outside the transaction/);
    await expect(storage.transaction(() => storage.transaction(async () => 1))).rejects.toThrow(
      /outside the transaction/,
    );
    expect(await storage.nodes.findById('n-1')).toBeNull();
  });

  it('fail/the repositories of a finished transaction refuse statements', async () => {
    const storage = createMemoryStorage();
    let leaked: Repositories | undefined;
    await storage.transaction(async (tx) => {
      leaked = tx;
    });
    await expect(leaked!.nodes.insert(nodeRecord('n-1'))).rejects.toThrow(/already complete/);
    expect(await storage.nodes.findById('n-1')).toBeNull();
  });

  it('ok/seeded with an installation and its CAs', async () => {
    const storage = createMemoryStorage({ installation: installationOf(CA), cas: CA.records });
    expect(await storage.cas.getInstallation()).toStrictEqual(installationOf(CA));
    expect(byId(await storage.cas.listCas())).toStrictEqual(byId(CA.records));
    expect((await errorOf(storage.cas.initialize(installationOf(CA), CA.records))).code).toBe(
      'ERR_ALREADY_INITIALIZED',
    );
  });

  it('ok/each memory storage is a database of its own', async () => {
    const [a, b] = [createMemoryStorage(), createMemoryStorage()];
    await a.nodes.insert(nodeRecord('n-1'));
    expect(await b.nodes.findById('n-1')).toBeNull();
    expect(await a.nodes.findById('n-1')).toStrictEqual(nodeRecord('n-1'));
  });
});

describe('Storage on an unreachable PostgreSQL', () => {
  it('fail/ping gives ERR_DATABASE_UNAVAILABLE', async () => {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    const knex = openDatabase({
      databaseUrl: 'postgres://postgres@127.0.0.1:1/baton',
      dataDir: '/nonexistent',
    });
    try {
      expect((await errorOf(knexStorage(knex).ping())).code).toBe('ERR_DATABASE_UNAVAILABLE');
    } finally {
      await knex.destroy();
    }
  });
});
