import { createPublicKey } from 'node:crypto';
import { Router } from 'express';
import type { AppDeps } from '../ports';

/**
 * Trust bundle: PEM roots, and the SPIFFE bundle format (SPIFFE Trust Domain and Bundle §4):
 * a JWK Set whose keys carry `use: "x509-svid"` and the root certificate in `x5c`.
 */
export function bundleRoutes(deps: AppDeps): Router {
  const r = Router();
  r.get('/v1/bundle', (_req, res) => {
    res
      .type('application/x-pem-file')
      .set('Cache-Control', 'public, max-age=300')
      .send(deps.keyring().bundlePem);
  });
  r.get('/v1/bundle.jwks', (_req, res) => {
    const kr = deps.keyring();
    const keys = kr.roots.map((root) => {
      const jwk = createPublicKey({ key: root.spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
      return { use: 'x509-svid', ...jwk, x5c: [root.record.certificateDer.toString('base64')] };
    });
    res
      .type('application/json')
      .set('Cache-Control', 'public, max-age=300')
      .json({ keys, spiffe_sequence: kr.roots.length, spiffe_refresh_hint: 300 });
  });
  return r;
}
