import { BatonError } from '../ground/errors';
import { type ManufacturerCaCertificate, tpmNodeId } from '../pki/tpm';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import type { NodeRole, Storage, TpmManufacturerCaRecord } from './ports';
import { nodeSpiffeId } from './trust-domain';

/**
 * What admits a TPM (issue 19): an enrolled EK identifier, or a manufacturer CA that issued its EK
 * certificate (domain/attestation/tpm-attestor.ts). Both live in the database, so every replica
 * admits alike from the moment the admin's call returns.
 */

export interface TpmAdminDeps {
  clock: Clock;
  storage: Storage;
  trustDomain: string;
}

const EK_ID = /^[0-9a-f]{64}$/;

/** An EK identifier: 64 hex digits (any case; kept lowercase), as `baton agent tpm-id` prints it. */
export function parseEkId(v: string): string {
  const id = v.toLowerCase();
  if (!EK_ID.test(id)) {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      'must be 64 hexadecimal digits (the SHA-256 EK identifier `baton agent tpm-id` prints)',
    );
  }
  return id;
}

export interface EnrollTpmParams {
  /** Checked by parseEkId. */
  ekId: string;
  role: NodeRole;
  audit: AuditContext;
}

export interface TpmEnrollment {
  ekId: string;
  nodeId: string;
  role: NodeRole;
  /** The TPM's node was revoked and is active again (its old certificates stay revoked). */
  reinstated: boolean;
}

/**
 * `baton node enroll --tpm-ek-id`: admits the EK with `role`, in one transaction under the node's
 * row lock. When its node `tpm-…` was revoked, this is the end of the ban: the node is active again
 * with the enrolled role (`baton node revoke` banned the EK until now, CONTRACT). An active node
 * keeps its role: enrolling its EK with another one is ERR_CONFLICT (revoke it first), since its
 * current certificates name the role it has.
 */
export async function enrollTpm(deps: TpmAdminDeps, p: EnrollTpmParams): Promise<TpmEnrollment> {
  const nodeId = tpmNodeId(p.ekId);
  return deps.storage.transaction(async (tx) => {
    const now = deps.clock.now();
    const node = await tx.nodes.lockById(nodeId);
    if (node?.status === 'active' && node.role !== p.role) {
      throw new BatonError(
        'ERR_CONFLICT',
        `node ${nodeId} is active with role ${node.role}: revoke it first to enroll its TPM with another role`,
      );
    }
    await tx.tpm.enroll({ ekId: p.ekId, role: p.role, enrolledBy: p.audit.actor, enrolledAt: now });
    const reinstated = node?.status === 'revoked' ? await tx.nodes.reinstate(nodeId, p.role) : false;
    await tx.audit.append(
      auditEvent(p.audit, now, 'tpm.enrolled', nodeSpiffeId(deps.trustDomain, nodeId), 'success', {
        ek_id: p.ekId,
        role: p.role,
        reinstated,
      }),
    );
    return { ekId: p.ekId, nodeId, role: p.role, reinstated };
  });
}

export interface AddManufacturerCasParams {
  /** Read and checked by pki/tpm readManufacturerCas: CA certificates, no key. */
  cas: ManufacturerCaCertificate[];
  role: NodeRole;
  audit: AuditContext;
}

/**
 * `baton tpm ca add`: every certificate of the file becomes a trust anchor for EK certificates, in
 * one transaction (all or none); ERR_CONFLICT naming the first one already added.
 */
export async function addManufacturerCas(
  deps: TpmAdminDeps,
  p: AddManufacturerCasParams,
): Promise<TpmManufacturerCaRecord[]> {
  return deps.storage.transaction(async (tx) => {
    const now = deps.clock.now();
    const existing = new Set((await tx.tpm.listManufacturerCas()).map((c) => c.fingerprint));
    const added: TpmManufacturerCaRecord[] = [];
    for (const [i, c] of p.cas.entries()) {
      if (existing.has(c.fingerprint)) {
        throw new BatonError(
          'ERR_CONFLICT',
          `certificate ${i + 1} (${c.subject}) is already a manufacturer CA`,
        );
      }
      const record: TpmManufacturerCaRecord = {
        fingerprint: c.fingerprint,
        certificateDer: c.der,
        subject: c.subject,
        notBefore: c.notBefore,
        notAfter: c.notAfter,
        role: p.role,
        createdBy: p.audit.actor,
        createdAt: now,
      };
      await tx.tpm.addManufacturerCa(record);
      await tx.audit.append(
        auditEvent(p.audit, now, 'tpm.ca_added', `tpm-ca/${c.fingerprint}`, 'success', {
          subject: c.subject,
          role: p.role,
          not_after: c.notAfter.toISOString(),
        }),
      );
      added.push(record);
    }
    return added;
  });
}
