import { randomBytes } from 'node:crypto';
import { MAX_TTL } from '../ground/ttl';
import { base32 } from '../pki/base32';
import { type ParsedCsr, readCsr, type UnverifiedCsr } from '../pki/csr';
import type { Attestor } from './attestation/attestor';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import { BatonError } from '../ground/errors';
import { type IssuedLeaf, type IssueLeafParams, issueLeaf, recordLeaf } from './issue';
import type { Keyring } from './keyring';
import type { Installation, NodeRecord, NodeRole, Repositories, Storage } from './ports';
import { refreshAt } from './refresh';
import { nodeSpiffeId } from './trust-domain';

export interface NodeIdentityDeps {
  clock: Clock;
  storage: Storage;
  keyring: Keyring;
  installation: Installation;
  attestors: ReadonlyMap<string, Attestor>;
  random: () => number;
}

export interface Issuance {
  leaf: IssuedLeaf;
  bundlePem: string;
  refreshAt: Date;
  nodeId: string;
}

export interface AttestParams {
  method: unknown;
  payload: Record<string, unknown>;
  csr: unknown;
  audit: AuditContext;
}

const newNodeId = (): string => base32(randomBytes(10));

/** The CSR read and within the key policy; its signature is checked by `verify()` (pki/csr.ts). */
function csrFrom(input: unknown): UnverifiedCsr {
  if (typeof input !== 'string')
    throw new BatonError('ERR_CSR_INVALID', 'csr: a PEM certificate request is required');
  return readCsr(input);
}

