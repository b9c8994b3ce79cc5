import { createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { writeFileAtomic } from '../../../clients/rotation/src/atomic-file';
import type { Clock } from './domain/clock';
import { BatonError } from './domain/errors';
import { issueLeaf, type IssuedLeaf } from './domain/issue';
import type { Keyring } from './domain/keyring';
import type { CertificateRepository, Installation } from './domain/ports';
import { adminSpiffeId } from './domain/trust-domain';
import { describePublicKey, generateP256, spkiOf } from './pki/keys';

export type AdminRole = 'admin' | 'operator' | 'auditor';
export const ADMIN_ROLES: readonly AdminRole[] = ['admin', 'operator', 'auditor'];

export function validateAdminName(name: string): string {
  if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(name)) {
    throw new BatonError(
      'ERR_CONFIG_INVALID',
      `invalid admin name "${name}": lowercase letters, digits, ".", "-", "_"`,
    );
  }
  return name;
}

/**
 * Writes an admin credential to `dir`: cert.pem (leaf + intermediate), key.pem (0600) and
 * bundle.pem (the roots). The key is generated here, on the admin's side, and never stored by the CA.
 */
export async function writeAdminCredentials(
  deps: { clock: Clock; keyring: Keyring; installation: Installation; certificates: CertificateRepository },
  p: { name: string; role: AdminRole; ttlMs?: number; dir: string },
): Promise<IssuedLeaf> {
  const { privateKey } = generateP256();
  const key = describePublicKey(spkiOf(createPublicKey(privateKey)));
  const td = deps.installation.trustDomain;
  const issued = await issueLeaf(
    { clock: deps.clock, issuer: deps.keyring.signing, certificates: deps.certificates },
    {
      kind: 'admin',
      spiffeId: adminSpiffeId(td, validateAdminName(p.name)),
      subject: { O: td, OU: p.role, CN: p.name },
      key,
      ttlMs: p.ttlMs ?? deps.installation.adminTtlMs,
    },
  );
  writeFileAtomic(
    join(p.dir, 'key.pem'),
    privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    0o600,
  );
  writeFileAtomic(join(p.dir, 'cert.pem'), issued.chainPem, 0o644);
  writeFileAtomic(join(p.dir, 'bundle.pem'), deps.keyring.bundlePem, 0o644);
  return issued;
}
