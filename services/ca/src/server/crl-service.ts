import { type CrlDeps, publishAllCrls, publishAllCrlsIn, publishCrl } from '../domain/crl-publisher';
import { BatonError } from '../ground/errors';
import type { CrlRecord, Repositories } from '../domain/ports';

/**
 * The current CRL of each CA for the HTTP routes: read from the database (so all replicas serve the
 * same CRL), kept in memory for at most `cacheMs`, and built on demand when none exists yet.
 */
export class CrlService {
  readonly #cache = new Map<string, { crl: CrlRecord; fetchedAt: number }>();

  constructor(
    private readonly deps: () => CrlDeps,
    private readonly cacheMs = 1000,
  ) {}

  async current(caId: string): Promise<CrlRecord> {
    const d = this.deps();
    const now = d.clock.now().getTime();
    const hit = this.#cache.get(caId);
    if (hit && now - hit.fetchedAt < this.cacheMs && now >= hit.fetchedAt) return hit.crl;
    let crl = await d.storage.crls.latest(caId);
    if (!crl || crl.nextUpdate.getTime() <= now) {
      const ca = d.keyring.all.find((c) => c.record.id === caId);
      if (!ca) throw new BatonError('ERR_NOT_FOUND', 'no such issuer');
      await publishCrl(d, ca, { force: false });
      crl = await d.storage.crls.latest(caId);
    }
    if (!crl) throw new BatonError('ERR_CA_UNAVAILABLE', 'no CRL could be published');
    this.#cache.set(caId, { crl, fetchedAt: now });
    return crl;
  }

  /** New CRLs for every CA, at once (outside a revocation; tests, operators). */
  async republish(): Promise<CrlRecord[]> {
    const out = await publishAllCrls(this.deps(), { force: true });
    this.#cache.clear();
    return out;
  }

  /** New CRLs for every CA inside a revocation's transaction `tx`; call `forget` once it commits. */
  publishIn(tx: Repositories): Promise<CrlRecord[]> {
    return publishAllCrlsIn(tx, this.deps());
  }

  /** Drops the cached CRLs, so the next request reads the ones a revocation just committed. */
  forget(): void {
    this.#cache.clear();
  }

  /** Periodic: rebuild the CRLs that have used half of their validity. */
  async refreshStale(): Promise<CrlRecord[]> {
    const out = await publishAllCrls(this.deps(), { force: false });
    if (out.length) this.#cache.clear();
    return out;
  }
}
