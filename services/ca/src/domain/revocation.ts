import { REVOCATION_REASONS } from '../pki/crl';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import { BatonError } from '../ground/errors';
import type { CertificateKind, Repositories, RevocationEvent, Storage } from './ports';
import { nodeSpiffeId } from './trust-domain';

export interface RevocationDeps {
  clock: Clock;
  storage: Storage;
  trustDomain: string;
  /**
   * Publishes new CRLs inside the revocation's transaction (crl-publisher.ts publishAllCrlsIn), so
   * the revocation event and the CRLs that list it become visible together.
   */
  publishCrls(tx: Repositories): Promise<unknown>;
}

export interface RevocationResult {
  event: RevocationEvent;
  serials: string[];
}

/**
 * `baton node revoke`: in one transaction, mark the node revoked (no renewal, no workload SVID, no
 * attestation under its bound name), revoke every unexpired certificate of the node and every
 * workload certificate issued through it, spend its unused bound tokens, record a revocation event
 * for the feed and an audit row, and publish new CRLs.
 */
export async function revokeNode(
  deps: RevocationDeps,
  p: { nodeId: string; reason?: number; audit: AuditContext },
): Promise<RevocationResult> {
  const reason = p.reason ?? REVOCATION_REASONS.unspecified;
  return deps.storage.transaction(async (tx) => {
    const now = deps.clock.now();
    const node = await tx.nodes.lockById(p.nodeId);
    if (!node) throw new BatonError('ERR_NOT_FOUND', 'no such node');
    if (node.status === 'revoked') throw new BatonError('ERR_CONFLICT', 'the node is already revoked');
    await tx.nodes.markRevoked(node.id, now, reason);
    const serials = await tx.revocations.revokeCertificates({ nodeId: node.id }, now, reason);
    const tokens = await tx.tokens.spendBoundTo(node.id);
    const event = await tx.revocations.appendEvent({
      kind: 'node',
      nodeId: node.id,
      serials,
      reason,
      actor: p.audit.actor,
      createdAt: now,
    });
    await tx.audit.append(
      auditEvent(p.audit, now, 'node.revoked', nodeSpiffeId(deps.trustDomain, node.id), 'success', {
        reason,
        certificates: serials.length,
        tokens_spent: tokens,
        event: event.id,
      }),
    );
    await deps.publishCrls(tx);
    return { event, serials };
  });
}

/**
 * `baton cert revoke SERIAL`: one certificate, with an RFC 5280 reason. `authorize` decides whether
 * the caller may revoke a certificate of this kind (the caller's role does: http/authorization.ts
 * assertMayRevoke); it throws to refuse, and runs on the locked row before anything is written, so
 * a refusal leaves no revocation, no feed event, no audit row and no new CRL.
 */
export async function revokeCertificate(
  deps: RevocationDeps,
  p: { serial: string; reason?: number; audit: AuditContext; authorize(kind: CertificateKind): void },
): Promise<RevocationResult> {
  const reason = p.reason ?? REVOCATION_REASONS.unspecified;
  const serial = p.serial.toLowerCase();
  if (!/^[0-9a-f]{2,40}$/.test(serial))
    throw new BatonError('ERR_BAD_REQUEST', 'serial: hexadecimal, at most 20 bytes');
  return deps.storage.transaction(async (tx) => {
    const now = deps.clock.now();
    const cert = await tx.certificates.lockBySerial(serial);
    if (!cert) throw new BatonError('ERR_NOT_FOUND', 'no such certificate');
    p.authorize(cert.kind);
    if (cert.status === 'revoked') throw new BatonError('ERR_CONFLICT', 'the certificate is already revoked');
    if (cert.notAfter.getTime() <= now.getTime())
      throw new BatonError('ERR_CONFLICT', 'the certificate has already expired');
    const serials = await tx.revocations.revokeCertificates({ serial }, now, reason);
    const event = await tx.revocations.appendEvent({
      kind: 'certificate',
      nodeId: cert.nodeId,
      serials,
      reason,
      actor: p.audit.actor,
      createdAt: now,
    });
    await tx.audit.append(
      auditEvent(p.audit, now, 'certificate.revoked', cert.spiffeId, 'success', {
        serial,
        reason,
        event: event.id,
      }),
    );
    await deps.publishCrls(tx);
    return { event, serials };
  });
}
