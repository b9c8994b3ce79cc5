import {
  KeyUsageBit,
  basicConstraints,
  extKeyUsage,
  keyUsage,
  subjectAltName,
  subjectKeyIdentifier,
} from '../pki/extensions';
import { keyIdentifier, type PublicKeyInfo } from '../pki/keys';
import { OID } from '../pki/oids';

/**
 * The X.509-SVID leaf extensions (SPIFFE X.509-SVID §4; CONTRACT "Certificate profile"):
 * CA:FALSE critical; keyUsage digitalSignature (+keyEncipherment for RSA, which TLS 1.2 RSA key
 * exchange needs) critical; serverAuth+clientAuth; SKI; exactly one URI SAN, then DNS/IP SANs.
 * Nothing here comes from a CSR: the caller passes names decided by policy.
 */
export function leafExtensions(p: {
  key: PublicKeyInfo;
  spiffeId: string;
  dnsNames?: string[];
  ips?: string[];
}): Buffer[] {
  const usage =
    p.key.kind === 'rsa'
      ? [KeyUsageBit.digitalSignature, KeyUsageBit.keyEncipherment]
      : [KeyUsageBit.digitalSignature];
  return [
    basicConstraints(false),
    keyUsage(usage),
    extKeyUsage([OID.serverAuth, OID.clientAuth]),
    subjectKeyIdentifier(keyIdentifier(p.key.spki)),
    subjectAltName({ uris: [p.spiffeId], dns: p.dnsNames ?? [], ips: p.ips ?? [] }),
  ];
}
