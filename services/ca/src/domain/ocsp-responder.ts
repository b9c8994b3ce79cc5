import {
  buildOcspResponse,
  type IssuerHashes,
  isIssuedBy,
  type OcspCertStatus,
  type OcspSingleResponse,
  issuerHashes,
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

/**
 * RFC 6960 responder: each CertID is matched to one of our CAs by its issuer name and key hashes,
 * then to a certificate record by serial. Unknown issuer or serial: "unknown" (§2.2). Revoked:
 * time and reason. The response is signed by the issuing CA itself (§2.6, no delegated
 * responder certificate needed), byKey responder id, the request nonce echoed (§4.4.1).
 */
export async function answerOcsp(
  deps: { clock: Clock; keyring: Keyring; certificates: CertificateRepository },
  requestDer: Buffer,
): Promise<{ der: Buffer; cacheable: boolean; nextUpdate: Date }> {
  const req = parseOcspRequest(requestDer);
  const now = deps.clock.now();
  const nextUpdate = new Date(now.getTime() + OCSP_VALIDITY_MS);
  let responder: SigningCa | undefined;
  const responses: OcspSingleResponse[] = [];
  for (const r of req.requests) {
    const ca = deps.keyring.all.find((c) => isIssuedBy(r, hashesOf(c)));
    responder ??= ca;
    let status: OcspCertStatus = 'unknown';
    if (ca) {
      const cert = await deps.certificates.findBySerial(r.serialHex);
      if (cert && cert.caId === ca.record.id) {
        status =
          cert.status === 'revoked' && cert.revokedAt
            ? { revokedAt: cert.revokedAt, reason: cert.revocationReason ?? 0 }
            : 'good';
      }
    }
    responses.push({ certId: r.certId, status, thisUpdate: now, nextUpdate });
  }
  const signer = responder ?? deps.keyring.signing;
  const der = buildOcspResponse({
    responder: { keyHash: responderKeyHash(signer.spki), signer: signer.template.signer },
    producedAt: now,
    responses,
    nonce: req.nonce,
  });
  return { der, cacheable: req.nonce === undefined, nextUpdate };
}
