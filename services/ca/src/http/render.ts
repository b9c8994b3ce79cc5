import type { Issuance } from '../domain/node-identity';
import { formatSelector } from '../domain/entries';
import type { CertificateRecord, EntryRecord, NodeRecord } from '../domain/ports';
import { revocationReasonName } from '../pki/crl';

/** CONTRACT "HTTP API": the issuance response. */
export function renderIssuance(i: Issuance, opts: { withNodeId: boolean }) {
  return {
    spiffe_id: i.leaf.record.spiffeId,
    serial: i.leaf.record.serial,
    certificate_chain: i.leaf.chainPem,
    bundle: i.bundlePem,
    expires_at: i.leaf.record.notAfter.toISOString(),
    refresh_at: i.refreshAt.toISOString(),
    ...(opts.withNodeId ? { node_id: i.nodeId } : {}),
  };
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function renderNode(n: NodeRecord) {
  return {
    id: n.id,
    role: n.role,
    status: n.status,
    attestation_method: n.attestationMethod,
    created_at: iso(n.createdAt),
    last_attested_at: iso(n.lastAttestedAt),
    last_seen_at: iso(n.lastSeenAt),
    revoked_at: iso(n.revokedAt),
    // A name, as in the feed, the CRL listing and the revoke request (RFC 5280 5.3.1 CRLReason).
    revocation_reason:
      n.revocationReason === null ? null : (revocationReasonName(n.revocationReason) ?? 'unspecified'),
  };
}

export function renderCertificate(c: CertificateRecord, now: Date) {
  const status = c.status === 'valid' && c.notAfter.getTime() <= now.getTime() ? 'expired' : c.status;
  return {
    serial: c.serial,
    kind: c.kind,
    spiffe_id: c.spiffeId,
    node_id: c.nodeId,
    issued_via: c.issuedVia,
    ca_id: c.caId,
    not_before: c.notBefore.toISOString(),
    not_after: c.notAfter.toISOString(),
    status,
  };
}

export function renderEntry(e: EntryRecord, defaultTtlMs: number) {
  return {
    name: e.name,
    spiffe_id: e.spiffeId,
    parent: e.parentNodeId,
    selectors: e.selectors.map(formatSelector),
    dns_names: e.dnsNames,
    allow_wildcard_dns: e.allowWildcardDns,
    ttl_seconds: Math.round(Math.min(e.ttlMs ?? defaultTtlMs, 7 * 86_400_000) / 1000),
    ...(e.hint ? { hint: e.hint } : {}),
    created_at: e.createdAt.toISOString(),
  };
}
