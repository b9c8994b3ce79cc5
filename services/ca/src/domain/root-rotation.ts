import { readCertificate } from '../pki/certificate-reader';
import { rootPin } from '../pki/pin';
import { BatonError } from '../ground/errors';
import { type AuditContext, auditEvent } from './audit';
import { createIntermediateCa, createRootCa, crossCertifyIntermediate } from './ca-hierarchy';
import type { Clock } from './clock';
import { createJwtKey } from './jwt-keys';
import type { KeyCustodySource } from './key-custody';
import type { Keyring } from './keyring';
import { inBundle } from './roots-in-bundle';
import { assertRotatable } from './upstream-ca';
import type {
  CaRecord,
  CertificatesUnder,
  CrossCertificateRecord,
  Installation,
  Repositories,
  Storage,
} from './ports';

/**
 * Root rotation, the way Docker SwarmKit rotates its root (`docker swarm ca --rotate`), with the
 * cross-certificate on the signing CA rather than on the root (CONTRACT "CA custody and rotation"):
 *
 *   start   a new root R2 and a signing CA S2 certified by R2 and, with a cross-certificate, by the
 *           old root R1. The bundle holds R1 and R2; leaves are served with S2 by R1 and S2 by R2,
 *           so a peer that still trusts only R1 verifies them, and one that took the new bundle
 *           verifies either way. Tokens made from then on pin R2; older ones (R1) still work.
 *   finish  R1 leaves the bundle, once no node holds a live certificate that chains only to R1
 *           (or with force). S2 is then served alone; tokens pinning R1 are refused.
 *
 * Each step is one transaction under the installation row's lock (lockCaSet), so replicas on one
 * PostgreSQL see the whole step or none of it, a step run twice is refused with a code that says
 * why, and a process killed mid-way has committed all of it or nothing (keys are made before the
 * transaction and simply dropped). The new root is made as the first one was (pathLen 1, ten
 * years), so the next rotation is the same one.
 */

export interface RootRotationDeps {
  clock: Clock;
  storage: Storage;
  /** The KEK, or the custody that keeps the keys instead (domain/key-custody.ts, `--kms`). */
  kek: KeyCustodySource;
  /** The loaded keyring: the old root's key signs the cross-certificate. */
  keyring: Keyring;
  installation: Installation;
  /** Where the new CAs' CRL Distribution Points point (urls.ts publicationUrlOf). */
  publicationUrl: string;
}

export interface RootRotationStarted {
  root: CaRecord;
  signing: CaRecord;
  cross: CrossCertificateRecord;
  previousRoot: string;
  pin: string;
}

export async function startRootRotation(
  deps: RootRotationDeps,
  audit: AuditContext,
): Promise<RootRotationStarted> {
  const now = deps.clock.now();
  const { trustDomain } = deps.installation;
  // Under an upstream CA the root is not Baton's to replace.
  assertRotatable(deps.keyring);
  if (deps.keyring.roots.length !== 1) throw rotationInProgress();
  const oldRoot = deps.keyring.roots[0]!;
  const root = createRootCa({ trustDomain, now, kek: deps.kek });
  const signing = createIntermediateCa({
    trustDomain,
    now,
    kek: deps.kek,
    root,
    publicUrl: deps.publicationUrl,
  });
  const cross = crossCertifyIntermediate({
    trustDomain,
    now,
    intermediate: signing.record,
    issuer: { record: oldRoot.record, signer: oldRoot.signer },
    publicUrl: deps.publicationUrl,
  });
  const jwtKey = createJwtKey({ kek: deps.kek, caId: signing.record.id, now });
  await deps.storage.transaction(async (tx) => {
    await tx.cas.lockCaSet();
    const cas = await tx.cas.listCas();
    const roots = inBundle(cas);
    if (roots.length !== 1) throw rotationInProgress();
    // The keyring is older than the database (another replica rotated and finished meanwhile).
    if (roots[0]!.id !== oldRoot.record.id)
      throw new BatonError('ERR_CONFLICT', 'the CA set changed meanwhile: try again');
    const previousSigning = cas.find((c) => c.kind === 'intermediate' && c.active)?.id ?? null;
    await tx.cas.addRoot(root.record);
    await tx.cas.addActiveIntermediate(signing.record);
    await tx.cas.addCrossCertificate(cross);
    await tx.jwtKeys.insert(jwtKey.record);
    await tx.jwtKeys.retireOthers(jwtKey.record.kid, now);
    await tx.audit.append(
      auditEvent(audit, now, 'ca.root_rotation_started', root.record.id, 'success', {
        previous_root: oldRoot.record.id,
        signing_ca: signing.record.id,
        previous_signing_ca: previousSigning,
        jwt_kid: jwtKey.record.kid,
      }),
    );
  });
  return {
    root: root.record,
    signing: signing.record,
    cross,
    previousRoot: oldRoot.record.id,
    pin: rootPin(readCertificate(root.record.certificateDer).spkiRaw),
  };
}

export interface RootRotationFinished {
  retired: string[];
  root: string;
  oldRootOnly: CertificatesUnder;
  forced: boolean;
}

