import type { X509Certificate } from 'node:crypto';
import { canonicalSerial, crlSignatureProblem, type ParsedCrl, parseCrl } from './crl';

/**
 * What a peer knows about revocation, without I/O or timers (the RevocationGuard feeds it): the
 * CAs it trusts (the bundle's roots, and intermediates that chain to them), the newest verified CRL
 * of each, and the serials the revocation feed has named. `check` answers for one peer chain at a
 * given time: revoked, unknown (stale), or good. RFC 5280 §6.3 checks every certificate of the path
 * but the trust anchor, so a revoked intermediate refuses every leaf below it.
 */

export interface HeldCrl {
  /** The CA that signed it. */
  ca: X509Certificate;
  crl: ParsedCrl;
  /** Where it came from: a file path or a URL. */
  source: string;
}

export interface LoadResult {
  /** CRLs that are now held (newer than, or the same as, what was held). */
  accepted: number;
  /** Why the others were refused: one line each. */
  problems: string[];
  /** Serials that no held CRL or feed event listed before. */
  newlyRevoked: string[];
}

export interface Revocation {
  serial: string;
  /** An RFC 5280 §5.3.1 reason code, or the feed's reason name. */
  reason: number | string;
  source: 'crl' | 'feed';
}

export interface CheckResult {
  revoked?: Revocation & { subject: string };
  /** Why revocation status is unknown for this chain (no CRL for its issuer, a CRL past nextUpdate). */
  stale?: string;
}

const isSelfSigned = (c: X509Certificate): boolean => c.checkIssued(c) && safeVerify(c, c);

