/** Where a CA's CRL and OCSP responder live under the public URL (CONTRACT "HTTP API"). */
const trim = (u: string): string => u.replace(/\/+$/, '');
/**
 * Where CRL Distribution Points and OCSP URLs point (RFC 5280 §4.2.1.13 wants http or ldap there):
 * the publication URL given now (`server --public-http-url`), else the installation's, else the
 * public (https) URL, as before there was one.
 */
export const publicationUrlOf = (
  installation: { publicUrl: string; publicHttpUrl?: string },
  override: { publicUrl?: string; publicHttpUrl?: string } = {},
): string =>
  override.publicHttpUrl ?? installation.publicHttpUrl ?? override.publicUrl ?? installation.publicUrl;

export const crlUrl = (publicUrl: string, caId: string): string => `${trim(publicUrl)}/v1/crl?issuer=${caId}`;
export const ocspUrl = (publicUrl: string): string => `${trim(publicUrl)}/v1/ocsp`;
/** The SPIFFE bundle (JWK Set). */
export const jwksUrl = (publicUrl: string): string => `${trim(publicUrl)}/v1/bundle.jwks`;

/** The JWT-SVID signing keys as an OIDC relying party takes them: the discovery document's `jwks_uri`. */
export const oidcJwksUrl = (publicUrl: string): string => `${trim(publicUrl)}/v1/oidc/jwks`;
