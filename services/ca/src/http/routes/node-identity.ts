import type { IncomingMessage } from 'node:http';
import { Router } from 'express';
import { attestNode, renewNode } from '../../domain/node-identity';
import type { AppDeps } from '../app';
import { auditContext } from '../audit-context';
import { timedIssuance } from '../metrics';
import { peerCertificate } from '../peer-cert';
import { renderIssuance } from '../render';
import { body, jsonObject } from '../validate';

const identityDepsOf = (deps: AppDeps) => ({
  clock: deps.clock,
  storage: deps.storage,
  keyring: deps.keyring(),
  installation: deps.installation,
  attestors: deps.attestors,
  random: deps.random,
});

/** POST /v1/renew for a request whose JSON body has been read: the 201 body, or a throw. */
export type NodeRenewer = (
  req: IncomingMessage,
  parsedBody: unknown,
) => Promise<ReturnType<typeof renderIssuance>>;

/**
 * The one implementation of POST /v1/renew, shared by the Express route and the fast path
 * (http/fast-path.ts): the node is the TLS-verified client certificate, checked in the database by
 * renewNode (current, not superseded or revoked, node active) in the statement that records the
 * new certificate.
 */
export function nodeRenewer(deps: AppDeps): NodeRenewer {
  return async (req, parsedBody) => {
    const peer = peerCertificate(req);
    const csr = jsonObject(parsedBody).csr;
    const issued = await timedIssuance(deps.metrics, 'node', 'renew', () =>
      renewNode(identityDepsOf(deps), {
        peerSerial: peer.serial,
        csr,
        audit: auditContext(req, peer.spiffeId),
      }),
    );
    return renderIssuance(issued, { withNodeId: true });
  };
}

/** POST /v1/attest (unauthenticated: the evidence authenticates) and POST /v1/renew (node mTLS). */
export function nodeIdentityRoutes(deps: AppDeps, renew: NodeRenewer): Router {
  const r = Router();
  r.post('/v1/attest', async (req, res) => {
    const { method, csr, ...payload } = body(req);
    const issued = await timedIssuance(deps.metrics, 'node', 'attest', () =>
      attestNode(identityDepsOf(deps), { method, csr, payload, audit: auditContext(req, 'anonymous') }),
    );
    res.status(201).json(renderIssuance(issued, { withNodeId: true }));
  });
  r.post('/v1/renew', async (req, res) => {
    res.status(201).json(await renew(req, req.body));
  });
  return r;
}
