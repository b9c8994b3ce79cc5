import { BatonError } from '../ground/errors';
import type { ParsedCsr, UnverifiedCsr } from '../pki/csr';
import { type AuditContext, auditEvent } from './audit';
import { decideCaller, identifyClaim, type NodeClaim } from './caller';
import type { Clock } from './clock';
import type { EntrySource } from './entry-cache';
import { entryTtlMs } from './entries';
import { type IssuedLeaf, type IssueLeafParams, issueLeaf, recordLeaf } from './issue';
import type { Keyring } from './keyring';
import type { EntryRecord, Installation, Storage } from './ports';
import { type Issuance, issuanceOf } from './node-identity';

export interface WorkloadDeps {
  clock: Clock;
  storage: Storage;
  keyring: Keyring;
  installation: Installation;
  random: () => number;
  /** Entry reads for the fast path; a cache is fine (the insert re-checks). Default: storage. */
  entries?: EntrySource;
}

/** POST /v1/workload-svids, as the HTTP edge read it. */
export interface WorkloadSvidParams {
  /** What the TLS-verified client certificate claims: `spiffe://<td>/node/<nodeId>`. */
  claim: NodeClaim;
  /** The SPIFFE ID asked for; it must be an entry's parented to the node (the entry decides). */
  spiffeId: string;
  /** Read and within the key policy; its signature is verified here. */
  csr: UnverifiedCsr;
  audit: AuditContext;
}

/**
 * POST /v1/workload-svids: a node may mint only the SPIFFE IDs of entries parented to it,
 * checked on every request. The SVID carries the entry's DNS names and nothing from the CSR;
 * the record keeps the issuing node so that revoking the node revokes what it minted.
 *
 * Fast path, one database round trip: the certificate is built from the (cached) entry and
 * recorded by a statement that re-checks everything (the node certificate is current, the node is
 * active and locked FOR SHARE, the entry unchanged) before it inserts the certificate and its
 * audit row. If that statement refuses, or anything else fails, the request takes the general
 * path: the caller rule in full first (domain/caller.ts), so a caller that is not an authorized
 * node learns only that, then a fresh entry read and the locked transaction.
 */
export async function issueWorkloadSvid(deps: WorkloadDeps, p: WorkloadSvidParams): Promise<Issuance> {
  const { claim, spiffeId } = p;
  const nodeId = claim.nodeId;
  const authenticate = () => identifyClaim(callerDeps(deps), claim);
  let csr: ParsedCsr;
  let entry: EntryRecord | null;
  try {
    csr = p.csr.verify();
    entry = deps.entries
      ? await deps.entries.lookup(nodeId, spiffeId)
      : await deps.storage.entries.findForNode(nodeId, spiffeId);
  } catch (e) {
    await authenticate();
    throw e;
  }
  if (entry) {
    const now = deps.clock.now();
    const leaf = await recordLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing },
      leafParams(deps, entry, csr, nodeId),
      (l) =>
        deps.storage.issuances.recordWorkloadGuarded(l.record, issuedEvent(p.audit, now, l, entry!), {
          nodeId,
          peerSerial: claim.peer.serial,
          peerDer: claim.peer.der,
          now,
          entry: entry!,
        }),
    );
    if (leaf) return issuanceOf(deps, leaf, nodeId);
    deps.entries?.forget(nodeId, spiffeId);
  }
  await authenticate();
  const fresh = await deps.storage.entries.findForNode(nodeId, spiffeId);
  if (!fresh)
    throw new BatonError('ERR_NOT_AUTHORIZED', 'no entry for this SPIFFE ID is parented to this node');
  return issueLocked(deps, claim, fresh, csr, p.audit);
}

const callerDeps = (deps: WorkloadDeps) => ({
  clock: deps.clock,
  repos: deps.storage,
  trustDomain: deps.installation.trustDomain,
});

/** The general path: one transaction that locks the node row, as every other issuance does. */
async function issueLocked(
  deps: WorkloadDeps,
  claim: NodeClaim,
  entry: EntryRecord,
  csr: ParsedCsr,
  audit: AuditContext,
): Promise<Issuance> {
  const leaf = await deps.storage.transaction(async (tx) => {
    // The caller rule again over the node row locked: a revocation committed meanwhile wins.
    const locked = await tx.nodes.lockById(claim.nodeId);
    const { node } = decideCaller(
      claim,
      await tx.certificates.findBySerial(claim.peer.serial),
      locked,
      deps.clock.now(),
    );
    const issued = await issueLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing, certificates: tx.certificates },
      leafParams(deps, entry, csr, node.id),
    );
    await tx.audit.append(issuedEvent(audit, deps.clock.now(), issued, entry));
    return issued;
  });
  return issuanceOf(deps, leaf, claim.nodeId);
}

function leafParams(deps: WorkloadDeps, entry: EntryRecord, csr: ParsedCsr, nodeId: string): IssueLeafParams {
  const td = deps.installation.trustDomain;
  return {
    kind: 'workload',
    spiffeId: entry.spiffeId,
    subject: { O: td, OU: 'workload', CN: entry.name },
    key: csr.key,
    ttlMs: entryTtlMs(entry, deps.installation.workloadTtlMs),
    dnsNames: entry.dnsNames,
    issuedVia: nodeId,
  };
}

const issuedEvent = (audit: AuditContext, at: Date, leaf: IssuedLeaf, entry: EntryRecord) =>
  auditEvent(audit, at, 'certificate.issued', entry.spiffeId, 'success', {
    kind: 'workload',
    serial: leaf.record.serial,
    entry: entry.name,
    node: leaf.record.issuedVia,
  });
