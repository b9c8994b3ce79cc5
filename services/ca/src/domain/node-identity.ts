import { randomBytes } from 'node:crypto';
import { MAX_TTL } from '../ground/ttl';
import { base32 } from '../pki/base32';
import type { ParsedCsr, UnverifiedCsr } from '../pki/csr';
import {
  type IssuancePolicy,
  type PresentedEvidence,
  unspendableEvidence,
  withAuditDetails,
} from './attestation/attestor';
import { type AuditContext, auditEvent, recordRefusal } from './audit';
import { assertNodeActive, decideCaller, type NodeClaim, nodeRevoked } from './caller';
import type { Clock } from './clock';
import { BatonError } from '../ground/errors';
import { type IssuedLeaf, type IssueLeafParams, issueLeaf, recordLeaf } from './issue';
import type { Keyring } from './keyring';
import type { AttestedNode, Installation, NodeRecord, Repositories, Storage } from './ports';
import { refreshAt } from './refresh';
import type { TokenSource } from './token-cache';
import { nodeSpiffeId } from './trust-domain';

export interface NodeIdentityDeps {
  clock: Clock;
  storage: Storage;
  keyring: Keyring;
  installation: Installation;
  random: () => number;
  /** Join-token reads for attestation; a cache is fine (the statement re-checks). Default: storage. */
  tokens?: TokenSource;
}

export interface Issuance {
  leaf: IssuedLeaf;
  bundlePem: string;
  refreshAt: Date;
  nodeId: string;
}

/** POST /v1/attest, as the HTTP edge read it (http/routes/node-identity.ts). */
export interface AttestParams {
  /** The evidence, read for the method it names and bound to that method's attestor. */
  evidence: PresentedEvidence;
  /** Read and within the key policy; its signature is verified after the evidence. */
  csr: UnverifiedCsr;
  audit: AuditContext;
}

const newNodeId = (): string => base32(randomBytes(10));

/** What a node certificate is built from: the node's id, role and lifetime. */
type LeafNode = Pick<NodeRecord, 'id' | 'role' | 'certTtlMs'>;

function nodeLeafParams(deps: NodeIdentityDeps, node: LeafNode, csr: ParsedCsr): IssueLeafParams {
  return {
    kind: 'node',
    spiffeId: nodeSpiffeId(deps.installation.trustDomain, node.id),
    // The role comes from the token or the node record, never from the CSR (CONTRACT).
    subject: { O: deps.installation.trustDomain, OU: node.role, CN: node.id },
    key: csr.key,
    ttlMs: Math.min(node.certTtlMs ?? deps.installation.nodeTtlMs, MAX_TTL.node),
    nodeId: node.id,
  };
}

/** The answer to an issuance: the chain, the bundle, and when to renew (with jitter). */
export function issuanceOf(
  deps: { keyring: Keyring; clock: Clock; random: () => number },
  leaf: IssuedLeaf,
  nodeId: string,
): Issuance {
  return {
    leaf,
    bundlePem: deps.keyring.bundlePem,
    refreshAt: refreshAt(deps.clock.now(), leaf.record.notAfter, deps.random),
    nodeId,
  };
}

async function issueNodeCertificate(
  deps: NodeIdentityDeps,
  tx: Repositories,
  node: NodeRecord,
  csr: ParsedCsr,
): Promise<Issuance> {
  await tx.certificates.supersedeForNode(node.id, 'node');
  const leaf = await issueLeaf(
    { clock: deps.clock, issuer: deps.keyring.signing, certificates: tx.certificates },
    nodeLeafParams(deps, node, csr),
  );
  return issuanceOf(deps, leaf, node.id);
}

/**
 * POST /v1/attest: check the evidence, then record the certificate, spend the evidence and create
 * or update the node in one statement (IssuanceRepository.recordAttestation). A refusal at any step
 * spends nothing and issues nothing.
 */
