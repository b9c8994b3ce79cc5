import type { RequestListener } from 'node:http';
import express, { type Express, type RequestHandler } from 'express';
import { BatonError } from '../ground/errors';
import { authDepsOf } from './authorization';
import { errorHandler } from './errors';
import type { AppDeps } from './ports';
import { ATTEST_ROUTE, fastPath, JWT_SVID_ROUTE, RENEW_ROUTE, WORKLOAD_ROUTE } from './fast-path';
import {
  ATTEST_QUOTA,
  abuseControls,
  BODY_LIMIT,
  byClient,
  byPeer,
  headerLimit,
  JWT_QUOTA,
  RENEW_QUOTA,
  WORKLOAD_QUOTA,
} from './abuse-controls';
import { requestContext, secureHeaders } from './request-context';
import { surfaceGuard } from './surface-guard';
import { attestChallengeRoutes } from './routes/attest-challenge';
import { bundleRoutes } from './routes/bundle';
import { crlRoutes } from './routes/crl';
import { adminAdminRoutes } from './routes/admin-admins';
import { adminCaRoutes } from './routes/admin-ca';
import { adminAuditRoutes } from './routes/admin-audit';
import { adminAuditRetentionRoutes } from './routes/admin-audit-retention';
import { adminEntryRoutes } from './routes/admin-entries';
import { adminNodeRoutes } from './routes/admin-nodes';
import { adminTpmRoutes } from './routes/admin-tpm';
import { healthRoutes } from './routes/health';
import { jwtSvidMinter, jwtSvidRoutes } from './routes/jwt-svid';
import { nodeAttester, nodeIdentityRoutes, nodeRenewer } from './routes/node-identity';
import { oidcDiscoveryRoutes } from './routes/oidc-discovery';
import { ocspRoutes } from './routes/ocsp';
import { revocationRoutes } from './routes/revocation';
import { workloadIdentityRoutes, workloadIssuer } from './routes/workload-identity';

/**
 * A body declared larger than any route accepts is refused before a byte of it is read, and the
 * connection closed: body-parser would first drain the whole body (10 MB, or until the request
 * timeout for one that never arrives) and only then answer 413.
 */
const refuseDeclaredOversize: RequestHandler = (req, res, next) => {
  if (Number(req.headers['content-length']) > BODY_LIMIT) {
    res.set('Connection', 'close');
    return next(new BatonError('ERR_BODY_TOO_LARGE', 'request body too large'));
  }
  next();
};

/**
 * What every Baton Express app starts with: request context and logging, security headers, header
 * and body-size limits, and the abuse controls, which run before any body is read or any database
 * is asked (a refusal costs little). The caller adds the per-route limits and the routes.
 */
function baseApp(deps: AppDeps): { app: Express; limit: ReturnType<typeof abuseControls> } {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestContext(deps.log, deps.metrics));
  app.use(secureHeaders);
  app.use(headerLimit);
  app.use(refuseDeclaredOversize);
  const limit = abuseControls(deps.limits, deps.metrics, deps.monotonicMs);
  app.use(limit.concurrency);
  return { app, limit };
}

/**
 * The plain-HTTP publication listener (`--public-http-url`, issue 18): the trust bundle, the CRLs and
 * OCSP, which are public, signed objects that a relying party must be able to fetch without TLS
 * (RFC 5280 §4.2.1.13: CRL Distribution Points are http or ldap; RFC 6960 Appendix A: OCSP over
 * HTTP). Nothing else: no caller can authenticate here, so every other path is 404.
 */
export function buildPublicationApp(deps: AppDeps): RequestListener {
  const { app, limit } = baseApp(deps);
  app.post('/v1/ocsp', limit.ocsp);
  app.get('/v1/ocsp/*path', limit.ocsp);
  app.get(['/v1/crl', '/v1/crl.pem'], limit.crl);
  const published = ['/v1/bundle', '/v1/bundle.jwks', '/.well-known/openid-configuration', '/v1/oidc/jwks'];
  app.get(published, limit.bundle);
  app.use(ocspRoutes(deps));
  app.use(crlRoutes(deps));
  app.get(['/v1/bundle', '/v1/bundle.jwks'], bundleRoutes(deps));
  app.get(['/.well-known/openid-configuration', '/v1/oidc/jwks'], oidcDiscoveryRoutes(deps));
  app.use((_req, _res, next) => next(new BatonError('ERR_NOT_FOUND', 'no such route')));
  app.use(errorHandler(deps.log, deps.metrics));
  return app;
}

