import { pathToRoot as anyPathToRoot } from '../../../common/src/trust-store';
import { createPrivateKey, createPublicKey, type KeyObject, type X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseCertificates } from '../../rotation/src/pem';
import { IdentityError } from './errors';
import { normalizeSerial, readSvid } from './svid';

/** Where an identity lives: the agent's file layout (CONTRACT "agent files"). */
export interface IdentityPaths {
  /** Leaf first, then the intermediate(s). */
  cert: string;
  /** The leaf's private key (PKCS#8 or SEC1 PEM). */
  key: string;
  /** The trust bundle: the roots. */
  bundle: string;
}

/** One verified identity. Immutable: a rotation makes a new one. */
export interface IdentitySnapshot {
  spiffeId: string;
  certChainPem: string;
  keyPem: string;
  bundlePem: string;
  notBefore: Date;
  notAfter: Date;
  /** The leaf serial, lowercase hex as Baton lists it. */
  serial: string;
  /** The parsed leaf, for callers that need more than the fields above. */
  leaf: X509Certificate;
}

export interface IdentityFiles {
  cert: string;
  key: string;
  bundle: string;
}

export function readIdentityFiles(paths: IdentityPaths): IdentityFiles {
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      throw new IdentityError(
        'ERR_IDENTITY_FILES',
        `cannot read ${path}: ${(e as NodeJS.ErrnoException).code}`,
      );
    }
  };
  // cert before key: the agent writes cert.pem then key.pem, so a read racing a rotation sees a
  // new cert with the old key at worst, which the key check below refuses.
  return { cert: read(paths.cert), key: read(paths.key), bundle: read(paths.bundle) };
}

const spkiDer = (key: KeyObject): Buffer => key.export({ type: 'spki', format: 'der' });

/**
 * Checks a cert/key/bundle triple and returns the identity it makes, or throws an IdentityError
 * saying why it is not usable. Done before every swap (STYLE 9: swap the TLS context only after the
 * new certificate verifies): the key certifies the leaf; the chain leads to a root of the bundle
 * (RFC 5280 §6.1.3 (a)(1) signature, (a)(2) validity at `now`, (a)(4) issuer name); the leaf is an
 * X.509-SVID (SPIFFE X.509-SVID §2, §5.2).
 */
export function verifyIdentity(files: IdentityFiles, now: Date): IdentitySnapshot {
  let chain: X509Certificate[];
  let roots: X509Certificate[];
  try {
    chain = parseCertificates(files.cert);
    roots = parseCertificates(files.bundle);
  } catch {
    throw new IdentityError('ERR_CHAIN_INVALID', 'a certificate does not parse');
  }
  const leaf = chain[0];
  if (!leaf) throw new IdentityError('ERR_CHAIN_INVALID', 'cert.pem holds no certificate');
  if (roots.length === 0) throw new IdentityError('ERR_CHAIN_INVALID', 'bundle.pem holds no certificate');

  let keyMatches: boolean;
  try {
    keyMatches = spkiDer(leaf.publicKey).equals(spkiDer(createPublicKey(createPrivateKey(files.key))));
  } catch {
    throw new IdentityError('ERR_KEY_MISMATCH', 'key.pem does not hold a private key');
  }
  if (!keyMatches) throw new IdentityError('ERR_KEY_MISMATCH', 'key.pem is not the key of cert.pem');

  const { spiffeId } = readSvid(leaf);
  const path = pathToRoot(chain, roots);
  for (const cert of path) {
    const from = new Date(cert.validFrom);
    const to = new Date(cert.validTo);
    const which = `certificate ${normalizeSerial(cert.serialNumber)}`;
    if (now < from)
      throw new IdentityError('ERR_CERT_EXPIRED', `${which} is not valid before ${from.toISOString()}`);
    if (now > to) throw new IdentityError('ERR_CERT_EXPIRED', `${which} expired at ${to.toISOString()}`);
  }
  return {
    spiffeId,
    certChainPem: files.cert,
    keyPem: files.key,
    bundlePem: files.bundle,
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    serial: normalizeSerial(leaf.serialNumber),
    leaf,
  };
}

/** The certificates from the leaf up to and including the root of the bundle that anchors them. */
function pathToRoot(chain: X509Certificate[], roots: X509Certificate[]): X509Certificate[] {
  // Any path will do: during a root rotation the chain holds two certificates of the signing CA.
  const path = anyPathToRoot(chain, roots);
  if (path) return path;
  // None: say where the chain breaks, read in order.
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!signs(chain[i + 1]!, chain[i]!)) {
      throw new IdentityError(
        'ERR_CHAIN_INVALID',
        `certificate ${i} of cert.pem is not signed by certificate ${i + 1}`,
      );
    }
    // RFC 5280 §6.1.4 (k): only a CA may sign the next certificate.
    if (!chain[i + 1]!.ca)
      throw new IdentityError('ERR_CHAIN_INVALID', `certificate ${i + 1} of cert.pem is not a CA`);
  }
  const top = chain[chain.length - 1]!;
  // A trust anchor is a CA of the bundle: either the top of the chain itself or its issuer.
  const anchors = roots.filter((r) => r.ca);
  if (anchors.some((r) => r.fingerprint256 === top.fingerprint256)) return chain;
  const root = anchors.find((r) => signs(r, top));
  if (!root) throw new IdentityError('ERR_CHAIN_INVALID', 'the chain does not lead to a root of bundle.pem');
  return [...chain, root];
}

/** X509Certificate.checkIssued compares names (and AKI/SKI); verify checks the signature. */
function signs(issuer: X509Certificate, subject: X509Certificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** Whether two snapshots come from the same bytes: nothing to swap. */
export const sameFiles = (a: IdentitySnapshot, b: IdentityFiles): boolean =>
  a.certChainPem === b.cert && a.keyPem === b.key && a.bundlePem === b.bundle;
