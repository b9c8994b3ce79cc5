import { randomBytes } from 'node:crypto';
import type {
  AttestationOutcome,
  AttestedNode,
  AuditEvent,
  CertificateRecord,
} from '../../services/ca/src/domain/ports';
import { describePostgres } from '../support/database';
import { errorOf } from '../support/errors';
import { attestedNode, newToken } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';

/**
 * The attestation statement (IssuanceRepository.recordAttestation) against concurrent transactions
 * on PostgreSQL, each ordered for certain by waiting until one side waits on a lock: a node
 * revocation, a renewal of the same node, and a connection killed in the middle of the statement.
 * Whatever happens, the statement's writes land together or not at all.
 */
const TD = 'races.example.org';

describePostgres('attestation statement racing other transactions', () => {
  let t: TestServer;
  let caId: string;
  beforeAll(async () => {
    t = await startTestServer({ backend: 'postgres', trustDomain: TD });
    caId = t.ca.keyring.signing.record.id;
  });
  afterAll(() => t.close());

  const tokenId = (token: string) => token.split('-')[2]!.split('.')[0]!;
  const usesLeft = async (id: string) => (await t.ca.storage.tokens.findById(id))!.usesLeft;

  /** An existing node (attested through HTTP) and a fresh token bound to its name. */
  const existing = async (name: string) => {
    const n = await attestedNode(t, { nodeName: name });
    const token = tokenId(await newToken(t, { nodeName: name }));
    return { nodeId: n.body.node_id!, serial: n.body.serial, token };
  };

  /** Starts recordAttestation of a node certificate for `node`; the record and the pending outcome. */
  const attest = (node: AttestedNode, token: string, serial = randomBytes(16).toString('hex')) => {
    const now = t.clock.now();
    const record: CertificateRecord = {
      serial,
      caId,
      kind: 'node',
      spiffeId: `spiffe://${TD}/node/${node.id}`,
      nodeId: node.id,
      issuedVia: null,
      notBefore: now,
      notAfter: new Date(now.getTime() + 3600_000),
      keyFingerprint: randomBytes(32).toString('hex'),
      der: randomBytes(200),
      status: 'valid',
      createdAt: now,
    };
    const audit: AuditEvent = {
      at: now,
      event: 'node.attested',
      actor: 'anonymous',
      source: null,
      subject: record.spiffeId,
      outcome: 'success',
      details: { serial },
    };
    const done: Promise<AttestationOutcome> = t.ca.storage.issuances.recordAttestation(record, audit, {
      spend: { kind: 'token', tokenId: token },
      node,
      method: 'join_token',
      now,
    });
    return { record, done };
  };

  /** Resolves once `sessions` sessions of this database wait on a lock (pg_stat_activity). */
  const waitingOnLock = async (sessions: number): Promise<number[]> => {
    for (let i = 0; i < 500; i++) {
      const r = await t.db.knex.raw(
        "select pid from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()",
      );
      if (r.rows.length >= sessions) return r.rows.map((row: { pid: number }) => row.pid);
      await new Promise((res) => setTimeout(res, 10));
    }
    throw new Error('no session waited on a lock');
  };

  /** What the statement could have written for `nodeId`, `serial` and `token`. */
  const traces = async (nodeId: string, serial: string, token: string) => ({
    certificate: await t.ca.storage.certificates.findBySerial(serial),
    audit: (await t.ca.storage.audit.list({ event: 'node.attested' })).filter(
      (a) => a.details.serial === serial,
    ),
    node: await t.ca.storage.nodes.findById(nodeId),
    usesLeft: await usesLeft(token),
  });

  it('a revocation holding the node lock wins: the attestation waits, then is refused and spends nothing', async () => {
    const n = await existing('race-revoked');
    const before = await t.ca.storage.nodes.findById(n.nodeId);
    const trx = await t.db.knex.transaction();
    await trx('nodes').where({ id: n.nodeId }).forUpdate();
    const { record, done } = attest(
      { id: n.nodeId, role: 'worker', certTtlMs: null, existing: true },
      n.token,
    );
    await waitingOnLock(1);
    await trx('nodes').where({ id: n.nodeId }).update({ status: 'revoked' });
    await trx.commit();

    expect(await done).toBe('node-revoked');
    expect(await traces(n.nodeId, record.serial, n.token)).toEqual({
      certificate: null,
      audit: [],
      node: { ...before, status: 'revoked' },
      usesLeft: 1,
    });
  });

  it('an attestation holding the node lock wins: the revocation waits, then revokes the new certificate', async () => {
    const n = await existing('race-attested');
    // Stall the statement after it locked the node and the token: another transaction holds an
    // uncommitted certificate with the same serial, so the insert waits for it (it then rolls back).
    const serial = randomBytes(16).toString('hex');
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
    const { done } = attest(
      { id: n.nodeId, role: 'worker', certTtlMs: null, existing: true },
      n.token,
      serial,
    );
    await waitingOnLock(1);
    const revocation = t.db.knex.transaction(async (trx) => {
      await trx('nodes').where({ id: n.nodeId }).forUpdate();
      await trx('nodes').where({ id: n.nodeId }).update({ status: 'revoked' });
      return (await trx('certificates')
        .where({ node_id: n.nodeId })
        .whereNot({ status: 'revoked' })
        .update({ status: 'revoked' })
        .returning('serial')) as { serial: string }[];
    });
    await waitingOnLock(2);
    await blocker.rollback();

    expect(await done).toBe('recorded');
    expect((await revocation).map((r) => r.serial).sort()).toEqual([n.serial, serial].sort());
    expect((await t.ca.storage.certificates.findBySerial(serial))!.status).toBe('revoked');
    expect(await usesLeft(n.token)).toBe(0);
  });

  it('a renewal of the node commits while the attestation waits: node-changed, nothing written', async () => {
    const n = await existing('race-renewed');
    const before = await t.ca.storage.nodes.findById(n.nodeId);
    // What a renewal does under the node lock: the node row (last seen) and a new node certificate.
    const renewal = await t.db.knex.transaction();
    await renewal('nodes').where({ id: n.nodeId }).forUpdate();
    const { record, done } = attest(
      { id: n.nodeId, role: 'worker', certTtlMs: null, existing: true },
      n.token,
    );
    await waitingOnLock(1);
    const renewed = randomBytes(16).toString('hex');
    await renewal('nodes').where({ id: n.nodeId }).update({ last_seen_at: t.clock.now() });
    await renewal('certificates').where({ serial: n.serial }).update({ status: 'superseded' });
    await renewal('certificates').insert({
      serial: renewed,
      ca_id: caId,
      kind: 'node',
      spiffe_id: `spiffe://${TD}/node/${n.nodeId}`,
      node_id: n.nodeId,
      not_before: new Date(),
      not_after: new Date(Date.now() + 3600_000),
      key_fingerprint: randomBytes(32).toString('hex'),
      der: Buffer.from([1]),
      status: 'valid',
      created_at: new Date(),
    });
    await renewal.commit();

    // The statement's snapshot predates the renewal's certificate: recording now would leave it
    // valid beside the new one. It writes nothing instead; the use case builds again.
    expect(await done).toBe('node-changed');
    expect(await traces(n.nodeId, record.serial, n.token)).toEqual({
      certificate: null,
      audit: [],
      node: { ...before, lastSeenAt: t.clock.now() },
      usesLeft: 1,
    });
    expect((await t.ca.storage.certificates.findBySerial(renewed))!.status).toBe('valid');
  });

  it('a connection killed in the middle of the statement leaves nothing of it', async () => {
    const token = tokenId(await newToken(t));
    const nodeId = `killed-${randomBytes(4).toString('hex')}`;
    const serial = randomBytes(16).toString('hex');
    // The statement locks the token, inserts the node, spends the use, then waits on the serial.
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
    const { done } = attest({ id: nodeId, role: 'worker', certTtlMs: null, existing: false }, token, serial);
    const [pid] = await waitingOnLock(1);
    await t.db.knex.raw('select pg_terminate_backend(?)', [pid]);

    expect((await errorOf(done)).code).toBe('ERR_DATABASE_UNAVAILABLE');
    await blocker.rollback();
    expect(await traces(nodeId, serial, token)).toEqual({
      certificate: null,
      audit: [],
      node: null,
      usesLeft: 1,
    });
  });
});
