import { Router } from 'express';
import { entryCache } from '../../domain/entry-cache';
import type { NodeRecord } from '../../domain/ports';
import { issueWorkloadSvid } from '../../domain/workload-identity';
import type { AppDeps } from '../app';
import { auditContext } from '../audit-context';
import { authenticateNode, nodePeer, requireNode } from '../authorization';
import { timedIssuance } from '../metrics';
import { renderEntry, renderIssuance } from '../render';
import { body } from '../validate';

/** Node mTLS: the entries a node may mint, and minting them. Authorization runs per request. */
export function workloadIdentityRoutes(deps: AppDeps): Router {
  const r = Router();
  const authDeps = {
    clock: deps.clock,
    repos: deps.storage,
    trustDomain: deps.installation.trustDomain,
  };
  const auth = requireNode(authDeps);
  const nodeOf = (locals: Record<string, unknown>) => (locals.node as { node: NodeRecord }).node;
  // Per replica, never trusted: the recording statement re-checks the entry (domain/entry-cache.ts).
  const entries = entryCache(deps.storage.entries, { nowMs: deps.monotonicMs });

  r.get('/v1/entries', auth, async (_req, res) => {
    const entries = await deps.storage.entries.list({ parentNodeId: nodeOf(res.locals).id });
    res.json({ entries: entries.map((e) => renderEntry(e, deps.installation.workloadTtlMs)) });
  });

  // Authentication and authorization run in issueWorkloadSvid, inside the statement that records
  // the certificate (or, on any refusal, in full before the refusal is answered).
  r.post('/v1/workload-svids', async (req, res) => {
    const peer = nodePeer(req, deps.installation.trustDomain);
    const authenticate = async () => (await authenticateNode(authDeps, req)).node;
    let b: Record<string, unknown>;
    try {
      b = body(req);
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
          audit: auditContext(req, `spiffe://${deps.installation.trustDomain}/node/${peer.nodeId}`),
          authenticate,
        },
      ),
    );
    res.status(201).json(renderIssuance(issued, { withNodeId: false }));
  });
  return r;
}
