/** Where a CA's CRL and OCSP responder live under the public URL (CONTRACT "HTTP API"). */
const trim = (u: string): string => u.replace(/\/+$/, '');
export const crlUrl = (publicUrl: string, caId: string): string => `${trim(publicUrl)}/v1/crl?issuer=${caId}`;
export const ocspUrl = (publicUrl: string): string => `${trim(publicUrl)}/v1/ocsp`;
