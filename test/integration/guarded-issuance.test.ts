import { randomBytes } from 'node:crypto';
import type {
  AuditEvent,
  CertificateRecord,
  EntryRecord,
  WorkloadGuard,
} from '../../services/ca/src/domain/ports';
import { describeEachBackend, describePostgres } from '../support/database';
import { attestedNode } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';

/**
 * The one statement of the workload fast path (storage/knex/issuance-repository.ts): it records the
 * certificate and its audit row only while every check of the general path still holds, and writes
 * nothing otherwise. Each guard condition is broken in turn.
 */
const TD = 'guard.example.org';

/** A certificate record as the domain builds one: random serial and key, 10 minutes from `now`. */
function certificate(
  p: {
    kind: CertificateRecord['kind'];
    caId: string;
    spiffeId: string;
    nodeId: string | null;
    issuedVia: string | null;
  },
  now: Date,
  serial = randomBytes(16).toString('hex'),
): CertificateRecord {
  return {
    serial,
    ...p,
    notBefore: now,
    notAfter: new Date(now.getTime() + 600_000),
    keyFingerprint: randomBytes(32).toString('hex'),
    der: randomBytes(200),
    status: 'valid',
    createdAt: now,
  };
}

/** The audit row that goes with it. */
const event = (
  p: { event: string; actor: string; subject: string; details: Record<string, unknown> },
  at: Date,
): AuditEvent => ({
  at,
  source: null,
  outcome: 'success',
  ...p,
});

