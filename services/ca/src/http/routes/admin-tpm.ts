import { Router } from 'express';
import type { TpmManufacturerCaRecord } from '../../domain/ports';
import { addManufacturerCas, enrollTpm, type TpmAdminDeps } from '../../domain/tpm-enrollment';
import { auditContext } from '../audit-context';
import { type AdminIdentity, authDepsOf, requireAdmin } from '../authorization';
import { readAddManufacturerCasParams, readEnrollTpmParams } from '../params/tpm';
import type { AppDeps } from '../ports';

/** A manufacturer CA as the API shows it (docs/api.md "TPM administration"). */
export function renderManufacturerCa(c: TpmManufacturerCaRecord) {
  return {
    subject: c.subject,
    fingerprint: c.fingerprint,
    not_before: c.notBefore.toISOString(),
    not_after: c.notAfter.toISOString(),
    role: c.role,
    created_at: c.createdAt.toISOString(),
  };
}

/** What admits a TPM (issue 19): enrolled EK identifiers and manufacturer CAs, for admins. */
export function adminTpmRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  const tpmDeps: TpmAdminDeps = {
    clock: deps.clock,
    storage: deps.storage,
    trustDomain: deps.installation.trustDomain,
  };

  r.post(
    '/v1/admin/tpm/enrollments',
    requireAdmin(auth, 'POST /v1/admin/tpm/enrollments'),
    async (req, res) => {
      const params = readEnrollTpmParams(req.body);
      const admin = res.locals.admin as AdminIdentity;
      const e = await enrollTpm(tpmDeps, { ...params, audit: auditContext(req, admin.spiffeId) });
      res.status(201).json({ ek_id: e.ekId, node_id: e.nodeId, role: e.role, reinstated: e.reinstated });
    },
  );

  r.post('/v1/admin/tpm/cas', requireAdmin(auth, 'POST /v1/admin/tpm/cas'), async (req, res) => {
    const params = readAddManufacturerCasParams(req.body);
    const admin = res.locals.admin as AdminIdentity;
    const added = await addManufacturerCas(tpmDeps, { ...params, audit: auditContext(req, admin.spiffeId) });
    res.status(201).json({ cas: added.map(renderManufacturerCa) });
  });

  r.get('/v1/admin/tpm/cas', requireAdmin(auth, 'GET /v1/admin/tpm/cas'), async (_req, res) => {
    res.json({ cas: (await deps.storage.tpm.listManufacturerCas()).map(renderManufacturerCa) });
  });
  return r;
}