export async function attestNode(deps: NodeIdentityDeps, p: AttestParams): Promise<Issuance> {
  try {
    return await attestNodeOnce(deps, p);
  } catch (e) {
    await recordAttestationRefused(deps, p.audit, p.evidence.method, e);
    throw e;
  }
}

/**
 * A refused attestation is a security event too: its own audit row, since nothing of the
 * attestation was written. The HTTP edge calls it for the refusals of reading the request (an
 * unknown method, a malformed CSR or evidence); `method` is what the request named, bounded.
 */
export const recordAttestationRefused = (
  deps: Pick<NodeIdentityDeps, 'clock' | 'storage'>,
  audit: AuditContext,
  method: string,
  error: unknown,
): Promise<void> => recordRefusal(deps, audit, 'node.attestation_refused', { method }, error);

/**
 * How many times an attestation is built again when the node changed between the read and the
 * statement (another attestation or a renewal of the same node committed in between): each time
 * the statement wrote nothing, and the next read sees the change.
 */
const ATTEMPTS = 3;

async function attestNodeOnce(deps: NodeIdentityDeps, p: AttestParams): Promise<Issuance> {
  // The method (at the edge), the CSR's structure and key policy (microseconds, at the edge), then the evidence (for a join token,
  // one lookup by id and a hash), then the CSR's signature, the dearest step: an anonymous caller
  // without valid evidence never gets a signature verified. Only a request whose evidence and CSR
  // signature are both bad is answered differently (the evidence's 401, no longer 400
  // ERR_CSR_INVALID); an honest client's CSR always verifies. The evidence is spent only by the
  // statement that records the certificate, so a CSR that does not verify still spends nothing.
  const policy = await p.evidence.verify({
    clock: deps.clock,
    repos: deps.storage,
    pins: deps.keyring.pins,
    csrDer: p.csr.der,
    ...(deps.tokens ? { tokens: deps.tokens.lookup } : {}),
  });
  // A refusal from here on is about the evidence verify accepted: its audit row says which (the
  // token id, the TPM's EK identifier).
  return withAuditDetails(policy.auditDetails ?? {}, () => issueAttested(deps, p, policy));
}

async function issueAttested(
  deps: NodeIdentityDeps,
  p: AttestParams,
  policy: IssuancePolicy,
): Promise<Issuance> {
  const csr = p.csr.verify();
  let read = policy.node;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    // Round trips: the evidence's read (a join token's, with the node it binds) or the node's
    // (x509pop), then the one statement; a new node of an unbound token is not read at all.
    const node = await nodeToAttest(deps, policy, read);
    read = undefined;
    const now = deps.clock.now();
    const leaf = await recordLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing },
      nodeLeafParams(deps, node, csr),
      async (l) => {
        const outcome = await deps.storage.issuances.recordAttestation(
          l.record,
          auditEvent(p.audit, now, 'node.attested', l.record.spiffeId, 'success', {
            method: policy.method,
            role: node.role,
            serial: l.record.serial,
            ...policy.auditDetails,
          }),
          { spend: policy.spend, node, method: policy.method, now },
        );
        if (outcome === 'node-changed') return false;
        if (outcome === 'evidence-spent') {
          // A cached token may say a use is left when the last one went meanwhile.
          if (policy.spend.kind === 'token') deps.tokens?.forget(policy.spend.tokenId);
          throw unspendableEvidence(policy.spend);
        }
        if (outcome === 'node-revoked') throw nodeRevoked();
        if (outcome === 'node-role') throw otherRole();
        return true;
      },
    );
    if (leaf) return issuanceOf(deps, leaf, node.id);
  }
  throw new BatonError('ERR_DATABASE_UNAVAILABLE', 'the node changed during the attestation: retry later');
}

const otherRole = () => new BatonError('ERR_ATTESTATION_FAILED', 'the node exists with another role');

