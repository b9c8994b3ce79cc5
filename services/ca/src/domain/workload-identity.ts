import { parseCsr } from '../pki/csr';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import { entryTtlMs } from './entries';
import { BatonError } from './errors';
import { issueLeaf } from './issue';
import type { Keyring } from './keyring';
import type { Installation, NodeRecord, Storage } from './ports';
import { refreshAt } from './refresh';
import type { Issuance } from './node-identity';

export interface WorkloadDeps {
  clock: Clock;
  storage: Storage;
  keyring: Keyring;
  installation: Installation;
  random: () => number;
}

/**
 * POST /v1/workload-svids: a node may mint only the SPIFFE IDs of entries parented to it,
 * checked on every request. The SVID carries the entry's DNS names and nothing from the CSR;
 * the record keeps the issuing node so that revoking the node revokes what it minted.
 */
export async function issueWorkloadSvid(
  deps: WorkloadDeps,
  p: { node: NodeRecord; spiffeId: unknown; csr: unknown; audit: AuditContext },
): Promise<Issuance> {
  if (typeof p.spiffeId !== 'string' || p.spiffeId.length > 2048)
    throw new BatonError('ERR_BAD_REQUEST', 'spiffe_id: required');
  if (typeof p.csr !== 'string')
    throw new BatonError('ERR_CSR_INVALID', 'csr: a PEM certificate request is required');
  const csr = parseCsr(p.csr);
  const entry = await deps.storage.entries.findForNode(p.node.id, p.spiffeId);
  if (!entry)
    throw new BatonError('ERR_NOT_AUTHORIZED', 'no entry for this SPIFFE ID is parented to this node');
  const td = deps.installation.trustDomain;
  const leaf = await deps.storage.transaction(async (tx) => {
    // Re-read the node under a row lock: a revocation committed meanwhile wins.
    const node = await tx.nodes.lockById(p.node.id);
    if (!node || node.status !== 'active')
      throw new BatonError('ERR_NODE_REVOKED', 'this node has been revoked');
    const issued = await issueLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing, certificates: tx.certificates },
      {
        kind: 'workload',
        spiffeId: entry.spiffeId,
        subject: { O: td, OU: 'workload', CN: entry.name },
        key: csr.key,
        ttlMs: entryTtlMs(entry, deps.installation.workloadTtlMs),
        dnsNames: entry.dnsNames,
        issuedVia: node.id,
      },
    );
    await tx.audit.append(
      auditEvent(p.audit, deps.clock.now(), 'certificate.issued', entry.spiffeId, 'success', {
        kind: 'workload',
        serial: issued.record.serial,
        entry: entry.name,
        node: node.id,
      }),
    );
    return issued;
  });
  return {
    leaf,
    bundlePem: deps.keyring.bundlePem,
    refreshAt: refreshAt(deps.clock.now(), leaf.record.notAfter, deps.random),
    nodeId: p.node.id,
  };
}