/**
 * Builds the HTTP application; it never listens (tests and main.ts decide that). Workload SVID,
 * JWT-SVID, renewal and attestation requests in the plain case take the fast path (fast-path.ts);
 * everything else, Express.
 */
export function buildApp(deps: AppDeps): RequestListener & { express: Express } {
  const { app, limit } = baseApp(deps);
  app.post('/v1/attest', limit.attest);
  app.post('/v1/attest/challenge', limit.challenge);
  app.post('/v1/ocsp', limit.ocsp);
  app.get('/v1/ocsp/*path', limit.ocsp);
  app.get(['/v1/crl', '/v1/crl.pem'], limit.crl);
  // One bucket for the trust bundle in both formats and the OIDC discovery document that points at it.
  app.get(
    [
      '/v1/bundle',
      '/v1/bundle.jwks',
      '/v1/ca-certificates',
      '/.well-known/openid-configuration',
      '/v1/oidc/jwks',
    ],
    limit.bundle,
  );
  app.post('/v1/renew', limit.renew);
  app.post('/v1/workload-svids', limit.workload);
  app.post('/v1/jwt-svids', limit.jwt);
  // Before any router: Express would answer OPTIONS itself, listing the methods a path takes.
  app.use(surfaceGuard(authDepsOf(deps)));
  // OCSP bodies are DER, parsed by their own route before the JSON parser sees them.
  app.use(ocspRoutes(deps));
  app.use(express.json({ limit: BODY_LIMIT, type: ['application/json', 'application/*+json'] }));
  // The busiest routes first: Express tries each router in turn.
  const issueWorkload = workloadIssuer(deps);
  app.use(workloadIdentityRoutes(deps, issueWorkload));
  const mintJwt = jwtSvidMinter(deps);
  app.use(jwtSvidRoutes(mintJwt));
  const renewNode = nodeRenewer(deps);
  const attestNode = nodeAttester(deps);
  app.use(nodeIdentityRoutes(attestNode, renewNode));
  app.use(bundleRoutes(deps));
  app.use(oidcDiscoveryRoutes(deps));
  app.use(healthRoutes(deps));
  app.use(attestChallengeRoutes(deps));
  app.use(adminNodeRoutes(deps));
  app.use(adminEntryRoutes(deps));
  app.use(adminAuditRoutes(deps));
  app.use(adminAuditRetentionRoutes(deps));
  app.use(adminAdminRoutes(deps));
  app.use(adminCaRoutes(deps));
  app.use(adminTpmRoutes(deps));
  app.use(crlRoutes(deps));
  app.use(revocationRoutes(deps));
  app.use((_req, _res, next) => next(new BatonError('ERR_NOT_FOUND', 'no such route')));
  app.use(errorHandler(deps.log, deps.metrics));
  const fast = fastPath({
    routes: [
      {
        path: WORKLOAD_ROUTE,
        quotaKey: byPeer,
        take: limit.takeWorkload,
        quotaName: WORKLOAD_QUOTA,
        handle: issueWorkload,
      },
      { path: JWT_SVID_ROUTE, quotaKey: byPeer, take: limit.takeJwt, quotaName: JWT_QUOTA, handle: mintJwt },
      {
        path: RENEW_ROUTE,
        quotaKey: byPeer,
        take: limit.takeRenew,
        quotaName: RENEW_QUOTA,
        handle: renewNode,
      },
      {
        path: ATTEST_ROUTE,
        quotaKey: byClient,
        take: limit.takeAttest,
        quotaName: ATTEST_QUOTA,
        handle: attestNode,
      },
    ],
    controls: limit,
    log: deps.log,
    metrics: deps.metrics,
  });
  const listener: RequestListener = (req, res) => {
    if (!fast(req, res)) app(req, res);
  };
  // The Express app stays reachable (route tables are checked against it in tests).
  return Object.assign(listener, { express: app });
}
