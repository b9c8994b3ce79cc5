import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../../../../../common/src/atomic-file';
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../../../../common/src/csr';
import { loadAdminClientConfig } from '../../config';
import { BatonError } from '../../ground/errors';
import { adminClient } from '../admin-client';
import { ADMIN_OPTIONS, type Command } from '../command';

interface IssuanceView {
  spiffe_id: string;
  serial: string;
  certificate_chain: string;
  bundle: string;
  expires_at: string;
}

export const adminIssue: Command = {
  words: ['admin', 'issue'],
  summary:
    'Issue an admin certificate (role admin, operator or auditor) for a key made here; writes cert.pem, key.pem (0600) and bundle.pem to --out.',
  options: {
    name: { type: 'string', value: 'NAME', description: 'admin name: spiffe://<td>/admin/<name> (required)' },
    role: { type: 'string', value: 'ROLE', description: 'admin | operator | auditor (required)' },
    ttl: {
      type: 'string',
      value: '8h',
      description: 'certificate lifetime (default: the CA admin TTL, max 7d)',
    },
    out: { type: 'string', value: 'DIR', description: 'where to write the credential (required)' },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const { name, role, out } = ctx.flags;
    if (typeof name !== 'string') throw new BatonError('ERR_USAGE', '--name is required');
    if (role !== 'admin' && role !== 'operator' && role !== 'auditor')
      throw new BatonError('ERR_USAGE', '--role must be admin, operator or auditor');
    if (typeof out !== 'string') throw new BatonError('ERR_USAGE', '--out is required');
    const keys = await generateKeyPair();
    const csr = await createCsr(keys, { commonName: name });
    const r = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).post<IssuanceView>(
      '/v1/admin/admins',
      {
        name,
        role,
        ttl: ctx.flags.ttl,
        csr: csr.pem,
      },
    );
    const dir = resolve(out);
    writeFileAtomic(join(dir, 'key.pem'), await exportPrivateKeyPem(keys.privateKey), 0o600);
    writeFileAtomic(join(dir, 'cert.pem'), r.certificate_chain, 0o644);
    writeFileAtomic(join(dir, 'bundle.pem'), r.bundle, 0o644);
    const view = { spiffe_id: r.spiffe_id, serial: r.serial, expires_at: r.expires_at, dir };
    ctx.stdout.write(
      ctx.flags.json
        ? `${JSON.stringify(view)}\n`
        : `issued ${r.spiffe_id} (${role}, expires ${r.expires_at}) to ${dir}\n`,
    );
    return 0;
  },
};
