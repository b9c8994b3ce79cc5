import { type Request, Router } from 'express';
import type { AuditContext } from '../../domain/audit';
import { readListPage } from '../../domain/admin-lists';
import { crlIssuers } from '../../domain/crl-publisher';
import { BatonError, isBatonError } from '../../ground/errors';
import type { Repositories, RevocationEvent } from '../../domain/ports';
import { revokeCertificate, revokeNode } from '../../domain/revocation';
import { parseRevocationReason, revocationReasonName } from '../../pki/crl';
import { FEED_RETRY_AFTER_S } from '../abuse-controls';
import type { AppDeps } from '../ports';
import { auditContext } from '../audit-context';
import {
  type AdminIdentity,
  assertMayRevoke,
  authDepsOf,
  callerOf,
  NODE_ROUTES,
  requireAdmin,
} from '../authorization';
import { readCertificateListQuery } from '../params/admin-lists';
import { renderCertificate } from '../render';
import { body, optionalString } from '../validate';

export function renderEvent(e: RevocationEvent) {
  return {
    id: e.id,
    kind: e.kind,
    node_id: e.nodeId,
    serials: e.serials,
    reason: revocationReasonName(e.reason) ?? 'unspecified',
    at: e.createdAt.toISOString(),
  };
}

/** Revocation for admins, and the revocation feed for nodes and workloads. */
export function revocationRoutes(deps: AppDeps): Router {
  const r = Router();
  const auth = authDepsOf(deps);
  const auditOf = (req: Request, admin: AdminIdentity): AuditContext => auditContext(req, admin.spiffeId);
  const revocationDeps = {
    clock: deps.clock,
    storage: deps.storage,
    trustDomain: deps.installation.trustDomain,
    publishCrls: (tx: Repositories) => deps.crls.publishIn(tx),
  };
  const reasonOf = (b: Record<string, unknown>) => {
    const text = optionalString(b, 'reason', 64);
    return text === undefined ? undefined : parseRevocationReason(text);
  };

  r.post(
    '/v1/admin/nodes/:id/revoke',
    requireAdmin(auth, 'POST /v1/admin/nodes/:id/revoke'),
    async (req, res) => {
      const result = await revokeNode(revocationDeps, {
        nodeId: String(req.params.id),
        reason: reasonOf(body(req)),
        audit: auditOf(req, res.locals.admin as AdminIdentity),
      });
      await deps.afterRevocation();
      deps.metrics.revocations.inc({ kind: 'node' });
      res.json({
        node_id: req.params.id,
        revoked_certificates: result.serials,
        event: renderEvent(result.event),
      });
    },
  );

  r.post(
    '/v1/admin/certificates/:serial/revoke',
    requireAdmin(auth, 'POST /v1/admin/certificates/:serial/revoke'),
    async (req, res) => {
      const admin = res.locals.admin as AdminIdentity;
      const result = await revokeCertificate(revocationDeps, {
        serial: String(req.params.serial),
        reason: reasonOf(body(req)),
        audit: auditOf(req, admin),
        authorize: (kind) => assertMayRevoke(admin, kind),
      });
      await deps.afterRevocation();
      deps.metrics.revocations.inc({ kind: 'certificate' });
      res.json({ revoked_certificates: result.serials, event: renderEvent(result.event) });
    },
  );

  // CONTRACT "Fleet scale": one page, newest first, `next` the cursor of the following one.
  r.get('/v1/admin/certificates', requireAdmin(auth, 'GET /v1/admin/certificates'), async (req, res) => {
    const now = deps.clock.now();
    const { filter, page } = readCertificateListQuery(req, now);
    const certs = await readListPage(
      { clock: deps.clock, keys: deps.storage.listCursorKey },
      'certificates',
      page,
      (p) => deps.storage.certificates.page(filter, p),
    );
    res.json({ certificates: certs.items.map((c) => renderCertificate(c, now)), next: certs.next });
  });

  r.get('/v1/admin/crls', requireAdmin(auth, 'GET /v1/admin/crls'), async (_req, res) => {
    const now = deps.clock.now();
    const kr = deps.keyring();
    const out = [];
    for (const ca of crlIssuers(kr, now)) {
      const crl = await deps.crls.current(ca.record.id);
      const revoked = await deps.storage.revocations.revokedForCa(ca.record.id, crl.thisUpdate);
      out.push({
        ca_id: ca.record.id,
        issuer: ca.record.kind,
        crl_number: crl.crlNumber.toString(),
        this_update: crl.thisUpdate.toISOString(),
        next_update: crl.nextUpdate.toISOString(),
        entries: crl.entries,
        revoked: revoked.map((e) => ({
          serial: e.serial,
          revoked_at: e.revokedAt.toISOString(),
          reason: revocationReasonName(e.reason) ?? 'unspecified',
        })),
      });
    }
    res.json({ crls: out });
  });

  // Nodes and workloads (NODE_ROUTES), checked per request: TLS checked the validity only at the
  // handshake, with the wall clock, and a keep-alive connection outlives an expiry and a revocation.
  r.get('/v1/revocations', async (req, res) => {
    const caller = await callerOf(auth, req, NODE_ROUTES['GET /v1/revocations']);
    // The identity the waiting caps count by (docs/configuration.md "Revocation feed and connections"):
    // a workload's per SPIFFE ID on each node, so the replicas of one service on other nodes do not
    // share a cap, and a node minting more SVIDs for an entry gets no more slots for it.
    const cert = caller.certificate;
    const identity =
      caller.kind === 'node' ? cert.spiffeId : `${cert.spiffeId} on node ${cert.issuedVia ?? cert.serial}`;
    const since = req.query.since === undefined ? 0 : Number(req.query.since);
    if (!Number.isSafeInteger(since) || since < 0)
      throw new BatonError('ERR_BAD_REQUEST', 'since: a non-negative integer');
    // `entries=1`: the `entry` events too (the agent's, to list its entries at once); others never
    // see them, so a client that knows only revocations is not handed a kind it does not know.
    const entries = req.query.entries === undefined ? false : req.query.entries === '1';
    if (req.query.entries !== undefined && req.query.entries !== '0' && req.query.entries !== '1')
      throw new BatonError('ERR_BAD_REQUEST', 'entries: 0 or 1');
    const wait = req.query.wait === undefined ? 30 : Number(req.query.wait);
    if (!Number.isFinite(wait) || wait < 0 || wait > 30)
      throw new BatonError('ERR_BAD_REQUEST', 'wait: 0 to 30 seconds');
    // A client that goes away frees its slot at once, not when its wait would have ended.
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    const mine = (e: RevocationEvent) =>
      e.kind !== 'entry' || (entries && caller.kind === 'node' && e.nodeId === caller.certificate.nodeId);
    // Events the caller does not see (other nodes' entry events) do not end its wait: it goes on
    // waiting after them until its own deadline, and `last` covers them, so the next poll starts
    // after them. Every long-poll is not woken by every entry change in the fleet.
    const deadline = deps.monotonicMs() + wait * 1000;
    let cursor = since;
    for (;;) {
      const left = Math.max(0, deadline - deps.monotonicMs());
      const events = await deps.feed.wait(cursor, left, { identity, signal: gone.signal }).catch((e) => {
        if (isBatonError(e, 'ERR_RATE_LIMITED')) {
          res.set('Retry-After', String(FEED_RETRY_AFTER_S));
          // The refused connection is not kept alive: its memory (most of a held poll's) goes with it.
          res.set('Connection', 'close');
        }
        throw e;
      });
      const shown = events.filter(mine);
      if (events.length > 0) cursor = events[events.length - 1]!.id;
      if (shown.length > 0 || events.length === 0 || left === 0 || gone.signal.aborted) {
        res.json({ events: shown.map(renderEvent), last: cursor });
        return;
      }
    }
  });
  return r;
}