function safeVerify(subject: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

export class RevocationState {
  #roots: X509Certificate[] = [];
  /** Trusted CAs by SHA-256 fingerprint: roots, and intermediates whose signature chains to one. */
  #cas = new Map<string, X509Certificate>();
  #crls = new Map<string, HeldCrl>();
  /** The last CRLs read from each source, kept so that a CA learned later can pick up its CRL. */
  #lastLoaded = new Map<string, Buffer[]>();
  #feed = new Map<string, string>();

  /** Replaces the trust anchors (the identity's bundle after a rotation); intermediates are re-checked. */
  setRoots(roots: X509Certificate[]): void {
    this.#roots = roots.filter((r) => r.ca);
    const intermediates = [...this.#cas.values()].filter((c) => !this.#roots.some((r) => same(r, c)));
    this.#cas = new Map(this.#roots.map((r) => [r.fingerprint256, r]));
    for (const c of intermediates) this.#addIntermediate(c);
    for (const [fp] of this.#crls) if (!this.#cas.has(fp)) this.#crls.delete(fp);
    this.#reloadAll();
  }

  /**
   * Learns the CA certificates of a verified chain (leaf first): each one that chains to a root
   * becomes a CA whose CRLs are accepted. Returns true when a CA was new.
   */
  learnChain(chain: X509Certificate[]): boolean {
    let learned = false;
    // Top down, so that an intermediate signed by another intermediate finds its issuer learned.
    for (const c of chain.slice(1).reverse()) {
      if (c.ca && !this.#cas.has(c.fingerprint256) && this.#addIntermediate(c)) learned = true;
    }
    if (learned) this.#reloadAll();
    return learned;
  }

  #addIntermediate(c: X509Certificate): boolean {
    const issuer = this.issuerOf(c);
    if (!issuer || !c.ca || !safeVerify(c, issuer)) return false;
    this.#cas.set(c.fingerprint256, c);
    return true;
  }

  /** The trusted CA that issued `cert` (names and AKI/SKI, RFC 5280 §4.2.1.1), if any. */
  issuerOf(cert: X509Certificate): X509Certificate | undefined {
    for (const ca of this.#cas.values()) if (!same(ca, cert) && cert.checkIssued(ca)) return ca;
    return undefined;
  }

  /**
   * Takes the CRLs of one source (all of them: a source that stops listing a CA keeps the CRL
   * already held for it). A CRL replaces the held one of its CA only when its CRL number is not
   * lower (§5.2.3: numbers only grow), so an older copy, from a lagging file or a replayed answer,
   * never brings a revoked serial back.
   */
  loadCrls(source: string, ders: Buffer[]): LoadResult {
    this.#lastLoaded.set(source, ders);
    return this.#load(source, ders);
  }

  #reloadAll(): void {
    for (const [source, ders] of this.#lastLoaded) this.#load(source, ders);
  }

  #load(source: string, ders: Buffer[]): LoadResult {
    const result: LoadResult = { accepted: 0, problems: [], newlyRevoked: [] };
    for (const der of ders) {
      let crl: ParsedCrl;
      try {
        crl = parseCrl(der);
      } catch (e) {
        result.problems.push((e as Error).message);
        continue;
      }
      const ca = [...this.#cas.values()].find((c) => crlSignatureProblem(crl, c) === undefined);
      if (!ca) {
        result.problems.push('a CRL is not signed by a CA of the trust bundle or a known intermediate');
        continue;
      }
      const held = this.#crls.get(ca.fingerprint256);
      if (held && isOlder(crl, held.crl)) continue;
      result.accepted++;
      for (const serial of crl.revoked.keys()) {
        if (!held?.crl.revoked.has(serial) && !this.#feed.has(serial)) result.newlyRevoked.push(serial);
      }
      this.#crls.set(ca.fingerprint256, { ca, crl, source });
    }
    return result;
  }

  /** Serials named by the revocation feed; returns those not known to be revoked before. */
  addFeedSerials(serials: Iterable<string>, reason: string): string[] {
    const fresh: string[] = [];
    for (const raw of serials) {
      const s = canonicalSerial(raw);
      if (this.#feed.has(s)) continue;
      this.#feed.set(s, reason);
      if (![...this.#crls.values()].some((h) => h.crl.revoked.has(s))) fresh.push(s);
    }
    return fresh;
  }

  /**
   * Revocation status of a verified chain (leaf first, then its intermediates) at `now`: a listed
   * serial wins over missing data, so a revoked peer is refused even when the policy fails open.
   */
  check(chain: X509Certificate[], now: Date): CheckResult {
    this.learnChain(chain);
    let stale: string | undefined;
    for (const cert of chain) {
      if (this.#roots.some((r) => same(r, cert)) || (cert.ca && isSelfSigned(cert))) break;
      const serial = canonicalSerial(cert.serialNumber);
      const fromFeed = this.#feed.get(serial);
      if (fromFeed !== undefined)
        return { revoked: { serial, reason: fromFeed, source: 'feed', subject: cert.subject } };
      const issuer = this.issuerOf(cert);
      const held = issuer && this.#crls.get(issuer.fingerprint256);
      if (!held) {
        stale ??= `no CRL of the issuer of ${serial} (${oneLine(cert.issuer)})`;
        continue;
      }
      const reason = held.crl.revoked.get(serial);
      if (reason !== undefined) return { revoked: { serial, reason, source: 'crl', subject: cert.subject } };
      const expired = expiredAt(held.crl, now);
      if (expired) stale ??= `the CRL of ${oneLine(held.ca.subject)} ${expired}`;
    }
    return stale ? { stale } : {};
  }

  /**
   * Why the data as a whole is stale at `now`, or undefined: no CRL at all, or the CRL of a CA that
   * is still valid is past its nextUpdate (§5.1.2.5: a newer one should have been published).
   */
  staleness(now: Date): string | undefined {
    if (this.#crls.size === 0) return 'no CRL has been loaded';
    for (const h of this.#crls.values()) {
      if (new Date(h.ca.validTo) < now) continue;
      const expired = expiredAt(h.crl, now);
      if (expired) return `the CRL of ${oneLine(h.ca.subject)} ${expired}`;
    }
    return undefined;
  }

  get crls(): HeldCrl[] {
    return [...this.#crls.values()];
  }

  get feedSerials(): number {
    return this.#feed.size;
  }
}

const same = (a: X509Certificate, b: X509Certificate): boolean => a.fingerprint256 === b.fingerprint256;
const oneLine = (name: string): string => name.replace(/\n/g, ', ');

function expiredAt(crl: ParsedCrl, now: Date): string | undefined {
  if (!crl.nextUpdate) return 'has no nextUpdate';
  return crl.nextUpdate < now ? `is past its nextUpdate (${crl.nextUpdate.toISOString()})` : undefined;
}

/** Whether `a` is older than `b`: by CRL number when both have one (§5.2.3), else by thisUpdate. */
function isOlder(a: ParsedCrl, b: ParsedCrl): boolean {
  if (a.crlNumber !== undefined && b.crlNumber !== undefined) return a.crlNumber < b.crlNumber;
  return a.thisUpdate < b.thisUpdate;
}
