import { BatonError } from '../ground/errors';
import { ADMIN_ROLES, type AdminRole } from './admin-identity';
import type { Clock } from './clock';
import type { CertificateRecord, NodeRecord, Repositories } from './ports';

/**
 * Who is calling: the one place that decides, from the client certificate TLS verified and from
 * the database, whether a peer may act as a node, a workload or an admin. Every route that takes a
 * client certificate goes through here on every request (a keep-alive connection is never trusted
 * for what an earlier request proved: CVE-2018-1002105), and so do the locked general paths of
 * renewal and workload issuance, over the rows they locked. The guarded SQL statements of the fast
 * paths (storage/knex/issuance-repository.ts) evaluate the same rule in the database;
 * test/contract/caller.contract.test.ts runs one table of cases through both.
 *
 * The rule, in the order its refusals are reported:
 *  1. the SPIFFE ID names a kind of caller the route accepts (else ERR_NOT_AUTHORIZED);
 *  2. the certificate is the one Baton recorded under its serial: same SPIFFE ID, same DER, same
 *     kind, the node it names (else ERR_NOT_AUTHENTICATED: TLS chained it to one of our roots, but
 *     we did not issue it as that);
 *  3. it is current: not revoked (ERR_CERT_REVOKED), not replaced by a renewal
 *     (ERR_CERT_SUPERSEDED), not past notAfter by the injected clock (ERR_CERT_EXPIRED; TLS checked
 *     the validity period once, at the handshake, with the wall clock);
 *  4. the node it names or was issued through is active (ERR_NODE_REVOKED).
 */

/** The client certificate of a request, as TLS verified it against our roots (http/peer-cert.ts). */
export interface PeerCertificate {
  /** Lowercase hex serial, as stored in the certificates table. */
  serial: string;
  spiffeId: string;
  subject: { O?: string; OU?: string; CN?: string };
  /** The certificate as presented: it must be byte for byte the one recorded under `serial`. */
  der: Buffer;
}

export type CallerKind = 'node' | 'workload' | 'admin';

/** What the SPIFFE ID alone says, before the database is asked (the fast paths start from this). */
export type Claim =
  | { kind: 'node'; nodeId: string; peer: PeerCertificate }
  | { kind: 'workload'; peer: PeerCertificate }
  | { kind: 'admin'; name: string; peer: PeerCertificate };

export type NodeClaim = Extract<Claim, { kind: 'node' }>;

/** A caller that passed the whole rule. */
export type Caller =
  | { kind: 'node'; node: NodeRecord; certificate: CertificateRecord }
  | { kind: 'workload'; node: NodeRecord | null; certificate: CertificateRecord }
  | { kind: 'admin'; name: string; role: AdminRole; certificate: CertificateRecord };

export type CallerOf<K extends CallerKind> = Extract<Caller, { kind: K }>;

/** Step 1: the kind of caller the SPIFFE ID names, if the route accepts it. */
export function claimOf(peer: PeerCertificate, trustDomain: string, accepts: readonly CallerKind[]): Claim {
  const claim = rawClaim(peer, trustDomain);
  if (!claim || !accepts.includes(claim.kind)) {
    throw new BatonError('ERR_NOT_AUTHORIZED', `${article(accepts)} certificate is required`);
  }
  return claim;
}

function rawClaim(peer: PeerCertificate, trustDomain: string): Claim | null {
  const base = `spiffe://${trustDomain}/`;
  if (!peer.spiffeId.startsWith(base)) return null;
  const path = peer.spiffeId.slice(base.length);
  if (path.startsWith('node/')) return { kind: 'node', nodeId: path.slice('node/'.length), peer };
  if (path.startsWith('admin/')) return { kind: 'admin', name: path.slice('admin/'.length), peer };
  return { kind: 'workload', peer };
}

const article = (kinds: readonly CallerKind[]): string => {
  const text = kinds.join(' or ');
  return /^[aeiou]/.test(text) ? `an ${text}` : `a ${text}`;
};

