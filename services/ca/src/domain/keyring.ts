import { createPrivateKey } from 'node:crypto';
import type { Signer } from '../ground/signer';
import type { IssuerTemplate } from '../pki/certificate';
import { readCertificate } from '../pki/certificate-reader';
import { toPem } from '../../../../common/src/der';
import { authorityInfoAccess, authorityKeyIdentifier, crlDistributionPoints } from '../pki/extensions';
import { type Kek, unwrapKey } from '../pki/kek';
import { rootPin } from '../pki/pin';
import { keyObjectSigner } from '../pki/signer';
import { BatonError } from '../ground/errors';
import { type JwtKeyring, loadJwtKeyring } from './jwt-keys';
import { isOutsideCa, loadOutsideCa, outsideIntermediatesPem } from './upstream-ca';
import { caKeyIdentifier } from '../pki/ca-constraints';
import type { CaRecord, JwtKeyRecord } from './ports';
import { crlUrl, ocspUrl } from './urls';

/** A CA whose key has been unwrapped and parsed once, ready to sign. */
export interface SigningCa {
  record: CaRecord;
  /** Signs with this CA's key, wherever the key is kept (ground/signer.ts). */
  signer: Signer;
  certPem: string;
  /**
   * What is served after a leaf this CA signs: its own certificate, then any certificate that links
   * it to another trusted root (CONTRACT "Certificate profile": leaf + intermediate).
   */
  chainPem: string;
  subjectName: Buffer;
  keyId: Buffer;
  spki: Buffer;
  /** Pre-encoded issuer parts for every leaf this CA signs. */
  template: IssuerTemplate;
  /**
   * An outside CA of an upstream CA (domain/upstream-ca.ts): Baton holds no key for it, so it signs
   * nothing, CRLs and OCSP answers included; its `signer` refuses.
   */
  outside?: true;
}

export interface Keyring {
  roots: SigningCa[];
  /** The active signing intermediate. */
  signing: SigningCa;
  all: SigningCa[];
  /** PEM of the trust bundle: the root(s). */
  bundlePem: string;
  /** CONTRACT "Join tokens": the pin of the current root. */
  pin: string;
  /** The public URL: the JWT-SVID issuer (`iss`) and the OIDC discovery document's `issuer`, exactly. */
  publicUrl: string;
  /** What the leaves' CRL Distribution Point and OCSP URL point under (urls.ts publicationUrlOf). */
  publicationUrl: string;
  /** JWT-SVID signing keys (domain/jwt-keys.ts). */
  jwt: JwtKeyring;
}

/**
 * Unwraps every CA key with the KEK, refusing to start on a wrong or missing KEK
 * (there is no fallback: a CA that cannot sign must say so, not improvise). `jwtKeys`: every
 * jwt_keys row; the signing CA's unretired one is unwrapped too (read them with readKeyState).
 */
export function loadKeyring(
  cas: CaRecord[],
  kek: Kek,
  publicUrl: string,
  jwtKeys: readonly JwtKeyRecord[],
  publicationUrl: string = publicUrl,
): Keyring {
  if (cas.length === 0)
    throw new BatonError('ERR_NOT_INITIALIZED', 'the CA is not initialized: run `baton ca init` first');
  const loaded = cas.map((record) => {
    if (isOutsideCa(record)) return loadOutsideCa(record);
    const pkcs8 = unwrapKey(kek, record.wrappedKey, record.id);
    const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    const fields = readCertificate(record.certificateDer);
    const keyId = caKeyIdentifier(fields);
    const signer = keyObjectSigner(privateKey);
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
  const roots = loaded
    .filter((c) => c.record.kind === 'root')
    .sort((a, b) => +b.record.createdAt - +a.record.createdAt);
  const signing = loaded.find((c) => c.record.kind === 'intermediate' && c.record.active);
  if (roots.length === 0 || !signing)
    throw new BatonError('ERR_CA_UNAVAILABLE', 'no active root and signing CA found');
  return {
    roots,
    signing,
    all: loaded,
    bundlePem: roots.map((r) => r.certPem).join(''),
    pin: rootPin(roots[0]!.spki),
    publicUrl,
    publicationUrl,
    jwt: loadJwtKeyring(jwtKeys, kek, signing.record),
  };
}
