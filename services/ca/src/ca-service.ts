import type { Knex } from 'knex';
import { localActor } from './admin-credentials';
import type { InitConfig, StorageConfig } from './config';
import { auditEvent } from './domain/audit';
import type { Kek } from './pki/kek';
import type { KeyCustody } from './domain/key-custody';
import { createIntermediateCa, createRootCa } from './domain/ca-hierarchy';
import type { Clock } from './domain/clock';
import { BatonError } from './ground/errors';
import { createJwtKey, readKeyState } from './domain/jwt-keys';
import { type Keyring, loadKeyring } from './domain/keyring';
import { publicationUrlOf } from './domain/urls';
import { pendingUpstreamRefusal } from './domain/upstream-ca';
import type { Installation, Storage } from './domain/ports';
import { resolveCustody } from './key-custody-source';
import { migrateLatest, openDatabase } from './storage/knex/database';
import { knexStorage } from './storage/knex/knex-storage';

export interface OpenCa {
  knex: Knex;
  storage: Storage;
  installation: Installation;
  /** Replaced when the CA set changes (rotation); read it through this object, never cache it. */
  keyring: Keyring;
  /** Where the CA and JWT keys are kept: the KEK, or the PKCS#11 token of --kms. */
  custody: KeyCustody;
  /** The KEK, when the keys are KEK-wrapped (none with --kms). */
  kek?: Kek;
}

/** The installation's settings as `ca init` takes them (an upstream CA keeps them until its import). */
export const installationSettings = (cfg: InitConfig): Omit<Installation, 'createdAt'> => ({
  trustDomain: cfg.trustDomain,
  publicUrl: cfg.publicUrl,
  ...(cfg.publicHttpUrl ? { publicHttpUrl: cfg.publicHttpUrl } : {}),
  nodeTtlMs: cfg.nodeTtlMs,
  workloadTtlMs: cfg.workloadTtlMs,
  adminTtlMs: cfg.adminTtlMs,
});

/** Opens the database and runs pending migrations. */
export async function openStorage(cfg: StorageConfig): Promise<{ knex: Knex; storage: Storage }> {
  const knex = openDatabase(cfg);
  try {
    await migrateLatest(knex);
  } catch (e) {
    await knex.destroy();
    const code = (e as { code?: string }).code;
    throw new BatonError(
      'ERR_DATABASE_UNAVAILABLE',
      `cannot open the database: ${(e as Error).message}${code ? ` (${code})` : ''}`,
    );
  }
  return { knex, storage: knexStorage(knex) };
}

/** Opens an initialized CA: database, installation, and CA keys unwrapped with the KEK. */
export async function openCa(
  cfg: StorageConfig,
  opts: { publicUrl?: string; publicHttpUrl?: string } = {},
): Promise<OpenCa> {
  const { knex, storage } = await openStorage(cfg);
  try {
    const installation = await storage.cas.getInstallation();
    if (!installation)
      throw (
        (await pendingUpstreamRefusal(storage)) ??
        new BatonError(
          'ERR_NOT_INITIALIZED',
          'the CA is not initialized: run `baton ca init --trust-domain TD` first',
        )
      );
    const { custody, kek } = resolveCustody(cfg, { create: false });
    const { cas, jwtKeys, cross } = await readKeyState(storage);
    const keyring = loadKeyring(
      cas,
      custody,
      opts.publicUrl ?? installation.publicUrl,
      jwtKeys,
      publicationUrlOf(installation, opts),
      cross,
    );
    return { knex, storage, installation, keyring, custody, ...(kek ? { kek } : {}) };
  } catch (e) {
    await knex.destroy();
    throw e;
  }
}

/** `baton ca init`: creates the root and signing CA, refusing if the CA exists already. */
export async function initCa(cfg: InitConfig, clock: Clock): Promise<OpenCa> {
  const { knex, storage } = await openStorage(cfg);
  try {
    if (await storage.cas.getInstallation())
      throw new BatonError('ERR_ALREADY_INITIALIZED', 'the CA is already initialized');
    const pending = await pendingUpstreamRefusal(storage);
    if (pending) throw pending;
    const { custody, kek } = resolveCustody(cfg, { create: true });
    const now = clock.now();
    const installation: Installation = { ...installationSettings(cfg), createdAt: now };
    const root = createRootCa({ trustDomain: cfg.trustDomain, now, kek: custody });
    const intermediate = createIntermediateCa({
      trustDomain: cfg.trustDomain,
      now,
      kek: custody,
      root,
      // The CRL that would list this intermediate is published at the publication URL.
      publicUrl: publicationUrlOf(installation),
    });
    // The signing intermediate's JWT-SVID signing key, made with it (domain/jwt-keys.ts).
    const jwtKey = createJwtKey({ kek: custody, caId: intermediate.record.id, now });
    await storage.transaction(async (tx) => {
      await tx.cas.initialize(installation, [root.record, intermediate.record]);
      await tx.jwtKeys.insert(jwtKey.record);
      await tx.audit.append(
        auditEvent(localActor(), now, 'ca.initialized', root.record.id, 'success', {
          trust_domain: cfg.trustDomain,
          root: root.record.id,
          intermediate: intermediate.record.id,
          jwt_kid: jwtKey.record.kid,
        }),
      );
    });
    const keyring = loadKeyring(
      [root.record, intermediate.record],
      custody,
      cfg.publicUrl,
      [jwtKey.record],
      publicationUrlOf(installation),
    );
    return { knex, storage, installation, keyring, custody, ...(kek ? { kek } : {}) };
  } catch (e) {
    await knex.destroy();
    throw e;
  }
}
