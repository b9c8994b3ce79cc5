import type { Knex } from 'knex';
import type {
  NodeRole,
  TpmChallengeRecord,
  TpmEnrollmentRecord,
  TpmManufacturerCaRecord,
  TpmRepository,
} from '../../domain/ports';
import { db, toBuffer } from './db-errors';

interface EnrollmentRow {
  ek_id: string;
  role: NodeRole;
  enrolled_by: string;
  enrolled_at: Date;
}

interface ManufacturerCaRow {
  fingerprint: string;
  certificate_der: Uint8Array;
  subject: string;
  not_before: Date;
  not_after: Date;
  role: NodeRole;
  created_by: string;
  created_at: Date;
}

interface ChallengeRow {
  nonce: string;
  expires_at: Date;
  ek_id: string;
  role: NodeRole;
  admitted_by: string;
  ak_spki: Uint8Array;
  ak_qualified_name: Uint8Array;
  secret_hash: Uint8Array;
}

const toEnrollment = (r: EnrollmentRow): TpmEnrollmentRecord => ({
  ekId: r.ek_id,
  role: r.role,
  enrolledBy: r.enrolled_by,
  enrolledAt: new Date(r.enrolled_at),
});

const toManufacturerCa = (r: ManufacturerCaRow): TpmManufacturerCaRecord => ({
  fingerprint: r.fingerprint,
  certificateDer: toBuffer(r.certificate_der),
  subject: r.subject,
  notBefore: new Date(r.not_before),
  notAfter: new Date(r.not_after),
  role: r.role,
  createdBy: r.created_by,
  createdAt: new Date(r.created_at),
});

const toChallenge = (r: ChallengeRow): TpmChallengeRecord => ({
  nonce: r.nonce,
  expiresAt: new Date(r.expires_at),
  ekId: r.ek_id,
  role: r.role,
  admittedBy: r.admitted_by,
  akSpki: toBuffer(r.ak_spki),
  akQualifiedName: toBuffer(r.ak_qualified_name),
  secretHash: toBuffer(r.secret_hash),
});

/**
 * The nonce row and the challenge row in one statement (a data-modifying CTE): both land or
 * neither, without a transaction around a request that may reach any replica. The nonce is an
 * ordinary `attestation_nonces` row, spent by NonceRepository.use like x509pop's.
 */
const INSERT_CHALLENGE = `
with n as (
  insert into attestation_nonces (nonce, method, expires_at) values (?, 'tpm', ?) returning nonce
)
insert into tpm_challenges (nonce, ek_id, role, admitted_by, ak_spki, ak_qualified_name, secret_hash)
select n.nonce, ?, ?, ?, ?, ?, ? from n`;

export function knexTpmRepository(k: Knex | Knex.Transaction): TpmRepository {
  return {
    enroll: (e) =>
      db(async () => {
        await k('tpm_enrollments')
          .insert({ ek_id: e.ekId, role: e.role, enrolled_by: e.enrolledBy, enrolled_at: e.enrolledAt })
          .onConflict('ek_id')
          .merge(['role', 'enrolled_by', 'enrolled_at']);
      }),
    findEnrollment: (ekId) =>
      db(async () => {
        const row = (await k('tpm_enrollments').where({ ek_id: ekId }).first()) as EnrollmentRow | undefined;
        return row ? toEnrollment(row) : null;
      }),
    addManufacturerCa: (ca) =>
      db(async () => {
        await k('tpm_manufacturer_cas').insert({
          fingerprint: ca.fingerprint,
          certificate_der: ca.certificateDer,
          subject: ca.subject,
          not_before: ca.notBefore,
          not_after: ca.notAfter,
          role: ca.role,
          created_by: ca.createdBy,
          created_at: ca.createdAt,
        });
      }),
    listManufacturerCas: () =>
      db(async () =>
        ((await k('tpm_manufacturer_cas').orderBy(['created_at', 'fingerprint'])) as ManufacturerCaRow[]).map(
          toManufacturerCa,
        ),
      ),
    insertChallenge: (c) =>
      db(async () => {
        await k.raw(INSERT_CHALLENGE, [
          c.nonce,
          c.expiresAt,
          c.ekId,
          c.role,
          c.admittedBy,
          c.akSpki,
          c.akQualifiedName,
          c.secretHash,
        ]);
      }),
    findChallenge: (nonce, now) =>
      db(async () => {
        const row = (await k('tpm_challenges as c')
          .join('attestation_nonces as n', 'n.nonce', 'c.nonce')
          .where({ 'c.nonce': nonce, 'n.method': 'tpm' })
          .whereNull('n.used_at')
          .andWhere('n.expires_at', '>', now)
          .first(
            'c.nonce',
            'n.expires_at',
            'c.ek_id',
            'c.role',
            'c.admitted_by',
            'c.ak_spki',
            'c.ak_qualified_name',
            'c.secret_hash',
          )) as ChallengeRow | undefined;
        return row ? toChallenge(row) : null;
      }),
  };
}
