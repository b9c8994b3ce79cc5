import { createPublicKey } from 'node:crypto';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../../common/src/atomic-file';
import { type AdminRole, issueAdminCertificate, validateAdminName } from './domain/admin-identity';
import type { AuditContext } from './domain/audit';
import type { Clock } from './domain/clock';
import type { IssuedLeaf } from './domain/issue';
import type { Keyring } from './domain/keyring';
import type { Installation, Storage } from './domain/ports';
import { describePublicKey, generateP256, spkiOf } from './pki/keys';

export { ADMIN_ROLES, type AdminRole, validateAdminName } from './domain/admin-identity';

/**
 * Writes an admin credential to `dir`: cert.pem (leaf + intermediate), key.pem (0600) and
 * bundle.pem (the roots). The key is generated here, on the admin's side, and never stored by the CA.
 * `name` comes from the command line (`--name`) or is fixed; it is checked here (ERR_BAD_REQUEST).
 */
export async function writeAdminCredentials(
  deps: { clock: Clock; keyring: Keyring; installation: Installation; storage: Storage },
  p: { name: string; role: AdminRole; ttlMs?: number; dir: string; audit: AuditContext; event?: string },
): Promise<IssuedLeaf> {
  const name = validateAdminName(p.name);
  const { privateKey } = generateP256();
  const key = describePublicKey(spkiOf(createPublicKey(privateKey)));
  const issued = await issueAdminCertificate(deps, {
    name,
    role: p.role,
    ttlMs: p.ttlMs,
    key,
    audit: p.audit,
    event: p.event,
  });
  writeFileAtomic(
    join(p.dir, 'key.pem'),
    privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    0o600,
  );
  writeFileAtomic(join(p.dir, 'cert.pem'), issued.chainPem, 0o644);
  writeFileAtomic(join(p.dir, 'bundle.pem'), deps.keyring.bundlePem, 0o644);
  return issued;
}

/** The actor of commands run with direct database and KEK access (no admin certificate). */
export const localActor = (): AuditContext => {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): keep "unknown"
  }
  return { actor: `cli:${user}`, source: 'local' };
};