describeEachBackend('guarded workload insert', (backend) => {
  let t: TestServer;
  let nodeId: string;
  let peerSerial: string;
  let peerDer: Buffer;
  let caId: string;
  let entry: EntryRecord;

  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
    const n = await attestedNode(t, { nodeName: 'g1' });
    nodeId = n.body.node_id!;
    peerSerial = n.body.serial;
    const peer = (await t.ca.storage.certificates.findBySerial(peerSerial))!;
    caId = peer.caId;
    peerDer = peer.der;
    entry = {
      name: 'api',
      spiffeId: `spiffe://${TD}/api`,
      parentNodeId: nodeId,
      selectors: [],
      dnsNames: ['api.internal'],
      allowWildcardDns: false,
      ttlMs: 600_000,
      createdBy: 'test',
      createdAt: new Date(t.clock.now().getTime() - 1000),
    };
    await t.ca.storage.entries.insert(entry);
  });
  afterAll(() => t.close());

  const record = (): CertificateRecord =>
    certificate(
      { kind: 'workload', caId, spiffeId: entry.spiffeId, nodeId: null, issuedVia: nodeId },
      t.clock.now(),
    );
  const audit = (serial: string): AuditEvent =>
    event(
      {
        event: 'certificate.issued',
        actor: `spiffe://${TD}/node/${nodeId}`,
        subject: entry.spiffeId,
        details: { kind: 'workload', serial },
      },
      t.clock.now(),
    );
  const guard = (over: Partial<WorkloadGuard> = {}): WorkloadGuard => ({
    nodeId,
    peerSerial,
    peerDer,
    now: t.clock.now(),
    entry,
    ...over,
  });
  /** Records through the guard; returns the verdict and what landed for that serial. */
  const attempt = async (g: WorkloadGuard) => {
    const rec = record();
    const ok = await t.ca.storage.issuances.recordWorkloadGuarded(rec, audit(rec.serial), g);
    const cert = await t.ca.storage.certificates.findBySerial(rec.serial);
    const audits = (
      await t.ca.storage.audit.list({ event: 'certificate.issued', subject: entry.spiffeId })
    ).filter((a) => a.details.serial === rec.serial);
    return { ok, cert, audits, rec };
  };

  it('ok/every check holds: the certificate and its audit row are recorded together', async () => {
    const r = await attempt(guard());
    expect(r.ok).toBe(true);
    expect(r.cert).toMatchObject({
      serial: r.rec.serial,
      kind: 'workload',
      issuedVia: nodeId,
      nodeId: null,
      status: 'valid',
      der: r.rec.der,
    });
    expect(r.audits).toHaveLength(1);
    expect(r.audits[0]).toMatchObject({ actor: `spiffe://${TD}/node/${nodeId}`, outcome: 'success' });
  });

  it.each([
    ['another node', () => guard({ nodeId: 'nosuchnode' })],
    ['an unknown peer certificate', () => guard({ peerSerial: 'ab'.repeat(16) })],
    // The serial is the node's current certificate's, the certificate presented another one.
    [
      'another certificate under the peer serial',
      () => guard({ peerDer: Buffer.concat([peerDer, Buffer.of(0)]) }),
    ],
    [
      'an expired peer certificate',
      () => guard({ now: new Date(t.clock.now().getTime() + 400 * 86_400_000) }),
    ],
    ['other DNS names', () => guard({ entry: { ...entry, dnsNames: ['other.internal'] } })],
    ['another TTL', () => guard({ entry: { ...entry, ttlMs: null } })],
    [
      'an entry recreated later',
      () => guard({ entry: { ...entry, createdAt: new Date(entry.createdAt.getTime() + 1) } }),
    ],
    ['another SPIFFE ID', () => guard({ entry: { ...entry, spiffeId: `spiffe://${TD}/other` } })],
    ['an entry of another name', () => guard({ entry: { ...entry, name: 'nosuch' } })],
  ])('fail/%s: nothing is written', async (_what, g) => {
    const r = await attempt(g());
    expect(r.ok).toBe(false);
    expect(r.cert).toBeNull();
    expect(r.audits).toHaveLength(0);
  });

  it('fail/a serial already recorded: ERR_CONFLICT (the caller draws again), nothing else written', async () => {
    const first = record();
    expect(await t.ca.storage.issuances.recordWorkloadGuarded(first, audit(first.serial), guard())).toBe(
      true,
    );
    const again = { ...record(), serial: first.serial };
    await expect(
      t.ca.storage.issuances.recordWorkloadGuarded(again, audit('dup'), guard()),
    ).rejects.toMatchObject({ code: 'ERR_CONFLICT' });
    const audits = await t.ca.storage.audit.list({ event: 'certificate.issued', subject: entry.spiffeId });
    expect(audits.filter((a) => a.details.serial === 'dup')).toHaveLength(0);
  });

  it('group commit: concurrent requests share statements, and each gets its own outcome', async () => {
    /** Rows per guarded statement sent (26 bindings a row). */
    const statements: number[] = [];
    /** Each statement is a prepared statement named after its batch size (planned once per connection). */
    const names: string[] = [];
    const paths: string[] = [];
    const onQuery = (q: {
      sql: string;
      bindings?: unknown[];
      options?: { name?: string };
      direct?: boolean;
    }) => {
      if (!q.sql.includes('with req')) return;
      statements.push((q.bindings?.length ?? 0) / 27);
      names.push(q.options?.name ?? 'unnamed');
      paths.push(q.direct ? 'pg' : 'knex');
    };
    t.db.knex.on('query', onQuery);
    try {
      const taken = record();
      expect(await t.ca.storage.issuances.recordWorkloadGuarded(taken, audit(taken.serial), guard())).toBe(
        true,
      );
      statements.length = 0;
      names.length = 0;
      const recs = Array.from({ length: 12 }, () => record());
      // One row reuses a certified key (a unique violation fails its whole batch), one is refused.
      recs[5]!.keyFingerprint = taken.keyFingerprint;
      const guards = recs.map((_, i) => (i === 8 ? guard({ peerSerial: 'cd'.repeat(16) }) : guard()));
      const outcomes = await Promise.allSettled(
        recs.map((r, i) => t.ca.storage.issuances.recordWorkloadGuarded(r, audit(r.serial), guards[i]!)),
      );
      expect(
        outcomes.map((o) => (o.status === 'fulfilled' ? o.value : (o.reason as { code: string }).code)),
      ).toEqual(recs.map((_, i) => (i === 5 ? 'ERR_KEY_REUSED' : i !== 8)));
      // Batched: some statement carried several rows; every row was attempted.
      expect(Math.max(...statements)).toBeGreaterThan(1);
      expect(statements.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(12);
      expect(names).toEqual(statements.map((rows) => `baton_workload_${rows}`));
      // On PostgreSQL the batch goes straight to a pg connection; on PGlite through knex.raw.
      expect(new Set(paths)).toEqual(new Set([t.db.url ? 'pg' : 'knex']));
      for (const [i, r] of recs.entries()) {
        const stored = await t.ca.storage.certificates.findBySerial(r.serial);
        expect(stored === null).toBe(i === 5 || i === 8);
      }
      const audits = await t.ca.storage.audit.list({ event: 'certificate.issued', subject: entry.spiffeId });
      const audited = new Set(audits.map((a) => a.details.serial));
      expect(recs.map((r) => audited.has(r.serial))).toEqual(recs.map((_, i) => i !== 5 && i !== 8));
    } finally {
      t.db.knex.off('query', onQuery);
    }
  });

  it('fail/a superseded peer certificate, then a revoked node: nothing is written', async () => {
    await t.db.knex('certificates').where({ serial: peerSerial }).update({ status: 'superseded' });
    expect((await attempt(guard())).ok).toBe(false);
    await t.db.knex('certificates').where({ serial: peerSerial }).update({ status: 'valid' });
    expect((await attempt(guard())).ok).toBe(true);
    await t.db.knex('nodes').where({ id: nodeId }).update({ status: 'revoked' });
    const r = await attempt(guard());
    expect(r).toMatchObject({ ok: false, cert: null, audits: [] });
    await t.db.knex('nodes').where({ id: nodeId }).update({ status: 'active' });
  });
});

