/**
 * What certificate and audit rows cost on disk (issue 20, docs/operations.md "Retention"): seeds
 * the two tables of a fresh database with rows as a fleet writes them (real leaf DERs signed by a
 * Baton CA, the audit events of issuance and renewal, sealed into the chain), then measures
 * `pg_total_relation_size` (heap, TOAST and every index) per row, after VACUUM ANALYZE.
 *
 *   npx tsc -p tsconfig.build.json && node dist/bench/row-sizes.js [ROWS]
 *
 * On the PostgreSQL of BATON_DATABASE_URL (a database of its own is made and dropped), else on an
 * in-memory PGlite. Prints a Markdown table; asserts nothing.
 */
import { randomBytes } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';
import { sealAudit } from '../services/ca/src/domain/audit';
import { createIntermediateCa, createRootCa } from '../services/ca/src/domain/ca-hierarchy';
import { FakeClock } from '../services/ca/src/domain/clock';
import { issueLeaf } from '../services/ca/src/domain/issue';
import { loadKeyring } from '../services/ca/src/domain/keyring';
import type { CertificateRecord } from '../services/ca/src/domain/ports';
import { kekFromBase64 } from '../services/ca/src/pki/kek';
import { describePublicKey, generateP256, spkiOf } from '../services/ca/src/pki/keys';
import { migrateLatest, openMemoryDatabase } from '../services/ca/src/storage/knex/database';
import { knexStorage } from '../services/ca/src/storage/knex/knex-storage';

const TD = 'prod.example.org';
const URL_ = 'https://baton.prod.example.org:8443';
/** Distinct real leaves; rows reuse their DER (a DER's size is what counts) with their own keys. */
const SAMPLES = 50;

