import { Router } from 'express';
import { caStatus, finishRootRotation, startRootRotation } from '../../domain/root-rotation';
import { BatonError } from '../../ground/errors';
import { toPem } from '../../../../../common/src/der';
import type { AppDeps } from '../ports';
import { auditContext } from '../audit-context';
import { type AdminIdentity, authDepsOf, requireAdmin } from '../authorization';
import { jsonObject } from '../validate';

const flag = (b: Record<string, unknown>, field: string): boolean => {
  const v = b[field];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new BatonError('ERR_BAD_REQUEST', `${field}: must be true or false`);
  return v;
};

/**
 * `GET /v1/admin/ca`: the phase of a root rotation, the CAs, and what still chains only to the old
 * root (`baton ca status`). `POST /v1/admin/ca/rotate-root` {"finish"?, "force"?}: starts a root
 * rotation, or finishes it (`baton ca rotate --root [--finish] [--force]`); domain/root-rotation.ts.
 * After the step commits, this replica reloads its keyring at once; the others within their
 * background interval.
 */
export function adminCaRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  r.get('/v1/admin/ca', requireAdmin(auth, 'GET /v1/admin/ca'), async (_req, res) => {
    res.json(await caStatus({ clock: deps.clock, storage: deps.storage }));
  });
  r.post(
    '/v1/admin/ca/rotate-root',
    requireAdmin(auth, 'POST /v1/admin/ca/rotate-root'),
    async (req, res) => {
      const admin = res.locals.admin as AdminIdentity;
      const b = jsonObject(req.body ?? {});
      const finish = flag(b, 'finish');
      const force = flag(b, 'force');
      if (force && !finish) throw new BatonError('ERR_BAD_REQUEST', 'force: only with finish');
      const caSet = deps.caSet;
      if (!caSet) throw new BatonError('ERR_CA_UNAVAILABLE', 'this server cannot change its CA set');
      const audit = auditContext(req, admin.spiffeId);
      if (finish) {
        const done = await finishRootRotation({ clock: deps.clock, storage: deps.storage }, { force }, audit);
        await caSet.reload();
        res.json({
          phase: 'stable',
          root: done.root,
          retired: done.retired,
          forced: done.forced,
          old_root_only: {
            nodes: done.oldRootOnly.nodes,
            workload_certificates: done.oldRootOnly.workloadCertificates,
          },
          bundle: deps.keyring().bundlePem,
        });
        return;
      }
      const started = await startRootRotation(
        {
          clock: deps.clock,
          storage: deps.storage,
          kek: caSet.kek,
          keyring: deps.keyring(),
          installation: deps.installation,
          publicationUrl: caSet.publicationUrl,
        },
        audit,
      );
      await caSet.reload();
      res.status(201).json({
        phase: 'rotating',
        root: started.root.id,
        root_pin: started.pin,
        previous_root: started.previousRoot,
        signing_ca: started.signing.id,
        cross_certificate: toPem('CERTIFICATE', started.cross.certificateDer),
        bundle: deps.keyring().bundlePem,
      });
    },
  );
  return r;
}
