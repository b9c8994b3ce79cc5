import { randomBytes } from 'node:crypto';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import type { CertificateRecord, CertificateStatus, Storage } from '../../../services/ca/src/domain/ports';
import { deleteExpiredCertificates } from '../../../services/ca/src/domain/retention';
import { testCa, TEST_TD } from '../../fixtures/test-ca';
import { createMemoryStorage } from '../../support/memory-storage';

/**
 * Issue 20, certificate retention, on the memory storage with an injected clock: exactly the rows
 * whose notAfter is more than the window in the past go, in batches, whatever their status; valid
 * rows, revoked unexpired ones and rows expired within the window stay; one holder of the lock.
 */

const NOW = '2026-12-08T12:00:00.000Z';
const MIN = 60_000;
const DAY = 86_400_000;
const RETAIN = 7 * DAY;

const ca = testCa({ now: NOW });
const caId = ca.keyring.signing.record.id;

function cert(notAfterMsAgo: number, status: CertificateStatus = 'valid'): CertificateRecord {
  const notAfter = new Date(Date.parse(NOW) - notAfterMsAgo);
  return {
    serial: `7${randomBytes(15).toString('hex')}`,
    caId,
    kind: 'workload',
    spiffeId: `spiffe://${TEST_TD}/web`,
    nodeId: null,
    issuedVia: 'n1',
    notBefore: new Date(notAfter.getTime() - 3_600_000),
    notAfter,
    keyFingerprint: randomBytes(32).toString('hex'),
    der: randomBytes(64),
    status,
    createdAt: new Date(notAfter.getTime() - 3_600_000),
    revokedAt: status === 'revoked' ? new Date(notAfter.getTime() - MIN) : null,
    revocationReason: status === 'revoked' ? 1 : null,
  };
}

async function seeded(records: CertificateRecord[]): Promise<Storage> {
  const storage = createMemoryStorage({
    installation: {
      trustDomain: TEST_TD,
      publicUrl: 'https://127.0.0.1:8443',
      nodeTtlMs: DAY,
      workloadTtlMs: 3_600_000,
      adminTtlMs: 8 * 3_600_000,
      createdAt: new Date(NOW),
    },
    cas: ca.records,
  });
  for (const r of records) await storage.certificates.insert(r);
  return storage;
}

const serialsOf = async (s: Storage) =>
  (await s.certificates.list({ limit: 10_000 })).map((c) => c.serial).sort();

describe('deleteExpiredCertificates (issue 20)', () => {
  it('ok/deletes exactly the rows expired longer than the window, revoked ones too; keeps the rest', async () => {
    const gone = [
      cert(RETAIN + 1),
      cert(RETAIN + DAY, 'superseded'),
      cert(RETAIN + 30 * DAY, 'revoked'),
      cert(RETAIN + MIN, 'revoked'),
    ];
    const kept = [
      cert(-DAY), // valid, unexpired
      cert(-DAY, 'revoked'), // revoked, not expired yet: on the CRL
      cert(RETAIN - 1, 'revoked'), // expired, within the window
      cert(RETAIN), // exactly the window: not older than it
      cert(MIN, 'superseded'),
    ];
    const storage = await seeded([...kept, ...gone]);
    const clock = new FakeClock(NOW);
    const run = await deleteExpiredCertificates({ clock, storage }, { retainMs: RETAIN });
    expect(run).toEqual({
      ran: true,
      cutoff: new Date(Date.parse(NOW) - RETAIN),
      deleted: 4,
      batches: 1,
      complete: true,
    });
    expect(await serialsOf(storage)).toEqual(kept.map((c) => c.serial).sort());
    // The clock moves on a day: the rows that have now been expired longer than the window go too.
    clock.advance(DAY);
    expect(await deleteExpiredCertificates({ clock, storage }, { retainMs: RETAIN })).toMatchObject({
      deleted: 2,
    });
    expect(await serialsOf(storage)).toEqual([kept[0]!, kept[1]!, kept[4]!].map((c) => c.serial).sort());
  });

  it('ok/in batches, oldest first, each counted as it goes; a turn between two batches', async () => {
    const old = Array.from({ length: 10 }, (_, i) => cert(RETAIN + (i + 1) * MIN));
    const storage = await seeded([...old, cert(-DAY)]);
    const seen: number[] = [];
    let turns = 0;
    const run = await deleteExpiredCertificates(
      { clock: new FakeClock(NOW), storage },
      {
        retainMs: RETAIN,
        batchSize: 3,
        onBatch: (n) => seen.push(n),
        between: async () => {
          turns += 1;
        },
      },
    );
    expect(seen).toEqual([3, 3, 3, 1]);
    expect(turns).toBe(3);
    expect(run).toMatchObject({ deleted: 10, batches: 4, complete: true });
    expect(await serialsOf(storage)).toHaveLength(1);
  });

  it('ok/stops after maxBatches, incomplete, leaving the newest of the expired for the next run', async () => {
    const old = Array.from({ length: 10 }, (_, i) => cert(RETAIN + (i + 1) * MIN));
    const storage = await seeded(old);
    const run = await deleteExpiredCertificates(
      { clock: new FakeClock(NOW), storage },
      { retainMs: RETAIN, batchSize: 3, maxBatches: 2 },
    );
    expect(run).toMatchObject({ deleted: 6, batches: 2, complete: false });
    // Earliest notAfter first: the four left are the four expired least long ago.
    expect(await serialsOf(storage)).toEqual(
      old
        .slice(0, 4)
        .map((c) => c.serial)
        .sort(),
    );
  });

  it('ok/ends early when told to stop (the server is stopping)', async () => {
    const storage = await seeded(Array.from({ length: 10 }, () => cert(RETAIN + DAY)));
    let batches = 0;
    const run = await deleteExpiredCertificates(
      { clock: new FakeClock(NOW), storage },
      { retainMs: RETAIN, batchSize: 2, onBatch: () => void batches++, shouldStop: () => batches >= 2 },
    );
    expect(run).toMatchObject({ deleted: 4, batches: 2, complete: false });
  });

  it('ok/a second run while the first holds the lock does nothing: { ran: false }', async () => {
    const storage = await seeded(Array.from({ length: 6 }, () => cert(RETAIN + DAY)));
    const clock = new FakeClock(NOW);
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const first = deleteExpiredCertificates(
      { clock, storage },
      {
        retainMs: RETAIN,
        batchSize: 2,
        between: async () => {
          entered();
          await held;
        },
      },
    );
    await inside;
    expect(await deleteExpiredCertificates({ clock, storage }, { retainMs: RETAIN })).toEqual({ ran: false });
    expect(await serialsOf(storage)).toHaveLength(4);
    release();
    expect(await first).toMatchObject({ ran: true, deleted: 6 });
  });
});
