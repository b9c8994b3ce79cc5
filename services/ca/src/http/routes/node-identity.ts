import type { IncomingMessage } from 'node:http';
import { Router } from 'express';
import type { NodeClaim } from '../../domain/caller';
import {
  type AttestParams,
  attestNode,
  type NodeIdentityDeps,
  type RenewParams,
  recordAttestationRefused,
  renewNode,
} from '../../domain/node-identity';
import type { AuditContext } from '../../domain/audit';
import { type TokenSource, tokenCache } from '../../domain/token-cache';
import { attestorFor, readEvidence } from '../attestation-evidence';
import type { AppDeps } from '../ports';
import { auditContext } from '../audit-context';
import { nodeClaimOf } from '../authorization';
import { timedIssuance } from '../metrics';
import { renderIssuance } from '../render';
import { csrField, jsonObject } from '../validate';

const identityDepsOf = (deps: AppDeps): NodeIdentityDeps => ({
  clock: deps.clock,
  storage: deps.storage,
  keyring: deps.keyring(),
  installation: deps.installation,
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
 * renewNode through the caller rule (domain/caller.ts), in the statement that records the new
 * certificate.
 */
export function nodeRenewer(deps: AppDeps): NodeRenewer {
  return async (req, parsedBody) => {
    const claim = nodeClaimOf(req, deps.installation.trustDomain);
    const params = readRenewParams(claim, parsedBody, req);
    const issued = await timedIssuance(deps.metrics, 'node', 'renew', () =>
      renewNode(identityDepsOf(deps), params),
    );
    return renderIssuance(issued, { withNodeId: true });
  };
}

/** The body of POST /v1/renew: `{"csr": PEM}`. */
function readRenewParams(claim: NodeClaim, parsedBody: unknown, req: IncomingMessage): RenewParams {
  const b = jsonObject(parsedBody);
  return { claim, csr: csrField(b), audit: auditContext(req, claim.peer.spiffeId) };
}

/**
 * The body of POST /v1/attest: `{"method", "csr", …evidence}`, in the order of the checks
 * (http/attestation-evidence.ts): the method, the CSR's form and key policy, the method's evidence.
 */
function readAttestParams(deps: AppDeps, b: Record<string, unknown>, audit: AuditContext): AttestParams {
  const attestor = attestorFor(deps.attestors, b.method);
  const csr = csrField(b);
  const { method: _method, csr: _csr, ...payload } = b;
  return { evidence: readEvidence(attestor, payload), csr, audit };
}

/**
 * What the refusal's audit row says of the method: only a bounded string is recorded; String() of
 * hostile JSON throws ({"toString":1}) or overflows the stack (deep arrays): a 400 becomes a 500.
 */
const methodLabel = (m: unknown): string => (typeof m === 'string' ? m.slice(0, 64) : `(${typeof m})`);

/** POST /v1/attest for a request whose JSON body has been read: the 201 body, or a throw. */
export type NodeAttester = (
  req: IncomingMessage,
  parsedBody: unknown,
) => Promise<ReturnType<typeof renderIssuance>>;

/**
 * The one implementation of POST /v1/attest (unauthenticated: the evidence authenticates), shared
 * by the Express route and the fast path (http/fast-path.ts). Join tokens are read through a
 * per-replica cache of multi-use tokens that the recording statement re-checks
 * (domain/token-cache.ts).
 */
export function nodeAttester(
  deps: AppDeps,
  tokens: TokenSource = tokenCache(deps.storage.tokens, { nowMs: deps.monotonicMs }),
): NodeAttester {
  return async (req, parsedBody) => {
    const b = jsonObject(parsedBody);
    const audit = auditContext(req, 'anonymous');
    let params: AttestParams;
    try {
      params = readAttestParams(deps, b, audit);
    } catch (e) {
      await recordAttestationRefused(identityDepsOf(deps), audit, methodLabel(b.method), e);
      throw e;
    }
    const issued = await timedIssuance(deps.metrics, 'node', 'attest', () =>
      attestNode({ ...identityDepsOf(deps), tokens }, params),
    );
    return renderIssuance(issued, { withNodeId: true });
  };
}

/** POST /v1/attest and POST /v1/renew (node mTLS), for Express. */
export function nodeIdentityRoutes(attest: NodeAttester, renew: NodeRenewer): Router {
  const r = Router();
  r.post('/v1/attest', async (req, res) => {
    res.status(201).json(await attest(req, req.body));
  });
  r.post('/v1/renew', async (req, res) => {
    res.status(201).json(await renew(req, req.body));
  });
  return r;
}