/**
 * The node the certificate is for, as it is now: an existing node (read unless `verify` read it)
 * must be active (domain/caller.ts) and have the evidence's role, and keeps its own lifetime; a
 * node that does not exist is created with the evidence's role and lifetime, and a node without a
 * bound id gets a new random one (never an existing node: the statement refuses if it exists).
 */
async function nodeToAttest(
  deps: NodeIdentityDeps,
  policy: IssuancePolicy,
  read: NodeRecord | null | undefined,
): Promise<AttestedNode> {
  if (policy.nodeId === null)
    return { id: newNodeId(), role: policy.role, certTtlMs: policy.certTtlMs, existing: false };
  const found = read !== undefined ? read : await deps.storage.nodes.findById(policy.nodeId);
  if (!found) return { id: policy.nodeId, role: policy.role, certTtlMs: policy.certTtlMs, existing: false };
  assertNodeActive(found);
  if (found.role !== policy.role) throw otherRole();
  return { id: found.id, role: found.role, certTtlMs: found.certTtlMs, existing: true };
}

/** POST /v1/renew, as the HTTP edge read it. */
export interface RenewParams {
  /** What the TLS-verified client certificate claims; checked against the database here. */
  claim: NodeClaim;
  /** Read and within the key policy; its signature is verified here. */
  csr: UnverifiedCsr;
  audit: AuditContext;
}

/**
 * POST /v1/renew: the identity is the presented certificate's, never the CSR's. Only the node's
 * current, unexpired, unrevoked certificate renews; it becomes superseded in the same transaction
 * (row-locked, so two concurrent renewals of one certificate give one new certificate).
 */
export async function renewNode(deps: NodeIdentityDeps, p: RenewParams): Promise<Issuance> {
  const csr = p.csr.verify();
  const { peer } = p.claim;
  // Fast path: one read, then one statement that re-checks the caller rule (domain/caller.ts)
  // under the locks the general path takes (IssuanceRepository.recordRenewalGuarded). Any refusal
  // takes the general path, which names the reason.
  // The node row gives the leaf its role and lifetime (one prepared statement); whether the caller
  // may renew is the guard's to say, and on refusal the general path's.
  const node = await deps.storage.nodes.findByCertificate(peer.serial);
  if (node?.id === p.claim.nodeId) {
    const now = deps.clock.now();
    const leaf = await recordLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing },
      nodeLeafParams(deps, node, csr),
      (l) =>
        deps.storage.issuances.recordRenewalGuarded(l.record, renewedEvent(p.audit, now, l, peer.serial), {
          nodeId: node.id,
          peerSerial: peer.serial,
          peerDer: peer.der,
          now,
        }),
    );
    if (leaf) return issuanceOf(deps, leaf, node.id);
  }
  return renewLocked(deps, p, csr);
}

const renewedEvent = (audit: AuditContext, at: Date, leaf: IssuedLeaf, previous: string) =>
  auditEvent(audit, at, 'certificate.renewed', leaf.record.spiffeId, 'success', {
    serial: leaf.record.serial,
    previous,
  });

/** The general path: the caller rule over the locked rows, each refusal with its own code. */
async function renewLocked(deps: NodeIdentityDeps, p: RenewParams, csr: ParsedCsr): Promise<Issuance> {
  return deps.storage.transaction(async (tx) => {
    const now = deps.clock.now();
    // Locks in the order node → certificate, the order of a node revocation (revokeNode locks the
    // node, then updates its certificates): the other order deadlocks against a concurrent one.
    const node = await tx.nodes.lockById(p.claim.nodeId);
    const current = await tx.certificates.lockBySerial(p.claim.peer.serial);
    const caller = decideCaller(p.claim, current, node, now);
    await tx.nodes.recordSeen(caller.node.id, now);
    const issued = await issueNodeCertificate(deps, tx, caller.node, csr);
    await tx.audit.append(renewedEvent(p.audit, now, issued.leaf, caller.certificate.serial));
    return issued;
  });
}
