import { Router } from 'express';
import { attestNode, renewNode } from '../../domain/node-identity';
import type { AppDeps } from '../app';
import { auditContext } from '../audit-context';
import { timedIssuance } from '../metrics';
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
    const issued = await timedIssuance(deps.metrics, 'node', 'attest', () =>
      attestNode(identityDeps(), { method, csr, payload, audit: auditContext(req, 'anonymous') }),
    );
    res.status(201).json(renderIssuance(issued, { withNodeId: true }));
  });
  r.post('/v1/renew', async (req, res) => {
    const peer = peerCertificate(req);
    const csr = body(req).csr;
    const issued = await timedIssuance(deps.metrics, 'node', 'renew', () =>
      renewNode(identityDeps(), { peerSerial: peer.serial, csr, audit: auditContext(req, peer.spiffeId) }),
    );
    res.status(201).json(renderIssuance(issued, { withNodeId: true }));
  });
  return r;
}
