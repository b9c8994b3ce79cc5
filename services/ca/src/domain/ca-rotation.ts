import { BatonError } from '../ground/errors';
import { type AuditContext, auditEvent } from './audit';
import { createIntermediateCa } from './ca-hierarchy';
import type { Clock } from './clock';
import { createJwtKey } from './jwt-keys';
import type { KeyCustodySource } from './key-custody';
import type { Keyring } from './keyring';
import { assertRotatable } from './upstream-ca';
import type { CaRecord, Installation, JwtKeyRecord, Storage } from './ports';

/**
 * `baton ca rotate`: a new signing intermediate under the same root becomes the active one.
 * Certificates of the old intermediate stay valid (the trust bundle is the root), and its CRL keeps
 * being published until its last certificate has expired (crl-publisher.ts: every unexpired
 * intermediate). The new intermediate gets its JWT-SVID signing key in the same transaction, and
 * every other key is retired: it stays in the JWKS until the last token it signed has expired
 * (domain/jwt-keys.ts). Replicas notice the new CA set and reload their keyring.
 */
export async function rotateSigningCa(
  deps: {
    clock: Clock;
    storage: Storage;
    /** The KEK, or the custody that keeps the keys (--kms). */
    kek: KeyCustodySource;
    keyring: Keyring;
    installation: Installation;
    publicUrl: string;
  },
  audit: AuditContext,
): Promise<CaRecord> {
  assertRotatable(deps.keyring);
  const now = deps.clock.now();
  // During a root rotation the signing CA must stay certified by both roots: not a plain rotation.
  if (deps.keyring.roots.length > 1) throw signingRotationRefused();
  const root = deps.keyring.roots[0]!;
  const created = createIntermediateCa({
    trustDomain: deps.installation.trustDomain,
    now,
    kek: deps.kek,
    root: { record: root.record, signer: root.signer },
    publicUrl: deps.publicUrl,
  });
  const jwtKey = createJwtKey({ kek: deps.kek, caId: created.record.id, now });
  await deps.storage.transaction(async (tx) => {
    // The intermediate this rotation replaces, as the database has it (the keyring passed in may be
    // older than another rotation).
    const cas = await tx.cas.listCas();
    if (cas.filter((c) => c.kind === 'root' && c.active).length > 1) throw signingRotationRefused();
    const previous = cas.find((c) => c.kind === 'intermediate' && c.active)?.id ?? null;
    await tx.cas.addActiveIntermediate(created.record);
    await tx.jwtKeys.insert(jwtKey.record);
    await tx.jwtKeys.retireOthers(jwtKey.record.kid, now);
    await tx.audit.append(
      auditEvent(audit, now, 'ca.rotated', created.record.id, 'success', {
        previous,
        not_after: created.record.notAfter.toISOString(),
        jwt_kid: jwtKey.record.kid,
      }),
    );
  });
  return created.record;
}

const signingRotationRefused = () =>
  new BatonError(
    'ERR_ROTATION_IN_PROGRESS',
    'a root rotation is in progress: finish it (`baton ca rotate --root --finish`) before rotating the signing CA',
  );

/**
 * A fingerprint of the CA set and its JWT keys (a new key, a retirement): when it changes, a
 * replica reloads its keyring.
 */
export const caSetVersion = (
  cas: CaRecord[],
  jwtKeys: readonly Pick<JwtKeyRecord, 'kid' | 'retiredAt'>[] = [],
): string =>
  [
    ...cas.map((c) => `${c.id}:${c.active ? 1 : 0}`),
    ...jwtKeys.map((k) => `jwt:${k.kid}:${k.retiredAt?.getTime() ?? '-'}`),
  ]
    .sort()
    .join(',');