/**
 * A node revocation locks the node row FOR UPDATE, marks it revoked and revokes every certificate
 * issued through it. An insert that comes while the revocation holds the lock must wait and then
 * write nothing; a revocation that comes while the insert holds its FOR SHARE lock must wait and
 * then find (and revoke) the new certificate. Two connections of a real PostgreSQL.
 */
describePostgres('guarded workload insert racing a revocation', () => {
  let t: TestServer;
  let nodeId: string;
  let peerSerial: string;
  let peerDer: Buffer;
  let caId: string;
  let entry: EntryRecord;
  beforeAll(async () => {
    t = await startTestServer({ backend: 'postgres', trustDomain: TD });
  });
  afterAll(() => t.close());

  const setup = async (name: string) => {
    const n = await attestedNode(t, { nodeName: name });
    nodeId = n.body.node_id!;
    peerSerial = n.body.serial;
    const peer = (await t.ca.storage.certificates.findBySerial(peerSerial))!;
    caId = peer.caId;
    peerDer = peer.der;
    entry = {
      name: `e-${name}`,
      spiffeId: `spiffe://${TD}/${name}`,
      parentNodeId: nodeId,
      selectors: [],
      dnsNames: [],
      allowWildcardDns: false,
      ttlMs: null,
      createdBy: 'test',
      createdAt: new Date(t.clock.now().getTime() - 1000),
    };
    await t.ca.storage.entries.insert(entry);
  };
  const insert = (serial = randomBytes(16).toString('hex')) => {
    const now = t.clock.now();
    const rec = certificate(
      { kind: 'workload', caId, spiffeId: entry.spiffeId, nodeId: null, issuedVia: nodeId },
      now,
      serial,
    );
    const ev = event(
      {
        event: 'certificate.issued',
        actor: 'test',
        subject: entry.spiffeId,
        details: { serial: rec.serial },
      },
      now,
    );
    return {
      rec,
      done: t.ca.storage.issuances.recordWorkloadGuarded(rec, ev, {
        nodeId,
        peerSerial,
        peerDer,
        now,
        entry,
      }),
    };
  };
  /** Resolves once the insert is waiting on a lock (pg_stat_activity), so the order is certain. */
  const waitingOnLock = async (sessions: number) => {
    for (let i = 0; i < 500; i++) {
      const r = await t.db.knex.raw(
        "select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()",
      );
      if (r.rows[0].n >= sessions) return;
      await new Promise((res) => setTimeout(res, 10));
    }
    throw new Error('the insert never waited on the lock');
  };

  it('a revocation holding the node lock wins: the insert waits, then writes nothing', async () => {
    await setup('race1');
    const trx = await t.db.knex.transaction();
    await trx('nodes').where({ id: nodeId }).forUpdate();
    const { rec, done } = insert();
    await waitingOnLock(1);
    await trx('nodes').where({ id: nodeId }).update({ status: 'revoked' });
    await trx('certificates').where({ issued_via: nodeId }).update({ status: 'revoked' });
    await trx.commit();
    expect(await done).toBe(false);
    expect(await t.ca.storage.certificates.findBySerial(rec.serial)).toBeNull();
  });

  it('an insert holding its FOR SHARE lock wins: the revocation waits, then revokes the new certificate', async () => {
    await setup('race2');
    const serial = randomBytes(16).toString('hex');
    // Stall the insert after its guard has locked the node: another transaction holds an
    // uncommitted row with the same serial, so the unique check waits for it (it then rolls back).
    const blocker = await t.db.knex.transaction();
    await blocker('certificates').insert({
      serial,
      ca_id: caId,
      kind: 'workload',
      spiffe_id: 'spiffe://blocker',
      not_before: new Date(),
      not_after: new Date(),
      key_fingerprint: randomBytes(32).toString('hex'),
      der: Buffer.from([0]),
      status: 'valid',
      created_at: new Date(),
    });
    const { rec, done } = insert(serial);
    await waitingOnLock(1);
    const revocation = t.db.knex.transaction(async (trx) => {
      await trx('nodes').where({ id: nodeId }).forUpdate();
      await trx('nodes').where({ id: nodeId }).update({ status: 'revoked' });
      return (await trx('certificates')
        .where({ issued_via: nodeId })
        .update({ status: 'revoked' })
        .returning('serial')) as {
        serial: string;
      }[];
    });
    await waitingOnLock(2);
    await blocker.rollback();
    expect(await done).toBe(true);
    const revoked = await revocation;
    expect(revoked.map((r) => r.serial)).toContain(rec.serial);
    expect((await t.ca.storage.certificates.findBySerial(rec.serial))!.status).toBe('revoked');
  });
});

