import type { RequestHandler } from 'express';
import type { CallerDeps, CallerKind } from '../domain/caller';
import { BatonError } from '../ground/errors';
import { ADMIN_ROUTES, callerOf, NODE_ROUTES } from './authorization';

interface SurfaceRoute {
  method: string;
  pattern: RegExp;
  accepts: readonly CallerKind[];
}

/** Express's matching: `:param` is one segment, case-insensitive, an optional trailing slash. */
const patternOf = (path: string): RegExp =>
  new RegExp(`^${path.replace(/[.]/g, '\\.').replace(/:[a-z]+/gi, '[^/]+')}/?$`, 'i');

const SURFACE: readonly SurfaceRoute[] = [
  ...Object.entries(NODE_ROUTES).map(([route, accepts]) => ({ route, accepts })),
  ...Object.keys(ADMIN_ROUTES).map((route) => ({ route, accepts: ['admin'] as const })),
].map(({ route, accepts }) => {
  const [method, path] = route.split(' ') as [string, string];
  return { method, pattern: patternOf(path), accepts };
});

/** Every path under /v1/admin/ is the admin surface, routes or not: its map is not public. */
const ADMIN_PREFIX = /^\/v1\/admin(\/|$)/i;

/**
 * The node and admin surfaces answer a method their route does not take (OPTIONS, a CORS preflight
 * among them; HEAD of a POST route; PUT, DELETE, PROPFIND …) as they answer the route itself
 * without a valid client certificate: 401 or 403 from the caller rule first, and only to an
 * identified caller 404. Never 405 (RFC 9110 §15.5.6 would require an Allow header) and never
 * Express's automatic OPTIONS answer, which lists the methods a path takes to anyone.
 */
export function surfaceGuard(deps: CallerDeps): RequestHandler {
  return async (req, _res, next) => {
    const routes = SURFACE.filter((r) => r.pattern.test(req.path));
    if (routes.length === 0 && !ADMIN_PREFIX.test(req.path)) return next();
    // Express answers HEAD with the GET route.
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    if (routes.some((r) => r.method === method)) return next();
    const accepts = routes.length ? [...new Set(routes.flatMap((r) => r.accepts))] : (['admin'] as const);
    await callerOf(deps, req, accepts);
    throw new BatonError('ERR_NOT_FOUND', 'no such route');
  };
}
