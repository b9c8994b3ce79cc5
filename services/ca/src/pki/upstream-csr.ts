import { bitString, ctx, int, oid, seq, set } from '../../../../common/src/der';
import type { Signer } from '../ground/signer';
import { KeyUsageBit, basicConstraints, keyUsage, subjectAltName } from './extensions';
import { type NameParts, encodeName } from './names';
import { OID } from './oids';

export interface CaCsrParams {
  subject: NameParts;
  /** SubjectPublicKeyInfo DER of the key `signer` signs with. */
  spki: Buffer;
  signer: Signer;
  /** The trust domain's SPIFFE ID, `spiffe://<td>`: the URI SAN a signing CA carries (SPIFFE X.509-SVID §4.1). */
  trustDomainId: string;
}

/**
 * The PKCS#10 request (RFC 2986) of an upstream signing CA, signed by its own key (proof of
 * possession, §3). It asks, in an extensionRequest attribute (RFC 2985 §5.4.2), for what Baton's own
 * signing CA carries: basicConstraints cA TRUE pathLen 0, keyUsage keyCertSign and cRLSign (both
 * critical, RFC 5280 §4.2.1.9 and §4.2.1.3) and the trust domain's SPIFFE ID as a URI SAN. The
 * outside CA decides what it signs: `ca import` checks the certificate it returns, not this request.
 */
export function buildCaCsr(p: CaCsrParams): Buffer {
  const extensions = seq(
    basicConstraints(true, 0),
    keyUsage([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
    subjectAltName({ uris: [p.trustDomainId] }),
  );
  const extensionRequest = seq(oid(OID.extensionRequest), set(extensions));
  // RFC 2986 §4.1: version v1(0), subject, subjectPKInfo, attributes [0] IMPLICIT SET OF Attribute.
  const info = seq(int(0), encodeName(p.subject), p.spki, ctx(0, true, extensionRequest));
  return seq(info, p.signer.algorithmIdentifier, bitString(p.signer.sign(info)));
}
