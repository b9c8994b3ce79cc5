import { Router } from 'express';
import { crlIssuers } from '../../domain/crl-publisher';
import { BatonError } from '../../ground/errors';
import type { CrlRecord } from '../../domain/ports';
import { crlToPem } from '../../pki/crl';
import type { AppDeps } from '../ports';

/**
 * CRLs (CONTRACT: `GET /v1/crl` DER per signing CA via `?issuer=`, default the current signing CA;
 * `GET /v1/crl.pem` all current CRLs). Served from the database, so every replica serves the same
 * CRL; the ETag is the CRL number and caches may keep it until a bounded age before nextUpdate.
 */
export function crlRoutes(deps: AppDeps): Router {
  const r = Router();
  const cacheHeaders = (crls: CrlRecord[]) => {
    const now = deps.clock.now().getTime();
    const soonest = Math.min(...crls.map((c) => c.nextUpdate.getTime()));
    const maxAge = Math.max(0, Math.min(60, Math.floor((soonest - now) / 1000)));
    return {
      ETag: `"${crls.map((c) => `${c.caId}-${c.crlNumber}`).join('.')}"`,
      'Cache-Control': `public, max-age=${maxAge}`,
      'Last-Modified': new Date(Math.max(...crls.map((c) => c.thisUpdate.getTime()))).toUTCString(),
    };
  };

  r.get('/v1/crl', async (req, res) => {
    const kr = deps.keyring();
    const issuer = req.query.issuer === undefined ? kr.signing.record.id : String(req.query.issuer);
    // An outside CA of an upstream CA has no CRL from Baton (domain/crl-publisher.ts crlIssuers).
    if (!kr.all.some((c) => c.record.id === issuer && !c.outside))
      throw new BatonError('ERR_NOT_FOUND', 'no such issuer');
    const crl = await deps.crls.current(issuer);
    const headers = cacheHeaders([crl]);
    if (req.headers['if-none-match'] === headers.ETag) {
      res.status(304).set(headers).end();
      return;
    }
    res.status(200).set(headers).type('application/pkix-crl').send(crl.der);
  });

  r.get('/v1/crl.pem', async (req, res) => {
    const cas = crlIssuers(deps.keyring(), deps.clock.now());
    const crls = await Promise.all(cas.map((c) => deps.crls.current(c.record.id)));
    const headers = cacheHeaders(crls);
    if (req.headers['if-none-match'] === headers.ETag) {
      res.status(304).set(headers).end();
      return;
    }
    res
      .status(200)
      .set(headers)
      .type('application/x-pem-file')
      .send(crls.map((c) => crlToPem(c.der)).join(''));
  });
  return r;
}
