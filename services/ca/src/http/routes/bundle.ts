import { createPublicKey } from 'node:crypto';
import { Router } from 'express';
import { jwksSequence, jwtPublicJwk, publishedJwtKeys } from '../../domain/jwt-keys';
import type { AppDeps } from '../ports';

/** How often (seconds) a bundle consumer should fetch again (SPIFFE Trust Domain and Bundle §4.1.2). */
const REFRESH_HINT_S = 300;

/**
 * Each root added to the bundle counts once, and once more when a root rotation's finish drops it,
 * so that spiffe_sequence only grows (SPIFFE Trust Domain and Bundle §4.1.1).
 */
const rootChanges = (kr: ReturnType<AppDeps['keyring']>): number =>
  kr.all.filter((c) => c.record.kind === 'root').length +
  kr.all.filter((c) => c.record.kind === 'root' && !c.record.active).length;

/**
 * Trust bundle: PEM roots, and the SPIFFE bundle format (SPIFFE Trust Domain and Bundle §4): a JWK
 * Set whose keys carry `use: "x509-svid"` and the root certificate in `x5c`, and `use: "jwt-svid"`
 * with a `kid` for each published JWT-SVID signing key (domain/jwt-keys.ts), public members only.
 */
export function bundleRoutes(deps: AppDeps): Router {
  const r = Router();
  r.get('/v1/bundle', (_req, res) => {
    res
      .type('application/x-pem-file')
      .set('Cache-Control', `public, max-age=${REFRESH_HINT_S}`)
      .send(deps.keyring().bundlePem);
  });
  // The signing CA's certificates (the cross-certificate first during a root rotation), as every
  // leaf's chain carries them: a node that pins one root fetches them before its first TLS
  // connection, since OpenSSL would follow only the first certificate of the server's chain
  // (common/src/trust-store.ts). Public, as the leaves that carry them.
  r.get('/v1/ca-certificates', (_req, res) => {
    res
      .type('application/x-pem-file')
      .set('Cache-Control', `public, max-age=${REFRESH_HINT_S}`)
      .send(deps.keyring().signing.chainPem);
  });
  r.get('/v1/bundle.jwks', (_req, res) => {
    const kr = deps.keyring();
    const now = deps.clock.now();
    const x509 = kr.roots.map((root) => {
      const jwk = createPublicKey({ key: root.spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
      return { use: 'x509-svid', ...jwk, x5c: [root.record.certificateDer.toString('base64')] };
    });
    const jwt = publishedJwtKeys(kr.jwt, now).map((k) => ({
      use: 'jwt-svid',
      ...jwtPublicJwk(k.spki),
      kid: k.kid,
    }));
    res
      .type('application/json')
      .set('Cache-Control', `public, max-age=${REFRESH_HINT_S}`)
      .json({
        keys: [...x509, ...jwt],
        spiffe_sequence: jwksSequence(rootChanges(kr), kr.jwt.keys, now),
        spiffe_refresh_hint: REFRESH_HINT_S,
      });
  });
  return r;
}
