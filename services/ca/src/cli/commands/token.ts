import { loadAdminClientConfig } from '../../config';
import { BatonError } from '../../ground/errors';
import { adminClient } from '../admin-client';
import { ADMIN_OPTIONS, type Command } from '../command';

interface TokenResponse {
  token: string;
  id: string;
  role: string;
  expires_at: string;
  uses: number;
  node_name: string | null;
}

export const tokenCreate: Command = {
  words: ['token', 'create'],
  summary:
    'Create a join token and print it alone on stdout. It pins the root CA, expires, and has a use count.',
  options: {
    role: { type: 'string', value: 'ROLE', description: 'worker | manager (required)' },
    ttl: { type: 'string', value: '15m', description: 'how long the token is valid' },
    uses: { type: 'string', value: 'N', description: 'how many attestations it allows (default 1)' },
    'node-name': {
      type: 'string',
      value: 'NAME',
      description: 'bind the token to this node name (the node id)',
    },
    'node-ttl': {
      type: 'string',
      value: 'DURATION',
      description: 'node certificate lifetime (default: the CA node TTL)',
    },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const role = ctx.flags.role;
    if (role !== 'worker' && role !== 'manager')
      throw new BatonError('ERR_USAGE', '--role must be worker or manager');
    const uses = ctx.flags.uses === undefined ? undefined : Number(ctx.flags.uses);
    if (uses !== undefined && !Number.isInteger(uses))
      throw new BatonError('ERR_USAGE', '--uses must be a whole number');
    const client = adminClient(loadAdminClientConfig(ctx.flags, ctx.env));
    const t = await client.post<TokenResponse>('/v1/admin/tokens', {
      role,
      ttl: ctx.flags.ttl,
      uses,
      node_name: ctx.flags['node-name'],
      node_ttl: ctx.flags['node-ttl'],
    });
    ctx.stdout.write(ctx.flags.json ? `${JSON.stringify(t)}\n` : `${t.token}\n`);
    return 0;
  },
};
