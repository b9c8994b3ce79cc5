import { buildCrl } from '../pki/crl';
import type { Clock } from './clock';
import type { Keyring, SigningCa } from './keyring';
import type { CrlRecord, Repositories, Storage } from './ports';

export interface CrlDeps {
  clock: Clock;
  storage: Storage;
  keyring: Keyring;
  /** thisUpdate → nextUpdate (default 1h). */
  nextUpdateMs: number;
}

/**
 * Publishes the CRL of one CA (RFC 5280 §5): v2, a CRL number from the shared sequence (only
 * grows, unique across replicas), AKI, thisUpdate/nextUpdate. Revoked certificates stay listed
 * until they expire, then drop off. One builder at a time across replicas (an advisory lock);
 * thisUpdate never goes backwards, even if this replica's clock does.
 * `force: false` skips the build when the latest CRL is still fresh (another replica just built).
 */
export async function publishCrl(
  deps: CrlDeps,
  ca: SigningCa,
  opts: { force: boolean },
): Promise<CrlRecord | null> {
  return deps.storage.transaction((tx) => publishCrlIn(tx, deps, ca, opts));
}

/** `publishCrl` inside the caller's transaction `tx`: the CRL commits with the caller's writes. */
export async function publishCrlIn(
  tx: Repositories,
  deps: Omit<CrlDeps, 'storage'>,
  ca: SigningCa,
  opts: { force: boolean },
): Promise<CrlRecord | null> {
  await tx.crls.lockBuilder();
  const now = deps.clock.now();
  const prev = await tx.crls.latest(ca.record.id);
  if (!opts.force && prev && !isStale(prev, now, deps.nextUpdateMs)) return null;
  const thisUpdate = new Date(Math.max(now.getTime(), prev?.thisUpdate.getTime() ?? 0));
  const nextUpdate = new Date(thisUpdate.getTime() + deps.nextUpdateMs);
  const entries = await tx.revocations.revokedForCa(ca.record.id, now);
  const crlNumber = await tx.crls.nextNumber();
  const der = buildCrl({
    issuer: { name: ca.subjectName, keyId: ca.keyId, signer: ca.template.signer },
    crlNumber,
    thisUpdate,
    nextUpdate,
    entries,
  });
  const record: CrlRecord = {
    caId: ca.record.id,
    crlNumber,
    thisUpdate,
    nextUpdate,
    entries: entries.length,
    der,
  };
  await tx.crls.insert(record);
  return record;
}

/** A CRL is rebuilt once half of its validity has passed, well before nextUpdate. */
export function isStale(crl: CrlRecord, now: Date, nextUpdateMs: number): boolean {
  return now.getTime() >= crl.thisUpdate.getTime() + nextUpdateMs / 2;
}

/**
 * CAs that need a CRL: every root, and every intermediate that has not expired; never an outside CA
 * of an upstream CA (Baton holds no key to sign its CRL: the outside CA publishes its own).
 */
export function crlIssuers(keyring: Keyring, now: Date): SigningCa[] {
  return keyring.all.filter(
    (c) => !c.outside && (c.record.kind === 'root' || c.record.notAfter.getTime() > now.getTime()),
  );
}

/** Runs `publish` for every CA that needs a CRL, one after the other; the CRLs it made. */
async function publishEach(
  deps: Omit<CrlDeps, 'storage'>,
  publish: (ca: SigningCa) => Promise<CrlRecord | null>,
): Promise<CrlRecord[]> {
  const out: CrlRecord[] = [];
  for (const ca of crlIssuers(deps.keyring, deps.clock.now())) {
    const crl = await publish(ca);
    if (crl) out.push(crl);
  }
  return out;
}

/** New CRLs for every CA that needs one (`force`: all of them), each in its own transaction. */
export function publishAllCrls(deps: CrlDeps, opts: { force: boolean }): Promise<CrlRecord[]> {
  return publishEach(deps, (ca) => publishCrl(deps, ca, opts));
}

/**
 * New CRLs for every CA inside the caller's transaction: a revocation commits with the CRLs that
 * list it, so no replica's revocation feed can announce it while the current CRL does not list it
 * yet (a node following the feed fetches the CRL as soon as it hears of a revocation).
 */
export function publishAllCrlsIn(tx: Repositories, deps: Omit<CrlDeps, 'storage'>): Promise<CrlRecord[]> {
  return publishEach(deps, (ca) => publishCrlIn(tx, deps, ca, { force: true }));
}