export async function finishRootRotation(
  deps: Pick<RootRotationDeps, 'clock' | 'storage'>,
  opts: { force: boolean },
  audit: AuditContext,
): Promise<RootRotationFinished> {
  const now = deps.clock.now();
  return deps.storage.transaction(async (tx) => {
    await tx.cas.lockCaSet();
    const cas = await tx.cas.listCas();
    const roots = inBundle(cas);
    if (roots.length < 2)
      throw new BatonError('ERR_NO_ROTATION', 'no root rotation is in progress (`baton ca status`)');
    const [current, ...old] = roots;
    const oldRootOnly = await countOldRootOnly(tx, cas, current!.id, now);
    if (oldRootOnly.nodes > 0 && !opts.force)
      throw new BatonError(
        'ERR_ROTATION_PENDING',
        `${oldRootOnly.nodes} node(s) still hold a certificate only under the old root: wait for them to renew, or revoke them, or use --force`,
      );
    const retired = old.map((r) => r.id);
    await tx.cas.retireRoots(retired);
    await tx.audit.append(
      auditEvent(audit, now, 'ca.root_rotation_finished', current!.id, 'success', {
        retired,
        forced: opts.force,
        old_root_only_nodes: oldRootOnly.nodes,
        old_root_only_workload_certificates: oldRootOnly.workloadCertificates,
      }),
    );
    return { retired, root: current!.id, oldRootOnly, forced: opts.force };
  });
}

/**
 * The CAs whose certificates do not lead to `rootId`: intermediates under another root without a
 * cross-certificate by it (and those other roots).
 */
export function casNotUnder(
  cas: readonly CaRecord[],
  cross: readonly CrossCertificateRecord[],
  rootId: string,
): string[] {
  const byId = new Map(cas.map((c) => [c.id, c]));
  // Up through parents and cross-certificates (an upstream CA's outside intermediates included);
  // `depth` bounds a cycle no honest database has (RFC 5280 §6.1 paths are short).
  const leadsTo = (id: string | null, depth: number): boolean => {
    if (id === null || depth > 8) return false;
    if (id === rootId) return true;
    return (
      leadsTo(byId.get(id)?.parentId ?? null, depth + 1) ||
      cross.some((x) => x.caId === id && leadsTo(x.issuerId, depth + 1))
    );
  };
  return cas.filter((c) => !leadsTo(c.id, 0)).map((c) => c.id);
}

async function countOldRootOnly(
  repos: Pick<Repositories, 'cas'>,
  cas: readonly CaRecord[],
  rootId: string,
  now: Date,
): Promise<CertificatesUnder> {
  const cross = await repos.cas.listCrossCertificates();
  return repos.cas.countCertificatesUnder(casNotUnder(cas, cross, rootId), now);
}

export interface CaStatus {
  phase: 'stable' | 'rotating';
  roots: Array<{ id: string; pin: string; current: boolean; not_before: string; not_after: string }>;
  signing_ca: { id: string; parent: string | null; cross_signed_by: string[]; not_after: string };
  cas: Array<{
    id: string;
    kind: CaRecord['kind'];
    parent: string | null;
    cross_signed_by: string[];
    in_bundle?: boolean;
    active?: boolean;
    not_after: string;
  }>;
  /** Live certificates that chain only to a root other than the current one. */
  old_root_only: { nodes: number; workload_certificates: number };
}

/** `baton ca status`: the phase, the CAs, and what still chains only to the old root. */
export async function caStatus(deps: Pick<RootRotationDeps, 'clock' | 'storage'>): Promise<CaStatus> {
  const now = deps.clock.now();
  const cas = await deps.storage.cas.listCas();
  const cross = await deps.storage.cas.listCrossCertificates();
  const roots = inBundle(cas);
  if (roots.length === 0) throw new BatonError('ERR_NOT_INITIALIZED', 'the CA is not initialized');
  const current = roots[0]!;
  const signing = cas.find((c) => c.kind === 'intermediate' && c.active)!;
  const crossSigners = (id: string) => cross.filter((x) => x.caId === id).map((x) => x.issuerId);
  const counts = await deps.storage.cas.countCertificatesUnder(casNotUnder(cas, cross, current.id), now);
  return {
    phase: roots.length > 1 ? 'rotating' : 'stable',
    roots: roots.map((r) => ({
      id: r.id,
      pin: rootPin(readCertificate(r.certificateDer).spkiRaw),
      current: r.id === current.id,
      not_before: r.notBefore.toISOString(),
      not_after: r.notAfter.toISOString(),
    })),
    signing_ca: {
      id: signing.id,
      parent: signing.parentId,
      cross_signed_by: crossSigners(signing.id),
      not_after: signing.notAfter.toISOString(),
    },
    cas: cas.map((c) => ({
      id: c.id,
      kind: c.kind,
      parent: c.parentId,
      cross_signed_by: crossSigners(c.id),
      ...(c.kind === 'root' ? { in_bundle: c.active } : { active: c.active }),
      not_after: c.notAfter.toISOString(),
    })),
    old_root_only: { nodes: counts.nodes, workload_certificates: counts.workloadCertificates },
  };
}

const rotationInProgress = () =>
  new BatonError(
    'ERR_ROTATION_IN_PROGRESS',
    'a root rotation is already in progress: finish it first (`baton ca rotate --root --finish`)',
  );
