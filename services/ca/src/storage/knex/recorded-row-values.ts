import type { Knex } from 'knex';
import type { AuditEvent, CertificateRecord } from '../../domain/ports';

/**
 * The new certificate's columns, in the order of the inserts of the workload, renewal and
 * attestation statements (issuance-repository.ts, attestation-statement.ts); issued_via, which
 * they take from elsewhere, left out: the guarding node for a workload, null for a node certificate.
 */
export const certificateValues = (r: CertificateRecord): Knex.RawBinding[] => [
  r.serial,
  r.caId,
  r.kind,
  r.spiffeId,
  r.nodeId,
  r.notBefore,
  r.notAfter,
  r.keyFingerprint,
  r.der,
  r.createdAt,
];

/** The audit row's columns, in the order of those statements' `insert into audit_log`. */
export const auditValues = (a: AuditEvent): Knex.RawBinding[] => [
  a.at,
  a.event,
  a.actor,
  a.source,
  a.subject,
  a.outcome,
  JSON.stringify(a.details),
];
