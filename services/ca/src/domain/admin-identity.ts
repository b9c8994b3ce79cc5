import { MAX_TTL, MIN_TTL_MS } from '../ground/ttl';
import type { PublicKeyInfo } from '../pki/keys';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import { BatonError } from '../ground/errors';
import { type IssuedLeaf, issueLeaf } from './issue';
import type { Keyring } from './keyring';
import type { Installation, Storage } from './ports';
import { adminSpiffeId } from './trust-domain';

export type AdminRole = 'admin' | 'operator' | 'auditor';
export const ADMIN_ROLES: readonly AdminRole[] = ['admin', 'operator', 'auditor'];

declare const checked: unique symbol;
/** An admin name that validateAdminName accepted (a type only: still a string). */
export type AdminName = string & { readonly [checked]: true };

export function validateAdminName(name: string): AdminName {
  if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      'invalid admin name: lowercase letters, digits, ".", "-", "_" (at most 63)',
    );
  }
  return name as AdminName;
}

export function validateAdminRole(role: string): AdminRole {
  if (!ADMIN_ROLES.includes(role as AdminRole))
    throw new BatonError('ERR_BAD_REQUEST', `one of ${ADMIN_ROLES.join(', ')}`);
  return role as AdminRole;
}

/** An admin certificate to issue: the name checked by validateAdminName, the role one of ADMIN_ROLES. */
export interface IssueAdminParams {
  name: AdminName;
  role: AdminRole;
  /** null or absent: the installation's admin lifetime. */
  ttlMs?: number | null;
  key: PublicKeyInfo;
  audit: AuditContext;
  event?: string;
}

/**
 * An admin certificate: `spiffe://<td>/admin/<name>`, OU = role (CONTRACT "Certificate profile"),
 * short-lived (8h default), recorded with its audit row in one transaction.
 */
export async function issueAdminCertificate(
  deps: { clock: Clock; storage: Storage; keyring: Keyring; installation: Installation },
  p: IssueAdminParams,
): Promise<IssuedLeaf> {
  const { name, role } = p;
  const ttlMs = p.ttlMs ?? deps.installation.adminTtlMs;
  if (ttlMs < MIN_TTL_MS || ttlMs > MAX_TTL.admin)
    throw new BatonError('ERR_BAD_REQUEST', 'an admin certificate lifetime must be from 1m to 7d');
  const td = deps.installation.trustDomain;
  return deps.storage.transaction(async (tx) => {
    const issued = await issueLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing, certificates: tx.certificates },
      {
        kind: 'admin',
        spiffeId: adminSpiffeId(td, name),
        subject: { O: td, OU: role, CN: name },
        key: p.key,
        ttlMs,
      },
    );
    await tx.audit.append(
      auditEvent(p.audit, deps.clock.now(), p.event ?? 'admin.issued', issued.record.spiffeId, 'success', {
        role,
        serial: issued.record.serial,
        expires_at: issued.record.notAfter.toISOString(),
      }),
    );
    return issued;
  });
}
