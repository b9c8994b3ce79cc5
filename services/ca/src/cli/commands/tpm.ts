import { readFileSync } from 'node:fs';
import { loadAdminClientConfig } from '../../config';
import { parseEkId } from '../../domain/tpm-enrollment';
import { BatonError } from '../../ground/errors';
import { readManufacturerCas } from '../../pki/tpm';
import { adminClient } from '../admin-client';
import { ADMIN_OPTIONS, type Command, table } from '../command';

/** TPM node attestation, the admin side (issue 19; CONTRACT "TPM node attestation"). */

const ROLE_OPTION = {
  role: { type: 'string' as const, value: 'ROLE', description: 'worker | manager' },
};

function roleFlag(v: unknown, fallback?: 'worker'): 'worker' | 'manager' {
  const role = v ?? fallback;
  if (role !== 'worker' && role !== 'manager')
    throw new BatonError('ERR_USAGE', '--role must be worker or manager');
  return role;
}

interface EnrollmentView {
  ek_id: string;
  node_id: string;
  role: string;
  reinstated: boolean;
}

export const nodeEnroll: Command = {
  words: ['node', 'enroll'],
  summary:
    'Admit a TPM by its EK identifier (what `baton agent tpm-id` prints on the node): it may then attest with --tpm, as node tpm-<first 20 hex digits>. Enrolling the TPM of a revoked node admits it again.',
  options: {
    'tpm-ek-id': {
      type: 'string',
      value: 'HEX',
      description: 'the EK identifier: 64 hex digits, SHA-256 of the EK public key (required)',
    },
    ...ROLE_OPTION,
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const raw = ctx.flags['tpm-ek-id'];
    if (typeof raw !== 'string') throw new BatonError('ERR_USAGE', '--tpm-ek-id is required');
    let ekId: string;
    try {
      ekId = parseEkId(raw);
    } catch (e) {
      throw new BatonError('ERR_USAGE', `--tpm-ek-id ${(e as Error).message}`);
    }
    const role = roleFlag(ctx.flags.role);
    const e = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).post<EnrollmentView>(
      '/v1/admin/tpm/enrollments',
      { ek_id: ekId, role },
    );
    ctx.stdout.write(
      ctx.flags.json
        ? `${JSON.stringify(e)}\n`
        : `enrolled TPM ${e.ek_id} as node ${e.node_id} (${e.role})${e.reinstated ? ', revoked node admitted again' : ''}\n`,
    );
    return 0;
  },
};

interface CaView {
  subject: string;
  fingerprint: string;
  not_before: string;
  not_after: string;
  role: string;
  created_at: string;
}

const caTable = (cas: CaView[]): string =>
  table(
    ['FINGERPRINT (SHA-256)', 'ROLE', 'NOT AFTER', 'SUBJECT'],
    cas.map((c) => [c.fingerprint, c.role, c.not_after, c.subject]),
  );

export const tpmCaAdd: Command = {
  words: ['tpm', 'ca', 'add'],
  summary:
    'Trust the EK certificates a TPM manufacturer CA issues: every TPM whose EK certificate one of these certificates issued may attest with --tpm. FILE: PEM, the root and the intermediates that issue EK certificates (each one a CA certificate, no private key).',
  args: ['FILE'],
  options: {
    role: {
      type: 'string',
      value: 'ROLE',
      description: 'worker | manager: the role of the nodes these CAs admit (default worker)',
    },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const file = ctx.positionals[0]!;
    const role = roleFlag(ctx.flags.role, 'worker');
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (e) {
      throw new BatonError(
        'ERR_USAGE',
        `cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
    // Checked here too, so that a file with a private key is refused before anything is sent.
    try {
      readManufacturerCas(pem);
    } catch (e) {
      if (e instanceof BatonError) throw new BatonError(e.code, `${file}: ${e.message}`);
      throw e;
    }
    const { cas } = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).post<{ cas: CaView[] }>(
      '/v1/admin/tpm/cas',
      { pem, role },
    );
    ctx.stdout.write(ctx.flags.json ? `${JSON.stringify({ cas })}\n` : caTable(cas));
    return 0;
  },
};

export const tpmCaList: Command = {
  words: ['tpm', 'ca', 'list'],
  summary: 'List the TPM manufacturer CAs whose EK certificates are trusted, with the role they give.',
  options: { ...ADMIN_OPTIONS },
  async run(ctx) {
    const { cas } = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).get<{ cas: CaView[] }>(
      '/v1/admin/tpm/cas',
    );
    ctx.stdout.write(ctx.flags.json ? `${JSON.stringify({ cas })}\n` : caTable(cas));
    return 0;
  },
};
