import { loadAdminClientConfig } from '../../config';
import { adminClient } from '../admin-client';
import { oneOfFlag, printAdminList, totalLimitFlag } from '../admin-list';
import { ADMIN_OPTIONS, type Command } from '../command';

interface RevokeResponse {
  revoked_certificates: string[];
  event: { id: number; reason: string };
}

const REASON = {
  reason: {
    type: 'string' as const,
    value: 'REASON',
    description:
      'RFC 5280 reason: key-compromise, affiliation-changed, superseded, cessation-of-operation, … (default unspecified)',
  },
};

export const nodeRevoke: Command = {
  words: ['node', 'revoke'],
  summary:
    'Revoke a node in one step: its certificates and every workload certificate issued through it, its future renewals and attestations; new CRLs are published and peers are told through the feed.',
  args: ['ID'],
  options: { ...REASON, ...ADMIN_OPTIONS },
  async run(ctx) {
    const id = ctx.positionals[0]!;
    const r = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).post<RevokeResponse>(
      `/v1/admin/nodes/${encodeURIComponent(id)}/revoke`,
      { reason: ctx.flags.reason },
    );
    ctx.stdout.write(
      ctx.flags.json
        ? `${JSON.stringify(r)}\n`
        : `revoked node ${id} and ${r.revoked_certificates.length} certificate(s) (event ${r.event.id}, ${r.event.reason})\n`,
    );
    return 0;
  },
};

export const certRevoke: Command = {
  words: ['cert', 'revoke'],
  summary:
    'Revoke one certificate by serial (hex); a new CRL is published at once. An admin or server certificate needs the admin role.',
  args: ['SERIAL'],
  options: { ...REASON, ...ADMIN_OPTIONS },
  async run(ctx) {
    const serial = ctx.positionals[0]!.toLowerCase().replace(/:/g, '');
    const r = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).post<RevokeResponse>(
      `/v1/admin/certificates/${encodeURIComponent(serial)}/revoke`,
      { reason: ctx.flags.reason },
    );
    ctx.stdout.write(
      ctx.flags.json
        ? `${JSON.stringify(r)}\n`
        : `revoked ${serial} (event ${r.event.id}, ${r.event.reason})\n`,
    );
    return 0;
  },
};

interface CertView {
  serial: string;
  kind: string;
  spiffe_id: string;
  node_id: string | null;
  issued_via: string | null;
  not_after: string;
  status: string;
}

export const certList: Command = {
  words: ['cert', 'list'],
  summary:
    'List certificates, newest first. Pages through all of them (--limit N stops after N); --json prints one document.',
  options: {
    node: {
      type: 'string',
      value: 'ID',
      description: 'certificates of this node and those issued through it',
    },
    status: { type: 'string', value: 'STATUS', description: 'valid | revoked | expired (also superseded)' },
    limit: { type: 'string', value: 'N', description: 'stop after N certificates (default: all)' },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const query = new URLSearchParams();
    const status = oneOfFlag(ctx.flags.status, 'status', ['valid', 'revoked', 'expired', 'superseded']);
    if (typeof ctx.flags.node === 'string') query.set('node', ctx.flags.node);
    if (status) query.set('status', status);
    const limit = totalLimitFlag(ctx.flags.limit);
    await printAdminList<CertView>(
      ctx,
      adminClient(loadAdminClientConfig(ctx.flags, ctx.env)),
      { path: '/v1/admin/certificates', member: 'certificates', query, limit },
      {
        headers: ['SERIAL', 'KIND', 'SPIFFE ID', 'NODE', 'NOT AFTER', 'STATUS'],
        row: (c) => [c.serial, c.kind, c.spiffe_id, c.node_id ?? c.issued_via, c.not_after, c.status],
      },
    );
    return 0;
  },
};

export const crlShow: Command = {
  words: ['crl', 'show'],
  summary:
    'Show the current CRLs (number, thisUpdate, nextUpdate, revoked serials), fetched from the server.',
  options: { ...ADMIN_OPTIONS },
  async run(ctx) {
    const cfg = loadAdminClientConfig(ctx.flags, ctx.env);
    const { crls } = await adminClient(cfg).get<{ crls: CrlView[] }>('/v1/admin/crls');
    if (ctx.flags.json) {
      ctx.stdout.write(`${JSON.stringify(crls)}\n`);
      return 0;
    }
    for (const c of crls) {
      ctx.stdout.write(
        `issuer ${c.issuer} (${c.ca_id})\n  crl number ${c.crl_number}, this update ${c.this_update}, next update ${c.next_update}\n`,
      );
      ctx.stdout.write(
        c.revoked.length
          ? c.revoked.map((r) => `  ${r.serial}  ${r.revoked_at}  ${r.reason}\n`).join('')
          : '  no revoked certificates\n',
      );
    }
    return 0;
  },
};

interface CrlView {
  ca_id: string;
  issuer: string;
  crl_number: string;
  this_update: string;
  next_update: string;
  revoked: { serial: string; revoked_at: string; reason: string }[];
}