/**
 * Steps 2 to 4 over the rows as read (or as locked by a transaction): the caller, or the refusal.
 * `node` is the node the claim names (node callers) or the certificate was issued through
 * (workload callers); admins have none.
 */
export function decideCaller<C extends Claim>(
  claim: C,
  certificate: CertificateRecord | null,
  node: NodeRecord | null,
  now: Date,
): CallerOf<C['kind']> {
  return decide(claim, certificate, node, now) as CallerOf<C['kind']>;
}

function decide(
  claim: Claim,
  certificate: CertificateRecord | null,
  node: NodeRecord | null,
  now: Date,
): Caller {
  const cert = recorded(claim, certificate);
  assertCurrent(cert, now);
  switch (claim.kind) {
    case 'node':
      return { kind: 'node', node: assertNodeActive(node), certificate: cert };
    case 'workload':
      return { kind: 'workload', node: cert.issuedVia ? assertNodeActive(node) : null, certificate: cert };
    case 'admin': {
      const role = claim.peer.subject.OU as AdminRole;
      // We wrote the OU when we issued the certificate; a value we never write is not ours.
      if (!ADMIN_ROLES.includes(role)) throw unknownCertificate(claim.kind);
      return { kind: 'admin', name: claim.name, role, certificate: cert };
    }
  }
}

function recorded(claim: Claim, cert: CertificateRecord | null): CertificateRecord {
  const peer = claim.peer;
  if (
    !cert ||
    cert.kind !== claim.kind ||
    cert.spiffeId !== peer.spiffeId ||
    (claim.kind === 'node' && cert.nodeId !== claim.nodeId) ||
    !cert.der.equals(peer.der)
  ) {
    throw unknownCertificate(claim.kind);
  }
  return cert;
}

const unknownCertificate = (kind: CallerKind) =>
  new BatonError('ERR_NOT_AUTHENTICATED', `unknown ${kind} certificate`);

/** Step 3: the certificate is current at `now`. */
export function assertCurrent(cert: Pick<CertificateRecord, 'status' | 'notAfter'>, now: Date): void {
  if (cert.status === 'revoked')
    throw new BatonError('ERR_CERT_REVOKED', 'this certificate has been revoked');
  if (cert.status === 'superseded')
    throw new BatonError('ERR_CERT_SUPERSEDED', 'this certificate has been replaced by a newer one');
  if (cert.notAfter.getTime() <= now.getTime())
    throw new BatonError('ERR_CERT_EXPIRED', 'this certificate has expired: attest again');
}

/** Step 4: the node is active. Attestation under an existing node id asks the same question. */
export function assertNodeActive(node: NodeRecord | null): NodeRecord {
  if (!node || node.status !== 'active') throw nodeRevoked();
  return node;
}

/** The refusal of a node that is not active, where the node row was judged in a statement. */
export const nodeRevoked = (): BatonError => new BatonError('ERR_NODE_REVOKED', 'this node has been revoked');

export interface CallerDeps {
  clock: Clock;
  repos: Pick<Repositories, 'certificates' | 'nodes'>;
  trustDomain: string;
}

/** The whole rule for a request: claim, then the certificate and node rows (no locks). */
export async function identifyCaller<K extends CallerKind>(
  deps: CallerDeps,
  peer: PeerCertificate,
  accepts: readonly K[],
): Promise<CallerOf<K>> {
  return (await identifyClaim(deps, claimOf(peer, deps.trustDomain, accepts))) as Caller as CallerOf<K>;
}

/** The rule for a claim already made (the fast paths made it before their guarded statement). */
export async function identifyClaim<C extends Claim>(
  deps: CallerDeps,
  claim: C,
): Promise<CallerOf<C['kind']>> {
  const cert = await deps.repos.certificates.findBySerial(claim.peer.serial);
  const nodeId = claim.kind === 'node' ? claim.nodeId : claim.kind === 'workload' ? cert?.issuedVia : null;
  const node = nodeId ? await deps.repos.nodes.findById(nodeId) : null;
  return decideCaller(claim, cert, node, deps.clock.now());
}
