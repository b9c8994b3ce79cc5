import { createPublicKey, randomBytes } from 'node:crypto';
import type { AdminRole } from '../../services/ca/src/admin-credentials';
import { issueLeaf } from '../../services/ca/src/domain/issue';
import { adminSpiffeId } from '../../services/ca/src/domain/trust-domain';
import { describePublicKey, generateP256, spkiOf } from '../../services/ca/src/pki/keys';
import type { OpenCa } from '../../services/ca/src/ca-service';
import { type Flags, loadServerConfig } from '../../services/ca/src/config';
import { createIntermediateCa, createRootCa } from '../../services/ca/src/domain/ca-hierarchy';
import { rotateSigningCa } from '../../services/ca/src/domain/ca-rotation';
import { FakeClock } from '../../services/ca/src/domain/clock';
import { createJwtKey } from '../../services/ca/src/domain/jwt-keys';
import { loadKeyring } from '../../services/ca/src/domain/keyring';
import type { Installation } from '../../services/ca/src/domain/ports';
import { createLogger } from '../../services/ca/src/logger';
import { type Kek, kekFromBase64 } from '../../services/ca/src/pki/kek';
import { kekCustody } from '../../services/ca/src/domain/key-custody';
import { migrateLatest } from '../../services/ca/src/storage/knex/database';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { type RunningServer, startServer } from '../../services/ca/src/server/start-server';
import { type Backend, createTestDatabase, type TestDatabase } from './database';

export interface TestServer {
  url: string;
  /** The CA as `openCa` gives it, keys KEK-wrapped (its `kek` is always there). */
  ca: OpenCa & { kek: Kek };
  db: TestDatabase;
  clock: FakeClock;
  running: RunningServer;
  /** The trust bundle (roots) PEM. */
  bundle: string;
  /** An admin credential (cert chain + key PEM) issued by this CA. */
  issueAdmin(role?: AdminRole, name?: string): Promise<{ cert: string; key: string; serial: string }>;
  close(): Promise<void>;
}

/**
 * An in-process Baton on 127.0.0.1:0 over a fresh database (PGlite in memory, or a new
 * PostgreSQL database), with an injected clock that tests move by hand.
 */
export async function startTestServer(
  opts: {
    backend?: Backend;
    trustDomain?: string;
    now?: string;
    logLevel?: 'silent' | 'trace' | 'info';
    logStream?: NodeJS.WritableStream;
    random?: () => number;
    /** Extra `baton server` flags, e.g. { 'x509pop-ca': FILE } or { 'rate-limits': 'on' }. */
    serverFlags?: Flags;
  } = {},
): Promise<TestServer> {
  const db = await createTestDatabase(opts.backend ?? 'pglite');
  await migrateLatest(db.knex);
  const storage = knexStorage(db.knex);
  const clock = new FakeClock(opts.now ?? new Date().toISOString());
  const kek = kekFromBase64(randomBytes(32).toString('base64'), 'test');
  const trustDomain = opts.trustDomain ?? 'test.example.org';
  const installation: Installation = {
    trustDomain,
    publicUrl: 'https://127.0.0.1:8443',
    nodeTtlMs: 24 * 3600_000,
    workloadTtlMs: 3600_000,
    adminTtlMs: 8 * 3600_000,
    createdAt: clock.now(),
  };
  const root = createRootCa({ trustDomain, now: clock.now(), kek });
  const inter = createIntermediateCa({
    trustDomain,
    now: clock.now(),
    kek,
    root,
    publicUrl: installation.publicUrl,
  });
  // What `ca init` records: the installation, its CAs and the signing CA's JWT-SVID signing key.
  const jwtKey = createJwtKey({ kek, caId: inter.record.id, now: clock.now() });
  await storage.transaction(async (tx) => {
    await tx.cas.initialize(installation, [root.record, inter.record]);
    await tx.jwtKeys.insert(jwtKey.record);
  });
  const keyring = loadKeyring([root.record, inter.record], kek, installation.publicUrl, [jwtKey.record]);
  const ca: OpenCa & { kek: Kek } = {
    knex: db.knex,
    storage,
    installation,
    keyring,
    custody: kekCustody(kek),
    kek,
  };
  const config = loadServerConfig(
    // Rate limits are off unless a test turns one on (test/integration/abuse-controls.test.ts):
    // suites attest and renew from one address far faster than any fleet would.
    { listen: '127.0.0.1:0', 'rate-limits': 'off', ...opts.serverFlags },
    // Background jobs run when a test says so (running.jobs.runOnce()), never on a timer.
    { BATON_DATA_DIR: '/nonexistent', BATON_BACKGROUND_INTERVAL: '1h' },
  );
  const log = createLogger(opts.logLevel ?? 'silent', opts.logStream);
  const running = await startServer({
    config,
    ca,
    clock,
    log,
    random: opts.random,
    // Retention, like the other jobs, runs when a test says so (running.jobs.runRetention()).
    retentionPeriodMs: 3_600_000,
  });
  return {
    url: running.url,
    ca,
    db,
    clock,
    running,
    bundle: keyring.bundlePem,
    issueAdmin: async (role = 'admin', name = role) => {
      const { privateKey } = generateP256();
      const leaf = await issueLeaf(
        { clock, issuer: keyring.signing, certificates: storage.certificates },
        {
          kind: 'admin',
          spiffeId: adminSpiffeId(trustDomain, name),
          subject: { O: trustDomain, OU: role, CN: name },
          key: describePublicKey(spkiOf(createPublicKey(privateKey))),
          ttlMs: 8 * 3600_000,
        },
      );
      return {
        cert: leaf.chainPem,
        key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
        serial: leaf.record.serial,
      };
    },
    close: async () => {
      await running.close();
      await db.drop();
    },
  };
}

/**
 * `baton ca rotate` against a test server's database, as an operator runs it: a new active signing
 * intermediate (and JWT key). The server notices at its next keyring reload (`t.running.jobs.runOnce()`).
 */
export const rotateCa = (t: TestServer) =>
  rotateSigningCa(
    {
      clock: t.clock,
      storage: t.ca.storage,
      kek: t.ca.kek,
      keyring: t.ca.keyring,
      installation: t.ca.installation,
      publicUrl: t.ca.installation.publicUrl,
    },
    { actor: 'cli:operator', source: null },
  );
