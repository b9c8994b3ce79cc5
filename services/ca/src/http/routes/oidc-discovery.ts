import { Router } from 'express';
import { jwtPublicJwk, publishedJwtKeys } from '../../domain/jwt-keys';
import { oidcJwksUrl } from '../../domain/urls';
import type { AppDeps } from '../ports';

/**
 * OpenID Connect Discovery 1.0 §3–4, for relying parties that validate Baton's JWT-SVIDs as ID
 * tokens (cloud IAM federation): `issuer` is the public URL exactly as JWT-SVIDs carry it in `iss`
 * (§4.3: they must be identical), `jwks_uri` a JWK Set of the JWT-SVID signing keys alone.
 * Baton is no OpenID Provider (no authorization endpoint): only what validating a token needs.
 *
 * Not the SPIFFE bundle: there the keys carry `use: "jwt-svid"`, which an OIDC relying party does
 * not take for a signing key (RFC 7517 §4.2 defines only "sig" and "enc"; `jose`, for one, skips
 * the key), so the relying party would find none. `/v1/oidc/jwks` publishes the same keys, at the
 * same times, as `use: "sig"` with `alg: "ES256"` (SPIRE's OIDC discovery provider does the same).
 */
export function oidcDiscoveryRoutes(deps: AppDeps): Router {
  const r = Router();
  r.get('/.well-known/openid-configuration', (_req, res) => {
    const issuer = deps.keyring().publicUrl;
    res
      .type('application/json')
      .set('Cache-Control', 'public, max-age=300')
      .json({
        issuer,
        jwks_uri: oidcJwksUrl(issuer),
        id_token_signing_alg_values_supported: ['ES256'],
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
      });
  });
  r.get('/v1/oidc/jwks', (_req, res) => {
    const keys = publishedJwtKeys(deps.keyring().jwt, deps.clock.now()).map((k) => ({
      ...jwtPublicJwk(k.spki),
      kid: k.kid,
      use: 'sig',
      alg: 'ES256',
    }));
    res.type('application/json').set('Cache-Control', 'public, max-age=300').json({ keys });
  });
  return r;
}