async function database(): Promise<{ knex: Knex; drop(): Promise<void>; where: string }> {
  const admin = process.env.BATON_DATABASE_URL;
  if (!admin) {
    const knex = openMemoryDatabase();
    return { knex, drop: () => knex.destroy(), where: 'PGlite (in memory)' };
  }
  const name = `baton_row_sizes_${randomBytes(4).toString('hex')}`;
  const root = knexFactory({ client: 'pg', connection: admin, pool: { min: 0, max: 1 } });
  await root.raw(`create database ${name}`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  const knex = knexFactory({ client: 'pg', connection: url.toString(), pool: { min: 0, max: 4 } });
  const version = ((await knex.raw('show server_version')) as { rows: { server_version: string }[] })
    .rows[0]!;
  return {
    knex,
    where: `PostgreSQL ${version.server_version}`,
    drop: async () => {
      await knex.destroy();
      await root.raw(`drop database if exists ${name} with (force)`);
      await root.destroy();
    },
  };
}

async function main() {
  const rows = Number(process.argv[2] ?? 20_000);
  const db = await database();
  try {
    await migrateLatest(db.knex);
    const storage = knexStorage(db.knex);
    const clock = new FakeClock('2026-12-08T12:00:00Z');
    const kek = kekFromBase64(randomBytes(32).toString('base64'), 'row-sizes');
    const root = createRootCa({ trustDomain: TD, now: clock.now(), kek });
    const inter = createIntermediateCa({ trustDomain: TD, now: clock.now(), kek, root, publicUrl: URL_ });
    await storage.cas.initialize(
      {
        trustDomain: TD,
        publicUrl: URL_,
        nodeTtlMs: 86_400_000,
        workloadTtlMs: 3_600_000,
        adminTtlMs: 28_800_000,
        createdAt: clock.now(),
      },
      [root.record, inter.record],
    );
    const keyring = loadKeyring([root.record, inter.record], kek, URL_, []);
    // Real workload SVIDs, as a node mints them: a SPIFFE ID, two DNS names, P-256 keys.
    const samples: CertificateRecord[] = [];
    const scratch = { ...storage.certificates, insert: async () => undefined };
    for (let i = 0; i < SAMPLES; i++) {
      const leaf = await issueLeaf(
        { clock, issuer: keyring.signing, certificates: scratch },
        {
          kind: 'workload',
          spiffeId: `spiffe://${TD}/ns/payments/sa/api-${i}`,
          subject: { O: TD, CN: `api-${i}` },
          key: describePublicKey(spkiOf(generateP256().publicKey)),
          ttlMs: 3_600_000,
          dnsNames: [`api-${i}.payments.svc`, `api-${i}.payments.svc.cluster.local`],
          issuedVia: `node-${String(i).padStart(4, '0')}`,
        },
      );
      samples.push(leaf.record);
    }
    for (let start = 0; start < rows; start += 1000) {
      const batch: CertificateRecord[] = [];
      for (let i = start; i < Math.min(rows, start + 1000); i++) {
        const s = samples[i % SAMPLES]!;
        batch.push({
          ...s,
          serial: randomBytes(16).toString('hex'),
          keyFingerprint: randomBytes(32).toString('hex'),
        });
      }
      await db.knex('certificates').insert(
        batch.map((c) => ({
          serial: c.serial,
          ca_id: c.caId,
          kind: c.kind,
          spiffe_id: c.spiffeId,
          node_id: c.nodeId,
          issued_via: c.issuedVia,
          not_before: c.notBefore,
          not_after: c.notAfter,
          key_fingerprint: c.keyFingerprint,
          der: c.der,
          status: 'superseded',
          created_at: c.createdAt,
        })),
      );
      await db.knex('audit_log').insert(
        batch.map((c) => ({
          at: c.createdAt,
          event: 'certificate.issued',
          actor: `spiffe://${TD}/node/${c.issuedVia}`,
          source: '10.20.30.40',
          subject: c.spiffeId,
          outcome: 'success',
          details: JSON.stringify({
            kind: 'workload',
            serial: c.serial,
            entry: c.spiffeId.slice(-20),
            node: c.issuedVia,
          }),
        })),
      );
    }
    await sealAudit(storage.audit);
    const sizeOf = async (table: string) => {
      const r = (await db.knex.raw(
        `select pg_total_relation_size(?::regclass) as total, pg_indexes_size(?::regclass) as indexes,
                (select count(*) from ${table}) as n, (select round(avg(pg_column_size(t.*))) from ${table} t) as tuple`,
        [table, table],
      )) as { rows: { total: string; indexes: string; n: string; tuple: string }[] };
      const x = r.rows[0]!;
      const per = (v: string) => Math.round(Number(v) / Number(x.n));
      return { total: per(x.total), indexes: per(x.indexes), tuple: Number(x.tuple) };
    };
    // As written: after a plain VACUUM, indexes as they grew by page splits, and for the audit log
    // the space of each row's first version (the sealer updates every row once), which later
    // inserts reuse. Compacted: VACUUM FULL, the floor.
    const measured: Record<
      string,
      { written: Awaited<ReturnType<typeof sizeOf>>; compact?: Awaited<ReturnType<typeof sizeOf>> }
    > = {};
    for (const table of ['certificates', 'audit_log']) {
      await db.knex.raw(`vacuum analyze ${table}`);
      measured[table] = { written: await sizeOf(table) };
      await db.knex.raw(`vacuum full analyze ${table}`);
      measured[table]!.compact = await sizeOf(table);
    }
    const der = Math.round(samples.reduce((a, c) => a + c.der.length, 0) / SAMPLES);
    console.log(`${db.where}, ${rows} rows per table (leaf DER ${der} bytes on average)\n`);
    console.log(
      '| table | bytes per row as written (of which indexes) | compacted (of which indexes) | the row itself |',
    );
    console.log('| --- | --- | --- | --- |');
    for (const [table, m] of Object.entries(measured))
      console.log(
        `| ${table} | ${m.written.total} (${m.written.indexes}) | ${m.compact!.total} (${m.compact!.indexes}) | ${m.compact!.tuple} |`,
      );
  } finally {
    await db.drop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