/** The renewal statement (IssuanceRepository.recordRenewalGuarded) on its own. */
describeEachBackend('guarded renewal', (backend) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ backend, trustDomain: TD });
  });
  afterAll(() => t.close());

  const fresh = async (name: string) => {
    const n = await attestedNode(t, { nodeName: name });
    const peer = (await t.ca.storage.certificates.findBySerial(n.body.serial))!;
    return { nodeId: n.body.node_id!, peer };
  };
  const renewal = (nodeId: string, peer: CertificateRecord, now = t.clock.now()) => {
    const { caId, serial: peerSerial, der: peerDer } = peer;
    const spiffeId = `spiffe://${TD}/node/${nodeId}`;
    const rec = certificate({ kind: 'node', caId, spiffeId, nodeId, issuedVia: null }, now);
    const ev = event(
      {
        event: 'certificate.renewed',
        actor: spiffeId,
        subject: spiffeId,
        details: { serial: rec.serial, previous: peerSerial },
      },
      now,
    );
    return {
      rec,
      done: t.ca.storage.issuances.recordRenewalGuarded(rec, ev, { nodeId, peerSerial, peerDer, now }),
    };
  };
  const renewedAudit = async (serial: string) =>
    (await t.ca.storage.audit.list({ event: 'certificate.renewed' })).filter(
      (a) => a.details.serial === serial,
    );

  it('ok/supersedes the presented certificate, records the new one with its audit row and when the node was seen', async () => {
    const { nodeId, peer } = await fresh('r1');
    t.clock.advance(5000);
    const names: (string | undefined)[] = [];
    const onQuery = (q: { sql: string; options?: { name?: string }; direct?: boolean }) => {
      if (q.sql.includes('superseded as')) names.push(`${q.options?.name} ${q.direct ? 'pg' : 'knex'}`);
    };
    t.db.knex.on('query', onQuery);
    const { rec, done } = renewal(nodeId, peer);
    expect(await done).toBe(true);
    t.db.knex.off('query', onQuery);
    // A prepared statement: PostgreSQL plans it once per connection.
    expect(names).toEqual([`baton_renewal ${t.db.url ? 'pg' : 'knex'}`]);
    expect((await t.ca.storage.certificates.findBySerial(peer.serial))!.status).toBe('superseded');
    expect((await t.ca.storage.certificates.findBySerial(rec.serial))!.status).toBe('valid');
    expect(await renewedAudit(rec.serial)).toHaveLength(1);
    expect((await t.ca.storage.nodes.findById(nodeId))!.lastSeenAt).toEqual(t.clock.now());
    // The superseded certificate renews no more.
    const again = renewal(nodeId, peer);
    expect(await again.done).toBe(false);
    expect(await t.ca.storage.certificates.findBySerial(again.rec.serial)).toBeNull();
  });

  it.each([
    [
      'a revoked node',
      async (nodeId: string) =>
        void (await t.db.knex('nodes').where({ id: nodeId }).update({ status: 'revoked' })),
    ],
    [
      'a revoked certificate',
      async (_n: string, serial: string) =>
        void (await t.db.knex('certificates').where({ serial }).update({ status: 'revoked' })),
    ],
  ])('fail/%s: nothing is written, nothing superseded', async (_what, spoil) => {
    const { nodeId, peer } = await fresh(`r-${randomBytes(3).toString('hex')}`);
    await spoil(nodeId, peer.serial);
    const { rec, done } = renewal(nodeId, peer);
    expect(await done).toBe(false);
    expect(await t.ca.storage.certificates.findBySerial(rec.serial)).toBeNull();
    expect(await renewedAudit(rec.serial)).toHaveLength(0);
    expect((await t.ca.storage.certificates.findBySerial(peer.serial))!.status).not.toBe('superseded');
  });

  it('fail/an expired certificate, or one of another node: nothing is written', async () => {
    const a = await fresh('r-exp');
    const late = new Date(a.peer.notAfter.getTime() + 1000);
    const expired = renewal(a.nodeId, a.peer, late);
    expect(await expired.done).toBe(false);
    const b = await fresh('r-other');
    const crossed = renewal(b.nodeId, a.peer);
    expect(await crossed.done).toBe(false);
    expect((await t.ca.storage.certificates.findBySerial(a.peer.serial))!.status).toBe('valid');
    expect((await t.ca.storage.certificates.findBySerial(b.peer.serial))!.status).toBe('valid');
  });

  it('two concurrent renewals of one certificate: exactly one new certificate', async () => {
    const { nodeId, peer } = await fresh('r-race');
    const attempts = Array.from({ length: 8 }, () => renewal(nodeId, peer));
    const outcomes = await Promise.all(attempts.map((a) => a.done));
    expect(outcomes.filter(Boolean)).toHaveLength(1);
    const valid = await t.db.knex('certificates').where({ node_id: nodeId, kind: 'node', status: 'valid' });
    expect(valid).toHaveLength(1);
  });
});
