import { Router } from 'express';
import type { NodeRecord } from '../../domain/ports';
import { issueWorkloadSvid } from '../../domain/workload-identity';
import type { AppDeps } from '../app';
import { auditContext } from '../audit-context';
import { requireNode } from '../authorization';
import { timedIssuance } from '../metrics';
import { renderEntry, renderIssuance } from '../render';
import { body } from '../validate';

/** Node mTLS: the entries a node may mint, and minting them. Authorization runs per request. */
export function workloadIdentityRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = requireNode({
    clock: deps.clock,
    repos: deps.storage,
    trustDomain: deps.installation.trustDomain,
  });
  const nodeOf = (locals: Record<string, unknown>) => (locals.node as { node: NodeRecord }).node;

  r.get('/v1/entries', auth, async (_req, res) => {
    const entries = await deps.storage.entries.list({ parentNodeId: nodeOf(res.locals).id });
    res.json({ entries: entries.map((e) => renderEntry(e, deps.installation.workloadTtlMs)) });
  });

  r.post('/v1/workload-svids', auth, async (req, res) => {
    const b = body(req);
    const node = nodeOf(res.locals);
    const issued = await timedIssuance(deps.metrics, 'workload', 'workload', () =>
      issueWorkloadSvid(
        {
          clock: deps.clock,
          storage: deps.storage,
          keyring: deps.keyring(),
          installation: deps.installation,
          random: deps.random,
        },
        {
          node,
          spiffeId: b.spiffe_id,
          csr: b.csr,
          audit: auditContext(req, `spiffe://${deps.installation.trustDomain}/node/${node.id}`),
        },
      ),
    );
    res.status(201).json(renderIssuance(issued, { withNodeId: false }));
  });
  return r;
}
