import { Router } from 'express';
import { attestNode, renewNode } from '../../domain/node-identity';
import type { AppDeps } from '../app';
import { auditContext } from '../audit-context';
import { peerCertificate } from '../peer-cert';
import { renderIssuance } from '../render';
import { body } from '../validate';

/** POST /v1/attest (unauthenticated: the evidence authenticates) and POST /v1/renew (node mTLS). */
export function nodeIdentityRoutes(deps: AppDeps): Router {
  const r = Router();
  const identityDeps = () => ({
    clock: deps.clock,
    storage: deps.storage,
    keyring: deps.keyring(),
    installation: deps.installation,
    attestors: deps.attestors,
    random: deps.random,
  });
  r.post('/v1/attest', async (req, res) => {
    const { method, csr, ...payload } = body(req);
    const issued = await attestNode(identityDeps(), {
      method,
      csr,
      payload,
      audit: auditContext(req, 'anonymous'),
    });
    deps.metrics.certificatesIssued.inc({ kind: 'node' });
    res.status(201).json(renderIssuance(issued, { withNodeId: true }));
  });
  r.post('/v1/renew', async (req, res) => {
    const peer = peerCertificate(req);
    const issued = await renewNode(identityDeps(), {
      peerSerial: peer.serial,
      csr: body(req).csr,
      audit: auditContext(req, peer.spiffeId),
    });
    deps.metrics.certificatesIssued.inc({ kind: 'node' });
    res.status(201).json(renderIssuance(issued, { withNodeId: true }));
  });
  return r;
}
