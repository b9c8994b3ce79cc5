import { parsePem } from '../../../../../common/src/trust-store';
import { X509Certificate } from 'node:crypto';
import { readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic } from '../../../../../common/src/atomic-file';
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../../../../common/src/csr';
import { localActor } from '../../admin-credentials';
import { openCa } from '../../ca-service';
import { loadAdminClientConfig, loadStorageConfig } from '../../config';
import { rotateSigningCa } from '../../domain/ca-rotation';
import { systemClock } from '../../domain/clock';
import { publicationUrlOf } from '../../domain/urls';
import { BatonError } from '../../ground/errors';
import { adminClient, type AdminClient } from '../admin-client';
import { ADMIN_OPTIONS, type Command, type CommandContext, JSON_OPTION, STORAGE_OPTIONS } from '../command';

interface RotateRootStarted {
  phase: 'rotating';
  root: string;
  root_pin: string;
  previous_root: string;
  signing_ca: string;
  bundle: string;
}

interface RotateRootFinished {
  phase: 'stable';
  root: string;
  retired: string[];
  forced: boolean;
  old_root_only: { nodes: number; workload_certificates: number };
  bundle: string;
}

export const caRotate: Command = {
  words: ['ca', 'rotate'],
  summary:
    "Rotate the signing CA (direct database and KEK access: a new signing intermediate under the same root; old certificates stay valid). With --root, through the server's admin API: start a root rotation (a new root, and a signing CA certified by both roots), or with --finish drop the old root from the bundle.",
  options: {
    root: {
      type: 'boolean',
      description: 'rotate the root (admin API, role admin); see docs/ca-rotation.md',
    },
    finish: {
      type: 'boolean',
      description:
        'with --root: end the rotation, dropping the old root (refused while nodes are only under it)',
    },
    force: {
      type: 'boolean',
      description: 'with --root --finish: finish even with nodes left under the old root',
    },
    ...STORAGE_OPTIONS,
    ...ADMIN_OPTIONS,
    ...JSON_OPTION,
  },
  async run(ctx) {
    if (ctx.flags.root) return rotateRoot(ctx);
    if (ctx.flags.finish || ctx.flags.force)
      throw new BatonError('ERR_USAGE', '--finish and --force go with --root');
    const cfg = loadStorageConfig(ctx.flags, ctx.env);
    const ca = await openCa(cfg);
    try {
      const previous = ca.keyring.signing.record.id;
      const created = await rotateSigningCa(
        {
          clock: systemClock,
          storage: ca.storage,
          kek: ca.custody,
          keyring: ca.keyring,
          installation: ca.installation,
          // Only the new intermediate's CRL Distribution Point is made from it.
          publicUrl: publicationUrlOf(ca.installation),
        },
        localActor(),
      );
      const out = {
        signing_ca_id: created.id,
        previous_ca_id: previous,
        not_after: created.notAfter.toISOString(),
      };
      ctx.stdout.write(
        ctx.flags.json
          ? `${JSON.stringify(out)}\n`
          : `new signing CA ${created.id} (until ${out.not_after}); ${previous} keeps its CRL until its certificates expire\n`,
      );
      return 0;
    } finally {
      await ca.storage.close();
    }
  },
};

