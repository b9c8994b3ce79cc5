import type { IncomingMessage } from 'node:http';
import { Router } from 'express';
import { type EntrySource, entryCache } from '../../domain/entry-cache';
import type { NodeRecord } from '../../domain/ports';
import { nodeSpiffeId } from '../../domain/trust-domain';
import { issueWorkloadSvid } from '../../domain/workload-identity';
import type { AppDeps } from '../app';
import { auditContext } from '../audit-context';
import { authDepsOf, authenticateNode, nodePeer, requireNode } from '../authorization';
import { timedIssuance } from '../metrics';
import { renderEntry, renderIssuance } from '../render';
import { jsonObject } from '../validate';

/** POST /v1/workload-svids for a request whose JSON body has been read: the 201 body, or a throw. */
export type WorkloadIssuer = (
  req: IncomingMessage,
  parsedBody: unknown,
) => Promise<ReturnType<typeof renderIssuance>>;

/**
 * The one implementation of POST /v1/workload-svids, shared by the Express route and the fast path
 * (http/fast-path.ts). Authentication and authorization run in issueWorkloadSvid, inside
 * the statement that records the certificate (or, on any refusal, in full before the refusal).
 */
export function workloadIssuer(
  deps: AppDeps,
  entries: EntrySource = entryCache(deps.storage.entries, { nowMs: deps.monotonicMs }),
): WorkloadIssuer {
  const td = deps.installation.trustDomain;
  const authDeps = authDepsOf(deps);
  return async (req, parsedBody) => {
    const peer = nodePeer(req, td);
    const authenticate = async () => (await authenticateNode(authDeps, req)).node;
    let b: Record<string, unknown>;
    try {
      b = jsonObject(parsedBody);
    } catch (e) {
      await authenticate();
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
        {
          peer,
          spiffeId: b.spiffe_id,
          csr: b.csr,
          audit: auditContext(req, nodeSpiffeId(td, peer.nodeId)),
          authenticate,
        },
      ),
    );
    return renderIssuance(issued, { withNodeId: false });
  };
}

/** Node mTLS: the entries a node may mint, and minting them. Authorization runs per request. */
export function workloadIdentityRoutes(deps: AppDeps, issue: WorkloadIssuer): Router {
  const r = Router();
  const auth = requireNode(authDepsOf(deps));
  const nodeOf = (locals: Record<string, unknown>) => (locals.node as { node: NodeRecord }).node;

  r.get('/v1/entries', auth, async (_req, res) => {
    const entries = await deps.storage.entries.list({ parentNodeId: nodeOf(res.locals).id });
    res.json({ entries: entries.map((e) => renderEntry(e, deps.installation.workloadTtlMs)) });
  });

  r.post('/v1/workload-svids', async (req, res) => {
    res.status(201).json(await issue(req, req.body));
  });
  return r;
}
