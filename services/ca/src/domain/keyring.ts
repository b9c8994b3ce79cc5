import type { IssuerTemplate } from '../pki/certificate';
import { readCertificate } from '../pki/certificate-reader';
import { toPem } from '../../../../common/src/der';
import { authorityInfoAccess, authorityKeyIdentifier, crlDistributionPoints } from '../pki/extensions';
import { spkiOf } from '../pki/keys';
import { rootPin } from '../pki/pin';
import { BatonError } from '../ground/errors';
import { type JwtKeyring, loadJwtKeyring } from './jwt-keys';
import { custodyOf, type KeyCustodySource } from './key-custody';
import { isOutsideCa, loadOutsideCa, outsideIntermediatesPem } from './upstream-ca';
import { caKeyIdentifier } from '../pki/ca-constraints';
import type { CaRecord, CrossCertificateRecord, JwtKeyRecord } from './ports';
import type { SigningCa } from './signing-ca';
import { crlUrl, ocspUrl } from './urls';
import { inBundle as rootsInBundle } from './roots-in-bundle';

export type { SigningCa } from './signing-ca';

export interface Keyring {
  /** The roots in the trust bundle, newest first: one, or two while a root rotation runs. */
  roots: SigningCa[];
  /** The active signing intermediate. */
  signing: SigningCa;
  all: SigningCa[];
  /** PEM of the trust bundle: the root(s). */
  bundlePem: string;
  /**
   * What this server verifies client chains against: the bundle's roots and every CA certificate
   * they issued (intermediates, cross-certificates). Not wider than the bundle (each extra
   * certificate is signed by one of its roots), but OpenSSL then finds a path whatever order a
   * client's chain is in (see trustStorePem in common/src/trust-store.ts).
   */
  trustPem: string;
  /** CONTRACT "Join tokens": the pin of the current root, which new tokens carry. */
  pin: string;
  /** The pins of every root in the bundle (two during a root rotation): what tokens may carry. */
  pins: string[];
  /** The public URL: the JWT-SVID issuer (`iss`) and the OIDC discovery document's `issuer`, exactly. */
  publicUrl: string;
  /** What the leaves' CRL Distribution Point and OCSP URL point under (urls.ts publicationUrlOf). */
  publicationUrl: string;
  /** JWT-SVID signing keys (domain/jwt-keys.ts). */
  jwt: JwtKeyring;
}

/**
 * Loads every CA key from its custody (unwrapped with the KEK, or found in the PKCS#11 token), refusing to start on a wrong or missing KEK
 * (there is no fallback: a CA that cannot sign must say so, not improvise). `jwtKeys`: every
 * jwt_keys row; the signing CA's unretired one is unwrapped too (read them with readKeyState).
 */
export function loadKeyring(
  cas: CaRecord[],
  kek: KeyCustodySource,
  publicUrl: string,
  jwtKeys: readonly JwtKeyRecord[],
  publicationUrl: string = publicUrl,
  cross: readonly CrossCertificateRecord[] = [],
): Keyring {
  if (cas.length === 0)
    throw new BatonError('ERR_NOT_INITIALIZED', 'the CA is not initialized: run `baton ca init` first');
  const custody = custodyOf(kek);
  const loaded = cas.map((record) => {
    if (isOutsideCa(record)) return loadOutsideCa(record);
    const key = custody.load(record.wrappedKey, record.id);
    const fields = readCertificate(record.certificateDer);
    // The key must be the one the certificate names: a row pointing at another token object (or a
    // token restored with other keys) must not sign under this CA's name.
    if (!spkiOf(key.publicKey).equals(fields.spkiRaw))
      throw new BatonError('ERR_CA_UNAVAILABLE', `the key of CA ${record.id} does not match its certificate`);
    const keyId = caKeyIdentifier(fields);
    const signer = key.signer;
    const template: IssuerTemplate = {
      issuerName: fields.subjectRaw,
      signer,
      issuerExtensions: [
        authorityKeyIdentifier(keyId),
        crlDistributionPoints(crlUrl(publicationUrl, record.id)),
        authorityInfoAccess(ocspUrl(publicationUrl)),
      ],
    };
    const certPem = toPem('CERTIFICATE', record.certificateDer);
    return {
      record,
      signer,
      certPem,
      // Upstream CA: the outside intermediates follow Baton's signing CA (none otherwise).
      chainPem: certPem + outsideIntermediatesPem(record, cas),
      subjectName: fields.subjectRaw,
      keyId,
      spki: fields.spkiRaw,
      template,
    } satisfies SigningCa;
  });
  // The current root first (domain/roots-in-bundle.ts).
  const order = rootsInBundle(cas).map((c) => c.id);
  const roots = order.map((id) => loaded.find((c) => c.record.id === id)!);
  const inBundle = new Set(roots.map((r) => r.record.id));
  const crossPemsOf = (ca: CaRecord): string[] =>
    cross
      .filter((x) => x.caId === ca.id && x.issuerId !== ca.parentId && inBundle.has(x.issuerId))
      .map((x) => toPem('CERTIFICATE', x.certificateDer));
  for (const ca of loaded) {
    if (ca.record.kind !== 'intermediate') continue;
    // The cross-certificate first: OpenSSL takes the first certificate of a chain that names the
    // issuer (and is in its validity), and does not try the next one when that path fails. A peer
    // that still trusts only the old root needs the old root's certificate first; a peer that
    // trusts both roots verifies either way; one that trusts only the new root (after the finish,
    // when no cross-certificate is served any more) puts the new root's certificate of the CA in
    // its trust store (trustPem here, trustStorePem in the clients), which OpenSSL looks in first.
    ca.chainPem = [...crossPemsOf(ca.record), ca.chainPem].join('');
  }
  const signing = loaded.find((c) => c.record.kind === 'intermediate' && c.record.active);
  if (roots.length === 0 || !signing)
    throw new BatonError('ERR_CA_UNAVAILABLE', 'no active root and signing CA found');
  const bundlePem = roots.map((r) => r.certPem).join('');
  const issuedByRoots = [
    ...loaded
      .filter((c) => c.record.kind === 'intermediate' && inBundle.has(c.record.parentId ?? ''))
      .map((c) => c.certPem),
    ...cross.filter((x) => inBundle.has(x.issuerId)).map((x) => toPem('CERTIFICATE', x.certificateDer)),
  ];
  return {
    roots,
    signing,
    all: loaded,
    bundlePem,
    trustPem: bundlePem + issuedByRoots.join(''),
    pin: rootPin(roots[0]!.spki),
    pins: roots.map((r) => rootPin(r.spki)),
    publicUrl,
    publicationUrl,
    jwt: loadJwtKeyring(jwtKeys, custody, signing.record),
  };
}
