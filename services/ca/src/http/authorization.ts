import type { IncomingMessage } from 'node:http';
import type { Request, RequestHandler } from 'express';
import type { AdminRole } from '../admin-credentials';
import { BatonError } from '../ground/errors';
import type { CertificateKind, NodeRecord, Repositories } from '../domain/ports';
import { assertCurrent } from '../domain/node-identity';
import type { Clock } from '../domain/clock';
import { peerCertificate } from './peer-cert';

/**
 * Who may call which admin route: one table, checked on every request, also on a reused
 * keep-alive connection (never cached per connection: CVE-2018-1002105 came from trusting
 * a connection's earlier authorization). `auditor` reads only. Certificate revocation is further
 * limited by the kind of certificate revoked: REVOCATION_ROLES.
 */
export const ADMIN_ROUTES = {
  'POST /v1/admin/tokens': ['admin', 'operator'],
  'GET /v1/admin/nodes': ['admin', 'operator', 'auditor'],
  'GET /v1/admin/nodes/:id': ['admin', 'operator', 'auditor'],
  'POST /v1/admin/nodes/:id/revoke': ['admin', 'operator'],
  'GET /v1/admin/certificates': ['admin', 'operator', 'auditor'],
  'POST /v1/admin/certificates/:serial/revoke': ['admin', 'operator'],
  'GET /v1/admin/crls': ['admin', 'operator', 'auditor'],
  'GET /v1/admin/entries': ['admin', 'operator', 'auditor'],
  'POST /v1/admin/entries': ['admin', 'operator'],
  'DELETE /v1/admin/entries/:name': ['admin', 'operator'],
  'POST /v1/admin/admins': ['admin'],
  'GET /v1/admin/audit': ['admin', 'auditor'],
} as const satisfies Record<string, readonly AdminRole[]>;

export type AdminRoute = keyof typeof ADMIN_ROUTES;

/**
 * Who may revoke which kind of certificate (`POST /v1/admin/certificates/:serial/revoke`): an
 * operator runs the fleet, so it may revoke node and workload certificates, but cutting off an
 * admin or the server's own TLS certificate takes the `admin` role (issue 14, finding 5). Every
 * kind is listed (`satisfies`), so a new kind does not compile until it is given its roles.
 */
export const REVOCATION_ROLES = {
  node: ['admin', 'operator'],
  workload: ['admin', 'operator'],
  admin: ['admin'],
  server: ['admin'],
} as const satisfies Record<CertificateKind, readonly AdminRole[]>;

export interface AdminIdentity {
  name: string;
  role: AdminRole;
  spiffeId: string;
  serial: string;
}

export interface AuthDeps {
  clock: Clock;
  repos: Repositories;
  trustDomain: string;
}

/** What authentication needs, from the application's dependencies (every route's the same). */
export const authDepsOf = (deps: {
  clock: Clock;
  storage: Repositories;
  installation: { trustDomain: string };
}): AuthDeps => ({ clock: deps.clock, repos: deps.storage, trustDomain: deps.installation.trustDomain });

/** The admin certificate must be ours, current (not revoked or expired) and carry an admin SPIFFE ID. */
export async function authenticateAdmin(deps: AuthDeps, req: Request): Promise<AdminIdentity> {
  const peer = peerCertificate(req);
  const prefix = `spiffe://${deps.trustDomain}/admin/`;
  if (!peer.spiffeId.startsWith(prefix))
    throw new BatonError('ERR_NOT_AUTHORIZED', 'an admin certificate is required');
  const record = await deps.repos.certificates.findBySerial(peer.serial);
  if (!record || record.kind !== 'admin' || record.spiffeId !== peer.spiffeId) {
    throw new BatonError('ERR_NOT_AUTHENTICATED', 'unknown admin certificate');
  }
  if (record.status === 'revoked')
    throw new BatonError('ERR_CERT_REVOKED', 'this certificate has been revoked');
  // TLS checked the validity period at the handshake only; a keep-alive connection outlives it.
  if (record.notAfter.getTime() <= deps.clock.now().getTime())
    throw new BatonError('ERR_CERT_EXPIRED', 'the client certificate has expired');
  return {
    name: peer.spiffeId.slice(prefix.length),
    role: peer.subject.OU as AdminRole,
    spiffeId: peer.spiffeId,
    serial: peer.serial,
  };
}

export function requireAdmin(deps: AuthDeps, route: AdminRoute): RequestHandler {
  const allowed: readonly string[] = ADMIN_ROUTES[route];
  return async (req, res, next) => {
    const admin = await authenticateAdmin(deps, req);
    if (!allowed.includes(admin.role))
      throw new BatonError('ERR_NOT_AUTHORIZED', `role ${admin.role} may not call ${route}`);
    res.locals.admin = admin;
    next();
  };
}

/**
 * Refuses, with the same code as a route the role may not call, a revocation of a kind of
 * certificate REVOCATION_ROLES does not give the admin's role. The revocation use case calls it
 * on the certificate it has locked, before it writes anything.
 */
export function assertMayRevoke(admin: Pick<AdminIdentity, 'role'>, kind: CertificateKind): void {
  const allowed: readonly string[] = REVOCATION_ROLES[kind];
  if (!allowed.includes(admin.role))
    throw new BatonError(
      'ERR_NOT_AUTHORIZED',
      `role ${admin.role} may not revoke a certificate of kind ${kind}`,
    );
}

/**
 * The node a request's client certificate names, as TLS verified it against our roots, without
 * asking the database: the caller must still check that this certificate is current and the node
 * active (authenticateNode, or a statement that re-checks both, as workload issuance does).
 */
export function nodePeer(
  req: Pick<IncomingMessage, 'socket'>,
  trustDomain: string,
): { nodeId: string; serial: string } {
  const peer = peerCertificate(req);
  const prefix = `spiffe://${trustDomain}/node/`;
  if (!peer.spiffeId.startsWith(prefix))
    throw new BatonError('ERR_NOT_AUTHORIZED', 'a node certificate is required');
  return { nodeId: peer.spiffeId.slice(prefix.length), serial: peer.serial };
}

/** A node certificate that is the node's current one, for an active node. */
export async function authenticateNode(
  deps: AuthDeps,
  req: Pick<IncomingMessage, 'socket'>,
): Promise<{ node: NodeRecord; serial: string }> {
  const peer = nodePeer(req, deps.trustDomain);
  const record = await deps.repos.certificates.findBySerial(peer.serial);
  if (!record || record.kind !== 'node' || !record.nodeId)
    throw new BatonError('ERR_NOT_AUTHENTICATED', 'unknown node certificate');
  assertCurrent(record.status, record.notAfter, deps.clock.now());
  const node = await deps.repos.nodes.findById(record.nodeId);
  if (!node || node.status !== 'active')
    throw new BatonError('ERR_NODE_REVOKED', 'this node has been revoked');
  return { node, serial: peer.serial };
}

export function requireNode(deps: AuthDeps): RequestHandler {
  return async (req, res, next) => {
    res.locals.node = await authenticateNode(deps, req);
    next();
  };
}
