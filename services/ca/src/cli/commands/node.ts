import { loadAdminClientConfig } from '../../config';
import { adminClient } from '../admin-client';
import { oneOfFlag, printAdminList, totalLimitFlag } from '../admin-list';
import { ADMIN_OPTIONS, type Command, table } from '../command';

interface NodeView {
  id: string;
  role: string;
  status: string;
  attestation_method: string;
  created_at: string;
  last_attested_at: string;
  last_seen_at: string | null;
  revoked_at: string | null;
}

interface CertificateView {
  serial: string;
  kind: string;
  spiffe_id: string;
  not_after: string;
  status: string;
}

export const nodeList: Command = {
  words: ['node', 'list'],
  summary:
    'List the nodes by id with their role, status and attestation method. Pages through all of them (--limit N stops after N); --json prints one document.',
  options: {
    status: { type: 'string', value: 'STATUS', description: 'only active or revoked nodes' },
    role: { type: 'string', value: 'ROLE', description: 'only worker or manager nodes' },
    limit: { type: 'string', value: 'N', description: 'stop after N nodes (default: all)' },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const query = new URLSearchParams();
    const status = oneOfFlag(ctx.flags.status, 'status', ['active', 'revoked']);
    const role = oneOfFlag(ctx.flags.role, 'role', ['worker', 'manager']);
    if (status) query.set('status', status);
    if (role) query.set('role', role);
    const limit = totalLimitFlag(ctx.flags.limit);
    await printAdminList<NodeView>(
      ctx,
      adminClient(loadAdminClientConfig(ctx.flags, ctx.env)),
      { path: '/v1/admin/nodes', member: 'nodes', query, limit },
      {
        headers: ['ID', 'ROLE', 'STATUS', 'METHOD', 'LAST ATTESTED', 'LAST SEEN'],
        row: (n) => [n.id, n.role, n.status, n.attestation_method, n.last_attested_at, n.last_seen_at],
      },
    );
    return 0;
  },
};

export const nodeShow: Command = {
  words: ['node', 'show'],
  summary: 'Show one node and its certificates.',
  args: ['ID'],
  options: { ...ADMIN_OPTIONS },
  async run(ctx) {
    const client = adminClient(loadAdminClientConfig(ctx.flags, ctx.env));
    const view = await client.get<{ node: NodeView; certificates: CertificateView[] }>(
      `/v1/admin/nodes/${encodeURIComponent(ctx.positionals[0]!)}`,
    );
    if (ctx.flags.json) {
      ctx.stdout.write(`${JSON.stringify(view)}\n`);
      return 0;
    }
    const n = view.node;
    const fields: [string, string | null][] = [
      ['id', n.id],
      ['role', n.role],
      ['status', n.status],
      ['attestation method', n.attestation_method],
      ['created', n.created_at],
      ['last attested', n.last_attested_at],
      ['last seen', n.last_seen_at],
      ['revoked', n.revoked_at],
    ];
    ctx.stdout.write(fields.map(([k, v]) => `${`${k}:`.padEnd(20)}${v ?? '-'}\n`).join(''));
    ctx.stdout.write('\ncertificates:\n');
    ctx.stdout.write(
      table(
        ['SERIAL', 'KIND', 'SPIFFE ID', 'NOT AFTER', 'STATUS'],
        view.certificates.map((c) => [c.serial, c.kind, c.spiffe_id, c.not_after, c.status]),
      ),
    );
    return 0;
  },
};
