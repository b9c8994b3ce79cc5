import { kekCustody } from './domain/key-custody';
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../../../common/src/atomic-file';
import { localActor } from './admin-credentials';
import { installationSettings, type OpenCa, openStorage } from './ca-service';
import type { ImportConfig, InitConfig } from './config';
import { auditEvent } from './domain/audit';
import type { Clock } from './domain/clock';
import { createJwtKey } from './domain/jwt-keys';
import { loadKeyring } from './domain/keyring';
import type { Installation, PendingUpstream } from './domain/ports';
import { pendingCsrPem, prepareUpstreamCa, unwrapPendingKey, upstreamCaRecords } from './domain/upstream-ca';
import { publicationUrlOf } from './domain/urls';
import { BatonError } from './ground/errors';
import { resolveKek } from './kek-source';
import { checkUpstreamChain } from './pki/upstream-chain';

/**
 * Upstream CA, the composition side of domain/upstream-ca.ts: `baton ca init --upstream-csr` and
 * `baton ca import` (docs/operations.md "Upstream CA").
 */

export interface UpstreamRequest {
  pending: PendingUpstream;
  csrPem: string;
  /** True when a pending request existed and its CSR was written again (same key, same settings). */
  again: boolean;
}

/**
 * `ca init --upstream-csr FILE`: makes the signing CA's key (KEK-wrapped) and CSR, records them as
 * pending, writes the CSR to FILE. Run again while pending for the same trust domain, it writes the
 * same CSR again (same key; the first run's settings are kept), so a lost file costs nothing and a
 * certificate already requested stays good; for another trust domain it refuses.
 */
export async function requestUpstreamCa(
  cfg: InitConfig & { upstreamCsr: string },
  clock: Clock,
): Promise<UpstreamRequest> {
  const { knex, storage } = await openStorage(cfg);
  try {
    if (await storage.cas.getInstallation())
      throw new BatonError('ERR_ALREADY_INITIALIZED', 'the CA is already initialized');
    const existing = await storage.upstream.getPending();
    if (existing && existing.installation.trustDomain !== cfg.trustDomain)
      throw new BatonError(
        'ERR_UPSTREAM_PENDING',
        `an upstream CA for ${existing.installation.trustDomain} is already pending: import its certificate (baton ca import), or start over with a fresh database`,
      );
    let pending = existing;
    if (!pending) {
      const kek = resolveKek(cfg, { create: true });
      const now = clock.now();
      const made = prepareUpstreamCa({ installation: installationSettings(cfg), kek, now });
      await storage.transaction(async (tx) => {
        await tx.upstream.savePending(made);
        await tx.audit.append(
          auditEvent(localActor(), now, 'ca.upstream_requested', made.caId, 'success', {
            trust_domain: cfg.trustDomain,
          }),
        );
      });
      pending = made;
    }
    const csrPem = pendingCsrPem(pending);
    try {
      writeFileAtomic(cfg.upstreamCsr, csrPem, 0o644);
    } catch (e) {
      throw new BatonError(
        'ERR_CONFIG_INVALID',
        `--upstream-csr: cannot write ${cfg.upstreamCsr} (${(e as NodeJS.ErrnoException).code ?? 'error'}); the request is recorded: run the command again with a writable path`,
      );
    }
    return { pending, csrPem, again: existing !== null };
  } finally {
    await knex.destroy();
  }
}

function readPem(path: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new BatonError(
      'ERR_UPSTREAM_INVALID',
      `${flag}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
}

/**
 * `ca import --cert FILE --chain FILE`: checks the certificate and chain (pki/upstream-chain.ts)
 * and installs, in one transaction, the installation, the outside root and intermediates (without
 * a key), the signing CA with its pending key, its JWT-SVID key and the audit row. Any refusal
 * leaves the pending request as it was, to import again.
 */
export async function importUpstreamCa(cfg: ImportConfig, clock: Clock): Promise<OpenCa> {
  const certPem = readPem(cfg.certFile, '--cert');
  const chainPem = readPem(cfg.chainFile, '--chain');
  const { knex, storage } = await openStorage(cfg);
  try {
    if (await storage.cas.getInstallation())
      throw new BatonError('ERR_ALREADY_INITIALIZED', 'the CA is already initialized');
    const pending = await storage.upstream.getPending();
    if (!pending)
      throw new BatonError(
        'ERR_UPSTREAM_NOT_PENDING',
        'no upstream CA is pending: run `baton ca init --trust-domain TD --upstream-csr FILE` first',
      );
    const kek = resolveKek(cfg, { create: false });
    unwrapPendingKey(pending, kek);
    const now = clock.now();
    const path = checkUpstreamChain({
      certPem,
      chainPem,
      spki: pending.spki,
      trustDomain: pending.installation.trustDomain,
      now,
    });
    const installation: Installation = { ...pending.installation, createdAt: now };
    const records = upstreamCaRecords(pending, path, now);
    const jwtKey = createJwtKey({ kek, caId: pending.caId, now });
    const keyring = loadKeyring(
      records,
      kek,
      installation.publicUrl,
      [jwtKey.record],
      publicationUrlOf(installation),
    );
    await storage.transaction(async (tx) => {
      if (!(await tx.upstream.deletePending(pending.caId)))
        throw new BatonError(
          'ERR_UPSTREAM_NOT_PENDING',
          'the pending upstream CA changed meanwhile: run `baton ca import` again',
        );
      await tx.cas.initialize(installation, records);
      await tx.jwtKeys.insert(jwtKey.record);
      await tx.audit.append(
        auditEvent(localActor(), now, 'ca.initialized', pending.caId, 'success', {
          trust_domain: installation.trustDomain,
          upstream: true,
          root: records[0]!.id,
          outside_intermediates: records.slice(1, -1).map((r) => r.id),
          intermediate: pending.caId,
          jwt_kid: jwtKey.record.kid,
        }),
      );
    });
    // Upstream keys are KEK-wrapped (no --kms here yet: docs/operations.md "Upstream CA").
    return { knex, storage, installation, keyring, custody: kekCustody(kek), kek };
  } catch (e) {
    await knex.destroy();
    throw e;
  }
}
