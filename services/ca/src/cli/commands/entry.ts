import { loadAdminClientConfig } from '../../config';
import { adminClient } from '../admin-client';
import { printAdminList, totalLimitFlag } from '../admin-list';
import { ADMIN_OPTIONS, type Command } from '../command';

interface EntryView {
  name: string;
  spiffe_id: string;
  parent: string;
  selectors: string[];
  dns_names: string[];
  ttl_seconds: number;
}

export const entryCreate: Command = {
  words: ['entry', 'create'],
  summary: 'Register a workload identity: which SPIFFE ID a node may mint, for which local workload.',
  options: {
    name: {
      type: 'string',
      value: 'NAME',
      description: 'entry name; the agent writes workloads/<name>/ (required)',
    },
    'spiffe-id': { type: 'string', value: 'ID', description: 'spiffe://<trust domain>/<path> (required)' },
    parent: { type: 'string', value: 'NODE_ID', description: 'the node allowed to mint it (required)' },
    selector: {
      type: 'string',
      multiple: true,
      value: 'SEL',
      description: 'unix:uid:N, unix:gid:N or unix:path:/abs/path (all must match the caller)',
    },
    ttl: { type: 'string', value: 'DURATION', description: 'SVID lifetime (default: the CA workload TTL)' },
    dns: { type: 'string', multiple: true, value: 'NAME', description: 'a DNS SAN' },
    'allow-wildcard-dns': { type: 'boolean', description: 'allow a *.domain DNS name' },
    hint: {
      type: 'string',
      value: 'TEXT',
      description: 'the Workload API hint, e.g. internal: which SVID to use when a workload gets several',
    },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const client = adminClient(loadAdminClientConfig(ctx.flags, ctx.env));
    const e = await client.post<EntryView>('/v1/admin/entries', {
      name: ctx.flags.name,
      spiffe_id: ctx.flags['spiffe-id'],
      parent: ctx.flags.parent,
      selectors: ctx.flags.selector ?? [],
      dns_names: ctx.flags.dns ?? [],
      allow_wildcard_dns: ctx.flags['allow-wildcard-dns'] === true,
      ttl: ctx.flags.ttl,
      ...(typeof ctx.flags.hint === 'string' ? { hint: ctx.flags.hint } : {}),
    });
    ctx.stdout.write(
      ctx.flags.json
        ? `${JSON.stringify(e)}\n`
        : `created entry ${e.name} (${e.spiffe_id}, parent ${e.parent})\n`,
    );
    return 0;
  },
};

export const entryList: Command = {
  words: ['entry', 'list'],
  summary:
    'List registration entries by name. Pages through all of them (--limit N stops after N); --json prints one document.',
  options: {
    limit: { type: 'string', value: 'N', description: 'stop after N entries (default: all)' },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const limit = totalLimitFlag(ctx.flags.limit);
    await printAdminList<EntryView>(
      ctx,
      adminClient(loadAdminClientConfig(ctx.flags, ctx.env)),
      { path: '/v1/admin/entries', member: 'entries', query: new URLSearchParams(), limit },
      {
        headers: ['NAME', 'SPIFFE ID', 'PARENT', 'SELECTORS', 'DNS', 'TTL'],
        row: (e) => [
          e.name,
          e.spiffe_id,
          e.parent,
          e.selectors.join(',') || null,
          e.dns_names.join(',') || null,
          `${e.ttl_seconds}s`,
        ],
      },
    );
    return 0;
  },
};

export const entryDelete: Command = {
  words: ['entry', 'delete'],
  summary:
    'Delete a registration entry (its agent removes the workload files; issued SVIDs stay valid until they expire or are revoked).',
  args: ['NAME'],
  options: { ...ADMIN_OPTIONS },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).delete(
      `/v1/admin/entries/${encodeURIComponent(name)}`,
    );
    ctx.stdout.write(ctx.flags.json ? `${JSON.stringify({ deleted: name })}\n` : `deleted entry ${name}\n`);
    return 0;
  },
};
