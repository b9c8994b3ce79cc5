import { Router } from 'express';
import { BatonError } from '../../ground/errors';
import { readListPage } from '../../domain/admin-lists';
import { issueJoinToken } from '../../domain/join-token';
import type { AppDeps } from '../ports';
import { auditContext } from '../audit-context';
import { type AdminIdentity, authDepsOf, requireAdmin } from '../authorization';
import { readNodeListQuery } from '../params/admin-lists';
import { readCreateTokenParams } from '../params/tokens';
import { renderCertificate, renderNode } from '../render';

/** Join tokens and nodes, for admins (CONTRACT "HTTP API", admin mTLS). */
export function adminNodeRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);

  r.post('/v1/admin/tokens', requireAdmin(auth, 'POST /v1/admin/tokens'), async (req, res) => {
    const params = readCreateTokenParams(req.body);
    const admin = res.locals.admin as AdminIdentity;
    const { token, record } = await issueJoinToken(
      { clock: deps.clock, storage: deps.storage },
      { ...params, createdBy: admin.spiffeId, pin: deps.keyring().pin },
      auditContext(req, admin.spiffeId),
    );
    res.status(201).json({
      token,
      id: record.id,
      role: record.role,
      expires_at: record.expiresAt.toISOString(),
      uses: record.usesAllowed,
      node_name: record.nodeName,
    });
  });

  // CONTRACT "Fleet scale": one page by node id, `next` the cursor of the following one.
  r.get('/v1/admin/nodes', requireAdmin(auth, 'GET /v1/admin/nodes'), async (req, res) => {
    const { filter, page } = readNodeListQuery(req);
    const nodes = await readListPage(
      { clock: deps.clock, keys: deps.storage.listCursorKey },
      'nodes',
      page,
      (p) => deps.storage.nodes.page(filter, p),
    );
    res.json({ nodes: nodes.items.map(renderNode), next: nodes.next });
  });

  r.get('/v1/admin/nodes/:id', requireAdmin(auth, 'GET /v1/admin/nodes/:id'), async (req, res) => {
    const node = await deps.storage.nodes.findById(String(req.params.id));
    if (!node) throw new BatonError('ERR_NOT_FOUND', 'no such node');
    const certs = await deps.storage.certificates.list({ nodeId: node.id });
    const now = deps.clock.now();
    res.json({ node: renderNode(node), certificates: certs.map((c) => renderCertificate(c, now)) });
  });
  return r;
}