async function rotateRoot(ctx: CommandContext): Promise<number> {
  if (ctx.flags.force && !ctx.flags.finish) throw new BatonError('ERR_USAGE', '--force goes with --finish');
  const cfg = loadAdminClientConfig(ctx.flags, ctx.env);
  const client = adminClient(cfg);
  if (ctx.flags.finish) {
    const r = await client.post<RotateRootFinished>('/v1/admin/ca/rotate-root', {
      finish: true,
      ...(ctx.flags.force ? { force: true } : {}),
    });
    writeFileAtomic(join(cfg.adminDir, 'bundle.pem'), r.bundle, 0o644);
    const { bundle: _, ...view } = r;
    ctx.stdout.write(
      ctx.flags.json
        ? `${JSON.stringify(view)}\n`
        : `root rotation finished: the bundle is ${r.root} alone (${r.retired.join(', ')} dropped)${
            r.forced ? `; forced with ${r.old_root_only.nodes} node(s) still only under the old root` : ''
          }\n`,
    );
    return 0;
  }
  let r: RotateRootStarted;
  try {
    r = await client.post<RotateRootStarted>('/v1/admin/ca/rotate-root', {});
  } catch (e) {
    // Started already, perhaps by this command killed before it renewed the admin's certificate:
    // that part is done now, and the refusal says the rest.
    if (e instanceof BatonError && e.code === 'ERR_ROTATION_IN_PROGRESS')
      await renewIfOld(client, cfg.adminDir);
    throw e;
  }
  writeFileAtomic(join(cfg.adminDir, 'bundle.pem'), r.bundle, 0o644);
  // This admin's own certificate chains only to the old root: after the finish the server would
  // not accept it. It gets one from the new signing CA now, while both roots are trusted.
  const renewed = await renewOwnCredential(client, cfg.adminDir);
  const { bundle: _, ...view } = r;
  ctx.stdout.write(
    ctx.flags.json
      ? `${JSON.stringify({ ...view, admin_credential: renewed })}\n`
      : `root rotation started: new root ${r.root} (pin ${r.root_pin}), signing CA ${r.signing_ca} certified by both roots\n` +
          `the bundle holds ${r.previous_root} and ${r.root}; new tokens pin the new root\n` +
          `admin credential renewed: ${renewed}\n` +
          'next: wait until `baton ca status` counts no node under the old root, then `baton ca rotate --root --finish`\n',
  );
  return 0;
}

/** Renews the admin dir's certificate when the current signing CA did not issue it. */
async function renewIfOld(client: AdminClient, dir: string): Promise<void> {
  const status = await client.get<{ signing_ca: { id: string } }>('/v1/admin/ca');
  // The certificate after the leaf is the CA that issued it (CN "Baton Signing CA <id>").
  const issuerCa = parsePem(readFileSync(join(dir, 'cert.pem'), 'utf8'))[1];
  if (!issuerCa?.subject.includes(status.signing_ca.id.slice(3))) await renewOwnCredential(client, dir);
}

/**
 * A new certificate for the admin dir's own name and role, from the current signing CA. The pair
 * is written beside the old one (`*.next`) and renamed key first: a command killed between the two
 * renames leaves a key.pem of the next pair, which the admin client completes (admin-client.ts).
 */
async function renewOwnCredential(client: AdminClient, dir: string): Promise<string> {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
  } catch {
    throw new BatonError('ERR_NOT_AUTHENTICATED', `no admin certificate in ${dir}`);
  }
  const uri = /URI:spiffe:\/\/[^/]+\/admin\/([^,\s]+)/.exec(cert.subjectAltName ?? '');
  const role = /^OU=(admin|operator|auditor)$/m.exec(cert.subject);
  if (!uri || !role)
    throw new BatonError('ERR_NOT_AUTHENTICATED', `${dir}/cert.pem is not an admin certificate`);
  const keys = await generateKeyPair();
  const csr = await createCsr(keys, { commonName: uri[1]! });
  const r = await client.post<{ certificate_chain: string; bundle: string }>('/v1/admin/admins', {
    name: uri[1],
    role: role[1],
    csr: csr.pem,
  });
  writeFileAtomic(join(dir, 'key.pem.next'), await exportPrivateKeyPem(keys.privateKey), 0o600);
  writeFileAtomic(join(dir, 'cert.pem.next'), r.certificate_chain, 0o644);
  renameSync(join(dir, 'key.pem.next'), join(dir, 'key.pem'));
  renameSync(join(dir, 'cert.pem.next'), join(dir, 'cert.pem'));
  fsyncDir(dir);
  writeFileAtomic(join(dir, 'bundle.pem'), r.bundle, 0o644);
  return dir;
}
