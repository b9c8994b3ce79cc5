import {
  buildOcspResponse,
  type IssuerHashes,
  isIssuedBy,
  type OcspCertStatus,
  type OcspSingleResponse,
  issuerHashes,
  ocspErrorResponse,
  parseOcspRequest,
  responderKeyHash,
} from '../pki/ocsp';
import type { Clock } from './clock';
import type { Keyring, SigningCa } from './keyring';
import type { CertificateRepository } from './ports';

/** How long a "good" answer may be relied on (RFC 6960 §4.2.2.1 nextUpdate). */
export const OCSP_VALIDITY_MS = 10 * 60_000;

const hashCache = new WeakMap<SigningCa, IssuerHashes>();
const hashesOf = (ca: SigningCa): IssuerHashes => {
  let h = hashCache.get(ca);
  if (!h) {
    h = issuerHashes(ca.record.certificateDer);
    hashCache.set(ca, h);
  }
  return h;
};

export type OcspAnswer =
  | { kind: 'signed'; der: Buffer; cacheable: boolean; nextUpdate: Date }
  /** The unsigned `unauthorized` response (RFC 6960 §2.3): not one of our CAs' certificates. */
  | { kind: 'unauthorized'; der: Buffer };

/**
 * RFC 6960 responder. Every CertID must name one and the same of our CAs by its issuer name and key
 * hashes; that CA signs the answer (§4.2.2.2: the CA that issued the certificate, no delegated
 * responder needed), byKey responder id, the request nonce echoed (§4.4.1), and its own certificate
 * in `certs` (§4.2.1) so that a client holding only the trust bundle can build the chain to the
 * signer. A serial that CA never issued is "unknown" (§2.2).
 *
 * A CertID naming an issuer we do not serve gets the unsigned "unauthorized" (§2.3; RFC 5019
 * §2.2.3), as does a request spanning two of our CAs: no key of ours can sign an answer that a
 * client would accept for it (§4.2.2.2 requires the signer to be the CA named in each CertID), and
 * a signature by the wrong CA is an answer no client can verify.
 */
export async function answerOcsp(
  deps: { clock: Clock; keyring: Keyring; certificates: CertificateRepository },
  requestDer: Buffer,
): Promise<OcspAnswer> {
  const req = parseOcspRequest(requestDer);
  // An outside CA of an upstream CA answers for itself: Baton holds no key to sign for it.
  const cas = req.requests.map((r) => deps.keyring.all.find((c) => !c.outside && isIssuedBy(r, hashesOf(c))));
  const responder = cas[0];
  if (!responder || cas.some((c) => c !== responder))
    return { kind: 'unauthorized', der: ocspErrorResponse('unauthorized') };
  const now = deps.clock.now();
  const nextUpdate = new Date(now.getTime() + OCSP_VALIDITY_MS);
  const responses: OcspSingleResponse[] = [];
  for (const r of req.requests) {
    let status: OcspCertStatus = 'unknown';
    const cert = await deps.certificates.findBySerial(r.serialHex);
    if (cert && cert.caId === responder.record.id) {
      status =
        cert.status === 'revoked' && cert.revokedAt
          ? { revokedAt: cert.revokedAt, reason: cert.revocationReason ?? 0 }
          : 'good';
    }
    responses.push({ certId: r.certId, status, thisUpdate: now, nextUpdate });
  }
  const der = buildOcspResponse({
    responder: {
      keyHash: responderKeyHash(responder.spki),
      signer: responder.template.signer,
      // A root is the trust anchor itself: the client has it already.
      certificates: responder.record.kind === 'root' ? undefined : [responder.record.certificateDer],
    },
    producedAt: now,
    responses,
    nonce: req.nonce,
  });
  return { kind: 'signed', der, cacheable: req.nonce === undefined, nextUpdate };
}
