import { type ParsedCsr, parseCsr } from '../pki/csr';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import type { EntrySource } from './entry-cache';
import { entryTtlMs } from './entries';
import { BatonError } from '../ground/errors';
import { type IssuedLeaf, type IssueLeafParams, issueLeaf, recordLeaf } from './issue';
import type { Keyring } from './keyring';
import type { EntryRecord, Installation, NodeRecord, Storage } from './ports';
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

export interface WorkloadRequest {
  /** From the TLS-verified client certificate: `spiffe://<td>/node/<nodeId>` and its serial. */
  peer: { nodeId: string; serial: string };
  spiffeId: unknown;
  csr: unknown;
  audit: AuditContext;
  /**
   * The full node authentication against the database (certificate current, node active): throws
   * the precise refusal (ERR_CERT_REVOKED, ERR_NODE_REVOKED …) or returns the node.
   */
  authenticate: () => Promise<NodeRecord>;
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
 * path: full authentication first, so a caller that is not an authorized node learns only that,
 * then a fresh entry read and the locked transaction.
 */
export async function issueWorkloadSvid(deps: WorkloadDeps, p: WorkloadRequest): Promise<Issuance> {
  let spiffeId: string;
  let csr: ParsedCsr;
  let entry: EntryRecord | null;
  try {
    spiffeId = checkSpiffeId(p.spiffeId);
    csr = checkCsr(p.csr);
    entry = deps.entries
      ? await deps.entries.lookup(p.peer.nodeId, spiffeId)
      : await deps.storage.entries.findForNode(p.peer.nodeId, spiffeId);
  } catch (e) {
    await p.authenticate();
    throw e;
  }
  if (entry) {
    const now = deps.clock.now();
    const leaf = await recordLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing },
      leafParams(deps, entry, csr, p.peer.nodeId),
      (l) =>
        deps.storage.issuances.recordWorkloadGuarded(l.record, issuedEvent(p.audit, now, l, entry!), {
          nodeId: p.peer.nodeId,
          peerSerial: p.peer.serial,
          now,
          entry: entry!,
        }),
    );
    if (leaf) return issuanceOf(deps, leaf, p.peer.nodeId);
    deps.entries?.forget(p.peer.nodeId, spiffeId);
  }
  const node = await p.authenticate();
  const fresh = await deps.storage.entries.findForNode(node.id, spiffeId);
  if (!fresh)
    throw new BatonError('ERR_NOT_AUTHORIZED', 'no entry for this SPIFFE ID is parented to this node');
  return issueLocked(deps, node.id, fresh, csr, p.audit);
}

/** The general path: one transaction that locks the node row, as every other issuance does. */
async function issueLocked(
  deps: WorkloadDeps,
  nodeId: string,
  entry: EntryRecord,
  csr: ParsedCsr,
  audit: AuditContext,
): Promise<Issuance> {
  const leaf = await deps.storage.transaction(async (tx) => {
    // Re-read the node under a row lock: a revocation committed meanwhile wins.
    const node = await tx.nodes.lockById(nodeId);
    if (!node || node.status !== 'active')
      throw new BatonError('ERR_NODE_REVOKED', 'this node has been revoked');
    const issued = await issueLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing, certificates: tx.certificates },
      leafParams(deps, entry, csr, node.id),
    );
    await tx.audit.append(issuedEvent(audit, deps.clock.now(), issued, entry));
    return issued;
  });
  return issuanceOf(deps, leaf, nodeId);
}

function checkSpiffeId(v: unknown): string {
  if (typeof v !== 'string' || v.length > 2048)
    throw new BatonError('ERR_BAD_REQUEST', 'spiffe_id: required');
  return v;
}

function checkCsr(v: unknown): ParsedCsr {
  if (typeof v !== 'string')
    throw new BatonError('ERR_CSR_INVALID', 'csr: a PEM certificate request is required');
  return parseCsr(v);
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
