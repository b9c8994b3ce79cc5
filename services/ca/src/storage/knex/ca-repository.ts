import type { Knex } from 'knex';
import { BatonError } from '../../ground/errors';
import type { CaRecord, CaRepository, CrossCertificateRecord, Installation } from '../../domain/ports';
import { db, toBuffer } from './db-errors';
import {
  type KeyColumns,
  keyColumns,
  type SettingsColumns,
  settingsColumns,
  settingsOf,
  wrappedKeyOf,
} from './shared-columns';

interface InstallationRow extends SettingsColumns {
  created_at: Date;
}

interface CaRow extends KeyColumns {
  id: string;
  kind: CaRecord['kind'];
  parent_id: string | null;
  certificate_der: Uint8Array;
  not_before: Date;
  not_after: Date;
  active: boolean;
  created_at: Date;
}

interface CrossRow {
  ca_id: string;
  issuer_id: string;
  certificate_der: Uint8Array;
  not_before: Date;
  not_after: Date;
  created_at: Date;
}

const toCross = (r: CrossRow): CrossCertificateRecord => ({
  caId: r.ca_id,
  issuerId: r.issuer_id,
  certificateDer: toBuffer(r.certificate_der),
  notBefore: new Date(r.not_before),
  notAfter: new Date(r.not_after),
  createdAt: new Date(r.created_at),
});

const toInstallation = (r: InstallationRow): Installation => ({
  ...settingsOf(r),
  createdAt: new Date(r.created_at),
});

const toCa = (r: CaRow): CaRecord => ({
  id: r.id,
  kind: r.kind,
  parentId: r.parent_id,
  certificateDer: toBuffer(r.certificate_der),
  notBefore: new Date(r.not_before),
  notAfter: new Date(r.not_after),
  active: r.active,
  wrappedKey: wrappedKeyOf(r),
  createdAt: new Date(r.created_at),
});

const fromCa = (c: CaRecord): CaRow => ({
  id: c.id,
  kind: c.kind,
  parent_id: c.parentId,
  certificate_der: c.certificateDer,
  not_before: c.notBefore,
  not_after: c.notAfter,
  active: c.active,
  ...keyColumns(c.wrappedKey),
  created_at: c.createdAt,
});

export function knexCaRepository(k: Knex | Knex.Transaction): CaRepository {
  return {
    getInstallation: () =>
      db(async () => {
        const row = await k<InstallationRow>('installation').where('id', 1).first();
        return row ? toInstallation(row) : null;
      }),
    listCas: () => db(async () => (await k<CaRow>('cas').orderBy('created_at')).map(toCa)),
    initialize: (inst, cas) =>
      db(async () => {
        const write = async (trx: Knex.Transaction) => {
          // The single-row primary key makes a concurrent second `ca init` fail here, not later.
          const inserted = await trx('installation')
            .insert({ id: 1, ...settingsColumns(inst), created_at: inst.createdAt })
            .onConflict('id')
            .ignore()
            .returning('id');
          if (inserted.length === 0)
            throw new BatonError('ERR_ALREADY_INITIALIZED', 'the CA is already initialized');
          for (const ca of cas) await trx('cas').insert(fromCa(ca));
        };
        if (k.isTransaction) await write(k as Knex.Transaction);
        else await k.transaction(write);
      }),
    addActiveIntermediate: (ca) =>
      db(async () => {
        const write = async (trx: Knex.Transaction) => {
          await trx('cas').where({ kind: 'intermediate' }).update({ active: false });
          await trx('cas').insert(fromCa({ ...ca, active: true }));
        };
        if (k.isTransaction) await write(k as Knex.Transaction);
        else await k.transaction(write);
      }),
    listCrossCertificates: () =>
      db(async () => (await k<CrossRow>('ca_cross_certificates').orderBy('created_at')).map(toCross)),
    lockCaSet: () =>
      db(async () => {
        await k('installation').where('id', 1).forUpdate().first();
      }),
    addRoot: (ca) =>
      db(async () => {
        await k('cas').insert(fromCa({ ...ca, kind: 'root', parentId: null }));
      }),
    addCrossCertificate: (x) =>
      db(async () => {
        await k('ca_cross_certificates').insert({
          ca_id: x.caId,
          issuer_id: x.issuerId,
          certificate_der: x.certificateDer,
          not_before: x.notBefore,
          not_after: x.notAfter,
          created_at: x.createdAt,
        } satisfies CrossRow);
      }),
    retireRoots: (ids) =>
      db(() =>
        k('cas')
          .whereIn('id', [...ids])
          .andWhere({ kind: 'root', active: true })
          .update({ active: false }),
      ),
    countCertificatesUnder: (caIds, now) =>
      db(async () => {
        if (caIds.length === 0) return { nodes: 0, workloadCertificates: 0 };
        // The (ca_id, status, not_after) index serves both counts.
        const live = () =>
          k('certificates')
            .whereIn('ca_id', [...caIds])
            .andWhere('status', 'valid')
            .andWhere('not_after', '>', now);
        const nodes = await live().andWhere('kind', 'node').countDistinct({ n: 'node_id' }).first();
        const workloads = await live().andWhere('kind', 'workload').count({ n: '*' }).first();
        return { nodes: Number(nodes?.n ?? 0), workloadCertificates: Number(workloads?.n ?? 0) };
      }),
  };
}
