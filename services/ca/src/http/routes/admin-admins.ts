import { Router } from 'express';
import { issueAdminCertificate } from '../../domain/admin-identity';
import type { AppDeps } from '../ports';
import { auditContext } from '../audit-context';
import { type AdminIdentity, authDepsOf, requireAdmin } from '../authorization';
import { renderIssuance } from '../render';
import { timedIssuance } from '../metrics';
import { refreshAt } from '../../domain/refresh';
import { readIssueAdminParams } from '../params/admins';

/** `POST /v1/admin/admins` {name, role, ttl?, csr}: an admin certificate for a key made by the caller. */
export function adminAdminRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  r.post('/v1/admin/admins', requireAdmin(auth, 'POST /v1/admin/admins'), async (req, res) => {
    const admin = res.locals.admin as AdminIdentity;
    const { csr, name, role, ttlMs } = readIssueAdminParams(req.body);
    const keyring = deps.keyring();
    const leaf = await timedIssuance(deps.metrics, 'admin', 'admin', () =>
      issueAdminCertificate(
        { clock: deps.clock, storage: deps.storage, keyring, installation: deps.installation },
        { name, role, ttlMs, key: csr.key, audit: auditContext(req, admin.spiffeId) },
      ),
    );
    const now = deps.clock.now();
    res.status(201).json(
      renderIssuance(
        {
          leaf,
          bundlePem: keyring.bundlePem,
          refreshAt: refreshAt(now, leaf.record.notAfter, deps.random),
          nodeId: '',
        },
        { withNodeId: false },
      ),
    );
  });
  return r;
}
