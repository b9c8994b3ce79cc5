import { join } from 'node:path';
import { localActor, writeAdminCredentials } from '../../admin-credentials';
import type { OpenCa } from '../../ca-service';
import { type InitConfig, loadImportConfig } from '../../config';
import { systemClock } from '../../domain/clock';
import { importUpstreamCa, requestUpstreamCa } from '../../upstream-service';
import { type Command, type CommandContext, JSON_OPTION, STORAGE_OPTIONS } from '../command';

/**
 * What `ca init` and `ca import` do once the CA is installed (CONTRACT: "writes
 * `<data-dir>/admin/{cert.pem,key.pem,bundle.pem}` (role admin) and prints the trust domain and the
 * root pin"), then close the database.
 */
export async function writeAdminAndReport(ctx: CommandContext, ca: OpenCa, dataDir: string): Promise<number> {
  try {
    const adminDir = join(dataDir, 'admin');
    await writeAdminCredentials(
      { clock: systemClock, keyring: ca.keyring, installation: ca.installation, storage: ca.storage },
      { name: 'admin', role: 'admin', dir: adminDir, audit: localActor() },
    );
    const out = {
      trust_domain: ca.installation.trustDomain,
      root_pin: ca.keyring.pin,
      root_ca_id: ca.keyring.roots[0]!.record.id,
      signing_ca_id: ca.keyring.signing.record.id,
      admin_dir: adminDir,
    };
    ctx.stdout.write(
      ctx.flags.json
        ? `${JSON.stringify(out)}\n`
        : `trust domain: ${out.trust_domain}\nroot pin: ${out.root_pin}\nadmin credentials: ${adminDir}\n`,
    );
    return 0;
  } finally {
    await ca.storage.close();
  }
}

/** `baton ca init --upstream-csr FILE` (the flag of caInit): the CSR written, and what to do next. */
export async function runUpstreamRequest(
  ctx: CommandContext,
  cfg: InitConfig & { upstreamCsr: string },
): Promise<number> {
  const r = await requestUpstreamCa(cfg, systemClock);
  const out = {
    trust_domain: r.pending.installation.trustDomain,
    signing_ca_id: r.pending.caId,
    csr: cfg.upstreamCsr,
    pending_since: r.pending.createdAt.toISOString(),
    written_again: r.again,
  };
  ctx.stdout.write(
    ctx.flags.json
      ? `${JSON.stringify(out)}\n`
      : `${r.again ? `the pending CSR (since ${out.pending_since}) was written again to` : 'signing CA CSR written to'} ${cfg.upstreamCsr}\n` +
          `trust domain: ${out.trust_domain}\n` +
          'next: have your CA sign it as a CA certificate (basicConstraints CA:TRUE, keyUsage keyCertSign and cRLSign;\n' +
          `any name constraints must permit spiffe://${out.trust_domain}), then run\n` +
          '  baton ca import --cert SIGNED.pem --chain CHAIN.pem\n' +
          'with CHAIN.pem holding its intermediates, if any, and its root (docs/operations.md "Upstream CA")\n',
  );
  return 0;
}

export const caImport: Command = {
  words: ['ca', 'import'],
  summary:
    "Install the signing CA certificate an outside CA signed for `baton ca init --upstream-csr`, after checking it and its chain, then write the admin credential to <data-dir>/admin and print the trust domain and the root pin (the outside root's).",
  options: {
    cert: {
      type: 'string',
      value: 'FILE',
      description:
        'PEM: the signing CA certificate the outside CA issued (first; certificates after it join --chain) (required)',
    },
    chain: {
      type: 'string',
      value: 'FILE',
      description: 'PEM: the outside intermediates, if any, and the root (required)',
    },
    ...STORAGE_OPTIONS,
    ...JSON_OPTION,
  },
  async run(ctx) {
    const cfg = loadImportConfig(ctx.flags, ctx.env);
    return writeAdminAndReport(ctx, await importUpstreamCa(cfg, systemClock), cfg.dataDir);
  },
};
