import { X509Certificate } from 'node:crypto';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g;

/**
 * What to give OpenSSL as trusted (`ca` in node:tls): the bundle's roots, plus those CA
 * certificates among `candidatesPem` (one's own chain, a server's chain) that one of the roots
 * issued, signature checked. Trust is not widened: each extra certificate is already certified by
 * a trusted root, and OpenSSL still needs a self-signed anchor (no partial chains).
 *
 * Why: after a root rotation (CONTRACT "CA custody and rotation") a signing CA has two certificates
 * with one subject and key, one by the new root and a cross-certificate by the old. OpenSSL takes
 * the first certificate of a presented chain that names the issuer and never tries the other when
 * that path fails, so a peer that trusts only the new root would refuse a chain that lists the
 * cross-certificate first. OpenSSL looks in its trust store first (X509_V_FLAG_TRUSTED_FIRST, the
 * default since 1.1.0), so with the new root's certificate of the CA there, the order no longer
 * matters. Go and GnuTLS build every path and do not need this.
 */
export function trustStorePem(rootsPem: string, candidatesPem: string): string {
  const roots = parsePem(rootsPem);
  if (roots.length === 0) return rootsPem;
  const seen = new Set(roots.map((r) => r.fingerprint256));
  const extra: string[] = [];
  for (const c of parsePem(candidatesPem)) {
    if (!c.ca || seen.has(c.fingerprint256)) continue;
    if (!roots.some((r) => c.checkIssued(r) && c.verify(r.publicKey))) continue;
    seen.add(c.fingerprint256);
    extra.push(c.toString());
  }
  return extra.length === 0
    ? rootsPem
    : `${rootsPem.endsWith('\n') ? rootsPem : `${rootsPem}\n`}${extra.join('')}`;
}

/** The certificates of a PEM text, in order; blocks that are not certificates are skipped. */
export function parsePem(pem: string): X509Certificate[] {
  const out: X509Certificate[] = [];
  for (const block of pem.match(PEM_CERTIFICATE) ?? []) {
    try {
      out.push(new X509Certificate(block));
    } catch {
      // Not a certificate: it adds nothing; whoever uses the PEM refuses it on its own terms.
    }
  }
  return out;
}

/** RFC 5280 §6.1: a path is short; this bounds the search. */
const MAX_PATH = 8;

/**
 * A path from `chain[0]` (the leaf) to a root of `roots`, through CA certificates of `chain` in
 * any order, each signature checked: the leaf first, the root last. Undefined when there is none.
 * A chain may hold two certificates of one CA (a root rotation's cross-certificate beside the new
 * root's certificate), so certificates are not taken to follow each other in order.
 */
export function pathToRoot(
  chain: readonly X509Certificate[],
  roots: readonly X509Certificate[],
): X509Certificate[] | undefined {
  const anchors = roots.filter((r) => r.ca);
  const walk = (path: X509Certificate[]): X509Certificate[] | undefined => {
    const top = path[path.length - 1]!;
    if (anchors.some((r) => r.fingerprint256 === top.fingerprint256)) return path;
    const root = anchors.find((r) => issued(r, top));
    if (root) return [...path, root];
    if (path.length >= MAX_PATH) return undefined;
    for (const c of chain.slice(1)) {
      if (!c.ca || path.some((p) => p.fingerprint256 === c.fingerprint256) || !issued(c, top)) continue;
      const found = walk([...path, c]);
      if (found) return found;
    }
    return undefined;
  };
  return chain.length === 0 ? undefined : walk([chain[0]!]);
}

/** X509Certificate.checkIssued compares names (and AKI/SKI); verify checks the signature. */
function issued(issuer: X509Certificate, subject: X509Certificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/**
 * The chain to present: the leaf, and those CA certificates of `chainPem` that lead to a root of
 * `rootsPem` (in their order). After a root rotation's finish a holder's bundle no longer has the
 * old root, and the cross-certificate its chain still carries is dropped: a peer that trusts only
 * the new root and follows the first certificate naming the issuer (OpenSSL, GnuTLS) then finds
 * the new root's certificate of the CA. Unchanged when nothing leads to the roots (the holder's
 * own checks refuse such a chain; this only trims).
 */
export function presentedChainPem(chainPem: string, rootsPem: string): string {
  const chain = parsePem(chainPem);
  const roots = parsePem(rootsPem).filter((r) => r.ca);
  if (chain.length < 3 || roots.length === 0) return chainPem;
  const cas = chain.slice(1);
  const leads = new Map<X509Certificate, boolean>();
  const leadsToRoot = (c: X509Certificate, depth: number): boolean => {
    const known = leads.get(c);
    if (known !== undefined) return known;
    const found =
      roots.some((r) => r.fingerprint256 === c.fingerprint256 || issued(r, c)) ||
      (depth < MAX_PATH &&
        cas.some((other) => other !== c && other.ca && issued(other, c) && leadsToRoot(other, depth + 1)));
    leads.set(c, found);
    return found;
  };
  const kept = cas.filter((c) => c.ca && leadsToRoot(c, 1));
  if (kept.length === 0 || kept.length === cas.length) return chainPem;
  return [chain[0]!, ...kept].map((c) => c.toString()).join('');
}
