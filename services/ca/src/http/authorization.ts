import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import type { AdminRole } from '../domain/admin-identity';
import {
  type CallerDeps,
  type CallerKind,
  type CallerOf,
  claimOf,
  identifyCaller,
  type NodeClaim,
} from '../domain/caller';
import type { Clock } from '../domain/clock';
import type { CertificateKind, Repositories } from '../domain/ports';
import { BatonError } from '../ground/errors';
import { peerCertificate } from './peer-cert';

/**
 * The routes that take a client certificate, and the kinds of caller each accepts. Who the caller
 * is, is decided by domain/caller.ts on every request, also on a reused keep-alive connection
 * (never cached per connection: CVE-2018-1002105 came from trusting a connection's earlier
 * authorization); what an admin's role may do, by ADMIN_ROUTES below.
 */
export const NODE_ROUTES = {
  'POST /v1/renew': ['node'],
  'POST /v1/workload-svids': ['node'],
  'POST /v1/jwt-svids': ['node'],
  'GET /v1/entries': ['node'],
  // CONTRACT: node mTLS. Workload SVIDs may follow the feed too: revocations are public (the CRL is
  // unauthenticated), and a library-based service holds a workload identity, not a node's.
  'GET /v1/revocations': ['node', 'workload'],
} as const satisfies Record<string, readonly CallerKind[]>;

/**
 * Who may call which admin route: one table, checked on every request. `auditor` reads only.
 * Certificate revocation is further limited by the kind of certificate revoked: REVOCATION_ROLES.
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
  // Issue 20: the signed chain head is for anyone who administers the CA to keep; the rows
  // themselves only for those who may read the log; deleting them, the admin role alone.
  'GET /v1/admin/audit/checkpoint': ['admin', 'operator', 'auditor'],
  'GET /v1/admin/audit/export': ['admin', 'auditor'],
  'POST /v1/admin/audit/prune': ['admin'],
  'GET /v1/admin/ca': ['admin', 'operator', 'auditor'],
  // A root rotation changes what every peer trusts: the admin role alone.
  'POST /v1/admin/ca/rotate-root': ['admin'],
  // Issue 19: admitting one TPM is fleet work (like a join token); trusting a manufacturer CA admits
  // every TPM it ever certified, a trust anchor: the admin role alone.
  'POST /v1/admin/tpm/enrollments': ['admin', 'operator'],
  'POST /v1/admin/tpm/cas': ['admin'],
  'GET /v1/admin/tpm/cas': ['admin', 'operator', 'auditor'],
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

/** What identifying a caller needs, from the application's dependencies (every route's the same). */
export const authDepsOf = (deps: {
  clock: Clock;
  storage: Repositories;
  installation: { trustDomain: string };
}): CallerDeps => ({ clock: deps.clock, repos: deps.storage, trustDomain: deps.installation.trustDomain });

/** The caller of a request, if it is of a kind in `accepts` and passes the rule (domain/caller.ts). */
export const callerOf = <K extends CallerKind>(
  deps: CallerDeps,
  req: Pick<IncomingMessage, 'socket'>,
  accepts: readonly K[],
): Promise<CallerOf<K>> => identifyCaller(deps, peerCertificate(req), accepts);

/** The admin a request's certificate names; its role is not yet checked against a route. */
export async function authenticateAdmin(
  deps: CallerDeps,
  req: Pick<IncomingMessage, 'socket'>,
): Promise<AdminIdentity> {
  const admin = await callerOf(deps, req, ['admin']);
  return {
    name: admin.name,
    role: admin.role,
    spiffeId: admin.certificate.spiffeId,
    serial: admin.certificate.serial,
  };
}

export function requireAdmin(deps: CallerDeps, route: AdminRoute): RequestHandler {
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
 * What a request's client certificate claims, without asking the database: the fast paths hand
 * it to a use case whose guarded statement, or on refusal identifyClaim, checks the rest.
 */
export function nodeClaimOf(req: Pick<IncomingMessage, 'socket'>, trustDomain: string): NodeClaim {
  return claimOf(peerCertificate(req), trustDomain, ['node']) as NodeClaim;
}

/** Express middleware for a route of NODE_ROUTES: the caller in res.locals.caller. */
export function requireCaller(deps: CallerDeps, route: keyof typeof NODE_ROUTES): RequestHandler {
  const accepts: readonly CallerKind[] = NODE_ROUTES[route];
  return async (req, res, next) => {
    res.locals.caller = await callerOf(deps, req, accepts);
    next();
  };
}