function nodeLeafParams(deps: NodeIdentityDeps, node: NodeRecord, csr: ParsedCsr): IssueLeafParams {
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
 * POST /v1/attest: check the evidence, then in one transaction spend it, create or update the node,
 * and issue and record its certificate. A refusal at any step spends nothing and issues nothing.
 */
export async function attestNode(deps: NodeIdentityDeps, p: AttestParams): Promise<Issuance> {
  try {
    return await attestNodeOnce(deps, p);
  } catch (e) {
    // A refused attestation is a security event too; the issuance transaction rolled back, so
    // the refusal is recorded on its own.
    const code = e instanceof BatonError ? e.code : 'ERR_INTERNAL';
    await deps.storage.audit
      .append(
        auditEvent(p.audit, deps.clock.now(), 'node.attestation_refused', null, 'failure', {
          // Only a string is recorded: String() of hostile JSON throws ({"toString":1}) or
          // overflows the stack (deeply nested arrays) and would turn a 400 into a 500.
          method: typeof p.method === 'string' ? p.method.slice(0, 64) : `(${typeof p.method})`,
          code,
        }),
      )
      .catch(() => undefined);
    throw e;
  }
}

async function attestNodeOnce(deps: NodeIdentityDeps, p: AttestParams): Promise<Issuance> {
  const attestor = typeof p.method === 'string' ? deps.attestors.get(p.method) : undefined;
  if (!attestor) {
    throw new BatonError(
      'ERR_ATTESTATION_METHOD_UNKNOWN',
      `unknown attestation method; supported: ${[...deps.attestors.keys()].join(', ')}`,
    );
  }
  // The CSR's structure and key policy (microseconds) first, then the evidence (for a join token,
  // one lookup by id and a hash), then the CSR's signature, the dearest step: an anonymous caller
  // without valid evidence never gets a signature verified. Only a request whose evidence and CSR
  // signature are both bad is answered differently (the evidence's 401, no longer 400
  // ERR_CSR_INVALID); an honest client's CSR always verifies. The evidence is spent only in the
  // transaction below, so a CSR that does not verify still spends nothing.
  const unverified = csrFrom(p.csr);
  const policy = await attestor.verify(
    { clock: deps.clock, repos: deps.storage, pin: deps.keyring.pin, csrDer: unverified.der },
    p.payload,
  );
  const csr = unverified.verify();
  return deps.storage.transaction(async (tx) => {
    await policy.commit(tx);
    const now = deps.clock.now();
    const nodeId = policy.nodeId ?? newNodeId();
    let node = await tx.nodes.lockById(nodeId);
    if (node) {
      if (node.status === 'revoked') throw new BatonError('ERR_NODE_REVOKED', 'this node has been revoked');
      if (node.role !== policy.role)
        throw new BatonError('ERR_ATTESTATION_FAILED', 'the node exists with another role');
      await tx.nodes.recordAttestation(node.id, now, policy.method);
    } else {
      node = newNode(nodeId, policy.role, policy.method, policy.certTtlMs, now);
      await tx.nodes.insert(node);
    }
    const issued = await issueNodeCertificate(deps, tx, node, csr);
    await tx.audit.append(
      auditEvent(p.audit, now, 'node.attested', issued.leaf.record.spiffeId, 'success', {
        method: policy.method,
        role: node.role,
        serial: issued.leaf.record.serial,
        ...policy.auditDetails,
      }),
    );
    return issued;
  });
}

function newNode(
  id: string,
  role: NodeRole,
  method: string,
  certTtlMs: number | null,
  now: Date,
): NodeRecord {
  return {
    id,
    role,
    status: 'active',
    attestationMethod: method,
    certTtlMs,
    createdAt: now,
    lastAttestedAt: now,
    lastSeenAt: now,
    revokedAt: null,
    revocationReason: null,
  };
}

/**
 * POST /v1/renew: the identity is the presented certificate's, never the CSR's. Only the node's
 * current, unexpired, unrevoked certificate renews; it becomes superseded in the same transaction
 * (row-locked, so two concurrent renewals of one certificate give one new certificate).
 */
export async function renewNode(
  deps: NodeIdentityDeps,
  p: { peerSerial: string; csr: unknown; audit: AuditContext },
): Promise<Issuance> {
  const csr = csrFrom(p.csr).verify();
  // Fast path: one read, then one statement that re-checks everything under the locks the
  // general path takes (IssuanceRepository.recordRenewalGuarded). Any refusal takes the general
  // path, which names the reason.
  const node = await deps.storage.nodes.findByCertificate(p.peerSerial);
  if (node?.status === 'active') {
    const now = deps.clock.now();
    const leaf = await recordLeaf(
      { clock: deps.clock, issuer: deps.keyring.signing },
      nodeLeafParams(deps, node, csr),
      (l) =>
        deps.storage.issuances.recordRenewalGuarded(l.record, renewedEvent(p.audit, now, l, p.peerSerial), {
          nodeId: node.id,
          peerSerial: p.peerSerial,
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

/** The general path: the checks one by one in a transaction, each refusal with its own code. */
async function renewLocked(
  deps: NodeIdentityDeps,
  p: { peerSerial: string; audit: AuditContext },
  csr: ParsedCsr,
): Promise<Issuance> {
  return deps.storage.transaction(async (tx) => {
    const now = deps.clock.now();
    // Locks in the order node → certificate, the order of a node revocation (revokeNode locks the
    // node, then updates its certificates): the other order deadlocks against a concurrent one.
    const peer = await tx.certificates.findBySerial(p.peerSerial);
    const node = peer?.nodeId ? await tx.nodes.lockById(peer.nodeId) : null;
    const current = await tx.certificates.lockBySerial(p.peerSerial);
    if (!current || current.kind !== 'node' || !current.nodeId || current.nodeId !== peer?.nodeId) {
      throw new BatonError('ERR_NOT_AUTHENTICATED', 'a node certificate is required');
    }
    assertCurrent(current.status, current.notAfter, now);
    if (!node || node.status !== 'active')
      throw new BatonError('ERR_NODE_REVOKED', 'this node has been revoked');
    await tx.nodes.recordSeen(node.id, now);
    const issued = await issueNodeCertificate(deps, tx, node, csr);
    await tx.audit.append(renewedEvent(p.audit, now, issued.leaf, current.serial));
    return issued;
  });
}

export function assertCurrent(status: string, notAfter: Date, now: Date): void {
  if (status === 'revoked') throw new BatonError('ERR_CERT_REVOKED', 'this certificate has been revoked');
  if (status === 'superseded')
    throw new BatonError('ERR_CERT_SUPERSEDED', 'this certificate has been replaced by a newer one');
  if (notAfter.getTime() <= now.getTime())
    throw new BatonError('ERR_CERT_EXPIRED', 'this certificate has expired: attest again');
}
