import { join } from 'node:path';
import { ADMIN_ROLES, type AdminRole, writeAdminCredentials, localActor } from '../../admin-credentials';
import { openCa } from '../../ca-service';
import { loadStorageConfig, parseTtl } from '../../config';
import { MAX_TTL } from '../../ground/ttl';
import { systemClock } from '../../domain/clock';
import { BatonError } from '../../ground/errors';
import { type Command, JSON_OPTION, STORAGE_OPTIONS } from '../command';

export const adminRecover: Command = {
  words: ['admin', 'recover'],
  summary:
    'Break-glass: with direct database and KEK access, write a fresh admin certificate to <data-dir>/admin (no server needed).',
  options: {
    name: { type: 'string', value: 'NAME', description: 'admin name (required)' },
    role: { type: 'string', value: 'ROLE', description: 'admin | operator | auditor (default admin)' },
    ttl: {
      type: 'string',
      value: 'DURATION',
      description: 'certificate lifetime (default: the CA admin TTL)',
    },
    ...STORAGE_OPTIONS,
    ...JSON_OPTION,
  },
  async run(ctx) {
    const name = ctx.flags.name;
    if (typeof name !== 'string') throw new BatonError('ERR_USAGE', '--name is required');
    const role = (ctx.flags.role ?? 'admin') as AdminRole;
    if (!ADMIN_ROLES.includes(role))
      throw new BatonError('ERR_USAGE', '--role must be admin, operator or auditor');
    const ttlMs =
      typeof ctx.flags.ttl === 'string' ? parseTtl(ctx.flags.ttl, '--ttl', MAX_TTL.admin) : undefined;
    const cfg = loadStorageConfig(ctx.flags, ctx.env);
    const ca = await openCa(cfg);
    try {
      const dir = join(cfg.dataDir, 'admin');
      const issued = await writeAdminCredentials(
        {
          clock: systemClock,
          keyring: ca.keyring,
          installation: ca.installation,
          storage: ca.storage,
        },
        { name, role, ttlMs, dir, audit: localActor(), event: 'admin.recovered' },
      );
      const out = {
        spiffe_id: issued.record.spiffeId,
        serial: issued.record.serial,
        expires_at: issued.record.notAfter,
        admin_dir: dir,
      };
      ctx.stdout.write(
        ctx.flags.json ? `${JSON.stringify(out)}\n` : `admin credentials for ${out.spiffe_id}: ${dir}\n`,
      );
      return 0;
    } finally {
      await ca.storage.close();
    }
  },
};
