import { createHash } from 'node:crypto';
import express, { Router } from 'express';
import { BatonError } from '../../ground/errors';
import { answerOcsp } from '../../domain/ocsp-responder';
import { MAX_OCSP_REQUEST_OCTETS, ocspErrorResponse } from '../../pki/ocsp';
import type { AppDeps } from '../ports';

/**
 * OCSP (RFC 6960 Appendix A): POST with an application/ocsp-request body, or GET with the
 * base64 DER in the path (RFC 5019 §5 caching rules: cacheable when there is no nonce).
 * A request that does not parse gets the unsigned `malformedRequest` response of RFC 6960 §2.3,
 * which OCSP clients understand, with HTTP 400 for everything else that reads the status (as
 * cfssl's responder does). A well-formed request about certificates that none of our CAs issued
 * gets the unsigned `unauthorized` response (RFC 5019 §2.2.3) with HTTP 200, uncached: it is an
 * answer, not a transport error. A body over the limit stays the JSON 413 of every route.
 */
export function ocspRoutes(deps: AppDeps): Router {
  const r = Router();
  const malformed = (res: express.Response): void =>
    void res.status(400).type('application/ocsp-response').send(ocspErrorResponse('malformedRequest'));
  const respond = async (der: Buffer, res: express.Response) => {
    let out: Awaited<ReturnType<typeof answerOcsp>>;
    try {
      out = await answerOcsp(
        { clock: deps.clock, keyring: deps.keyring(), certificates: deps.storage.certificates },
        der,
      );
    } catch (err) {
      if (!(err instanceof BatonError && err.code === 'ERR_BAD_REQUEST')) throw err;
      malformed(res);
      return;
    }
    res.status(200).type('application/ocsp-response');
    if (out.kind === 'signed' && out.cacheable) {
      const maxAge = Math.max(0, Math.floor((out.nextUpdate.getTime() - deps.clock.now().getTime()) / 1000));
      res.set({
        'Cache-Control': `public, max-age=${Math.min(maxAge, 300)}, no-transform, must-revalidate`,
        ETag: `"${createHash('sha1').update(out.der).digest('hex')}"`,
      });
    }
    res.send(out.der);
  };
  r.post('/v1/ocsp', express.raw({ type: () => true, limit: MAX_OCSP_REQUEST_OCTETS }), async (req, res) => {
    if (!Buffer.isBuffer(req.body) || req.body.length === 0) return malformed(res);
    await respond(req.body, res);
  });
  r.get('/v1/ocsp/*path', async (req, res) => {
    // Express decoded the path once; a second decode tolerates double-encoding clients, and its
    // URIError on a stray "%" (e.g. %25ZZ) is a malformed request, not a 500.
    let encoded: string;
    try {
      encoded = decodeURIComponent((req.params as { path: string[] }).path.join('/'));
    } catch {
      return malformed(res);
    }
    if (encoded.length > MAX_OCSP_REQUEST_OCTETS * 2 || !/^[A-Za-z0-9+/=_-]+$/.test(encoded)) {
      return malformed(res);
    }
    await respond(Buffer.from(encoded.replace(/-/g, '+').replace(/_/g, '/'), 'base64'), res);
  });
  return r;
}
