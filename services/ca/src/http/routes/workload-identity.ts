import type { IncomingMessage } from 'node:http';
import { Router } from 'express';
import { type CallerOf, identifyClaim, type NodeClaim } from '../../domain/caller';
import { type EntrySource, entryCache } from '../../domain/entry-cache';
import { issueWorkloadSvid, type WorkloadSvidParams } from '../../domain/workload-identity';
import type { AppDeps } from '../ports';
import { auditContext } from '../audit-context';
import { authDepsOf, nodeClaimOf, requireCaller } from '../authorization';
import { timedIssuance } from '../metrics';
import { renderEntry, renderIssuance } from '../render';
import { csrField, jsonObject, requestedSpiffeId } from '../validate';

/** POST /v1/workload-svids for a request whose JSON body has been read: the 201 body, or a throw. */
export type WorkloadIssuer = (
  req: IncomingMessage,
  parsedBody: unknown,
) => Promise<ReturnType<typeof renderIssuance>>;

/**
 * The one implementation of POST /v1/workload-svids, shared by the Express route and the fast path
 * (http/fast-path.ts). The caller rule (domain/caller.ts) runs in issueWorkloadSvid, inside the
 * statement that records the certificate; on any refusal, and before a body error is reported, it
 * runs in full, so a caller that is not an authorized node learns only that.
 */
export function workloadIssuer(
  deps: AppDeps,
  entries: EntrySource = entryCache(deps.storage.entries, { nowMs: deps.monotonicMs }),
): WorkloadIssuer {
  const td = deps.installation.trustDomain;
  const authDeps = authDepsOf(deps);
  return async (req, parsedBody) => {
    const claim = nodeClaimOf(req, td);
    let params: WorkloadSvidParams;
    try {
      params = readWorkloadSvidParams(claim, parsedBody, req);
    } catch (e) {
      await identifyClaim(authDeps, claim);
      throw e;
    }
    const issued = await timedIssuance(deps.metrics, 'workload', 'workload', () =>
      issueWorkloadSvid(
        {
          clock: deps.clock,
          storage: deps.storage,
          keyring: deps.keyring(),
          installation: deps.installation,
          random: deps.random,
          entries,
        },
        params,
      ),
    );
    return renderIssuance(issued, { withNodeId: false });
  };
}

/** The body of POST /v1/workload-svids: `{"spiffe_id", "csr"}`. */
function readWorkloadSvidParams(
  claim: NodeClaim,
  parsedBody: unknown,
  req: IncomingMessage,
): WorkloadSvidParams {
  const b = jsonObject(parsedBody);
  const spiffeId = requestedSpiffeId(b);
  return { claim, spiffeId, csr: csrField(b), audit: auditContext(req, claim.peer.spiffeId) };
}

/** Node mTLS: the entries a node may mint, and minting them. Authorization runs per request. */
export function workloadIdentityRoutes(deps: AppDeps, issue: WorkloadIssuer): Router {
  const r = Router();
  const auth = requireCaller(authDepsOf(deps), 'GET /v1/entries');
  const nodeOf = (locals: Record<string, unknown>) => (locals.caller as CallerOf<'node'>).node;

  r.get('/v1/entries', auth, async (_req, res) => {
    const entries = await deps.storage.entries.list({ parentNodeId: nodeOf(res.locals).id });
    res.json({ entries: entries.map((e) => renderEntry(e, deps.installation.workloadTtlMs)) });
  });

  r.post('/v1/workload-svids', async (req, res) => {
    res.status(201).json(await issue(req, req.body));
  });
  return r;
}
