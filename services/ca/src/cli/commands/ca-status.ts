import { loadAdminClientConfig } from '../../config';
import type { CaStatus } from '../../domain/root-rotation';
import { adminClient } from '../admin-client';
import { ADMIN_OPTIONS, type Command, table } from '../command';

export const caStatusCommand: Command = {
  words: ['ca', 'status'],
  summary:
    'Show the CA: the phase (stable, or rotating its root), the roots in the bundle, every CA, and how many nodes and workload certificates still chain only to the old root (admin API).',
  options: { ...ADMIN_OPTIONS },
  async run(ctx) {
    const s = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).get<CaStatus>('/v1/admin/ca');
    if (ctx.flags.json) {
      ctx.stdout.write(`${JSON.stringify(s)}\n`);
      return 0;
    }
    ctx.stdout.write(
      `phase: ${s.phase}\n` +
        `roots in the bundle: ${s.roots.map((r) => `${r.id}${r.current ? ' (current)' : ' (old)'}`).join(', ')}\n` +
        `signing CA: ${s.signing_ca.id}${
          s.signing_ca.cross_signed_by.length
            ? ` (also certified by ${s.signing_ca.cross_signed_by.join(', ')})`
            : ''
        }\n` +
        `only under the old root: ${s.old_root_only.nodes} node(s), ${s.old_root_only.workload_certificates} workload certificate(s)\n\n`,
    );
    ctx.stdout.write(
      table(
        ['CA', 'KIND', 'PARENT', 'CROSS-SIGNED BY', 'STATE', 'NOT AFTER'],
        s.cas.map((c) => [
          c.id,
          c.kind,
          c.parent ?? '-',
          c.cross_signed_by.join(',') || '-',
          c.kind === 'root' ? (c.in_bundle ? 'in bundle' : 'retired') : c.active ? 'signing' : 'previous',
          c.not_after,
        ]),
      ),
    );
    return 0;
  },
};
