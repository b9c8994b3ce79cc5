import { randomBytes } from 'node:crypto';
import { BatonError } from '../../services/ca/src/ground/errors';
import { issueLeaf } from '../../services/ca/src/domain/issue';
import { loadKeyring } from '../../services/ca/src/domain/keyring';
import type {
  CaRecord,
  CertificateRecord,
  Installation,
  NodeRecord,
  Storage,
} from '../../services/ca/src/domain/ports';
import { describePublicKey, generateP256, spkiOf } from '../../services/ca/src/pki/keys';
import { migrateLatest, openDatabase } from '../../services/ca/src/storage/knex/database';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { TEST_TD, TEST_URL, testCa } from '../fixtures/test-ca';
import { type TestDatabase, createTestDatabase, describeEachBackend } from '../support/database';

/** The BatonError a promise rejects with; fails the test if it resolves or rejects with anything else. */
async function batonErrorOf(p: Promise<unknown>): Promise<BatonError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BatonError) return e;
    throw e;
  }
  throw new Error('expected a BatonError, the operation succeeded');
}

const byId = (cas: CaRecord[]): CaRecord[] => [...cas].sort((a, b) => a.id.localeCompare(b.id));
const bySerial = (cs: CertificateRecord[]): CertificateRecord[] =>
  [...cs].sort((a, b) => a.serial.localeCompare(b.serial));

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

describeEachBackend('Storage contract (knexStorage)', (backend) => {
  let db: TestDatabase;
  let storage: Storage;

  // One fresh, migrated database per backend; every test starts from empty tables.
  beforeAll(async () => {
    db = await createTestDatabase(backend);
    await migrateLatest(db.knex);
    storage = knexStorage(db.knex);
  });
  afterAll(() => db.drop());
  // CASCADE: later migrations add tables that reference these (crls, entries …).
  beforeEach(() => db.knex.raw('truncate table certificates, cas, installation cascade'));

  const count = async (table: string): Promise<number> =>
    Number((await db.knex(table).count({ n: '*' }))[0]!.n);

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
      const keyring = loadKeyring(cas, ca.kek, TEST_URL);
      expect(keyring.pin).toBe(ca.keyring.pin);
      expect(keyring.signing.record.id).toBe(ca.keyring.signing.record.id);
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

      const e = await batonErrorOf(
        again(storage, installationOf(second, 'other.example.org'), second.records),
      );
      expect(e.code).toBe('ERR_ALREADY_INITIALIZED');

      expect(await count('installation')).toBe(1);
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
      expect(await count('installation')).toBe(1);
      expect(byId(await storage.cas.listCas())).toStrictEqual(byId(winner.records));
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
      const e = await batonErrorOf(issue(key, 'api'));
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
      expect((await batonErrorOf(storage.certificates.insert(dup))).code).toBe('ERR_CONFLICT');
      expect(await storage.certificates.findBySerial(first.serial)).toStrictEqual(first);
      expect(await count('certificates')).toBe(1);
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
      expect(await count('certificates')).toBe(0);
    });

    it('fail/rolls back earlier writes when a later write conflicts', async () => {
      const ca = testCa();
      await storage.cas.initialize(installationOf(ca), ca.records);
      const existing = certificateRecord(ca.keyring.signing.record.id);
      await storage.certificates.insert(existing);
      const fresh = certificateRecord(ca.keyring.signing.record.id);
      const e = await batonErrorOf(
        storage.transaction(async (tx) => {
          await tx.certificates.insert(fresh);
          await tx.certificates.insert({ ...fresh, serial: existing.serial });
        }),
      );
      expect(e.code).toBe('ERR_CONFLICT');
      expect(await storage.certificates.findBySerial(fresh.serial)).toBeNull();
      expect(await storage.certificates.findBySerial(existing.serial)).toStrictEqual(existing);
    });
  });

  it('ok/ping resolves', async () => {
    await expect(storage.ping()).resolves.toBeUndefined();
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
      expect((await batonErrorOf(knexStorage(knex).ping())).code).toBe('ERR_DATABASE_UNAVAILABLE');
    } finally {
      await knex.destroy();
    }
  });
});
