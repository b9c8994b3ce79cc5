import type { KeyObject } from 'node:crypto';
import type { Signer } from '../ground/signer';
import { type IssuerTemplate, buildCertificate } from './certificate';
import {
  KeyUsageBit,
  authorityKeyIdentifier,
  basicConstraints,
  crlDistributionPoints,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
} from './extensions';
import { keyIdentifier, spkiOf } from './keys';
import { type NameParts, encodeName } from './names';
import { keyObjectSigner } from './signer';

export interface CaCertificateParams {
  subject: NameParts;
  publicKey: KeyObject;
  serial: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** RFC 5280 §4.2.1.9 pathLenConstraint: 1 for the root, 0 for a signing intermediate. */
  pathLen: number;
  /** The issuer; absent for a self-signed root (then `selfSigner`, else `selfKey`, signs). */
  issuer?: { name: Buffer; keyId: Buffer; signer: Signer };
  selfKey?: KeyObject;
  /** The root's own key when it is kept elsewhere (a PKCS#11 token). */
  selfSigner?: Signer;
  /** Where the issuer publishes the CRL that would list this CA (RFC 5280 §4.2.1.13). */
  crlUrl?: string;
  /**
   * The trust domain's SPIFFE ID (`spiffe://<td>`, no path), as a URI SAN: SPIFFE X.509-SVID §4.1,
   * "signing certificates SHOULD themselves be SVIDs", with the trust domain's ID.
   */
  trustDomainId?: string;
}

/**
 * A CA certificate: basicConstraints critical with pathLen, keyUsage keyCertSign+cRLSign critical,
 * SKI, and AKI (also on the root, where RFC 5280 §4.2.1.1 allows it and strict verifiers like it),
 * and with `trustDomainId` the trust domain's SPIFFE ID as a non-critical URI SAN (the subject is
 * not empty, RFC 5280 §4.2.1.6).
 */
export function buildCaCertificate(p: CaCertificateParams): Buffer {
  const spki = spkiOf(p.publicKey);
  const keyId = keyIdentifier(spki);
  const name = encodeName(p.subject);
  const issuer = p.issuer ?? { name, keyId, signer: p.selfSigner ?? keyObjectSigner(p.selfKey!) };
  const extensions = [
    basicConstraints(true, p.pathLen),
    keyUsage([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
    subjectKeyIdentifier(keyId),
    authorityKeyIdentifier(issuer.keyId),
  ];
  if (p.crlUrl) extensions.push(crlDistributionPoints(p.crlUrl));
  if (p.trustDomainId) extensions.push(subjectAltName({ uris: [p.trustDomainId] }));
  const template: IssuerTemplate = { issuerName: issuer.name, signer: issuer.signer, issuerExtensions: [] };
  return buildCertificate(template, {
    serial: p.serial,
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    subjectName: name,
    spki,
    extensions,
  });
}
