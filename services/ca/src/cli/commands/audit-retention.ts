import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fsyncDir } from '../../../../../common/src/atomic-file';
import { loadAdminClientConfig } from '../../config';
import { auditVerifier } from '../../domain/audit';
import type { AuditCheckpoint } from '../../domain/audit-checkpoint';
import { BatonError } from '../../ground/errors';
import { adminClient } from '../admin-client';
import { ADMIN_OPTIONS, type Command } from '../command';
import { type AuditView, toRecord } from './audit';

/**
 * `baton audit export`, `audit prune` and `audit checkpoint` (issue 20; docs/operations.md "Audit
 * retention"), and what `audit verify --checkpoint FILE` checks.
 */

/** `--before DATE`: an ISO 8601 time (a date alone is its midnight UTC); a usage error otherwise. */
function beforeFlag(flags: Record<string, unknown>): Date {
  const v = flags.before;
  if (typeof v !== 'string') throw new BatonError('ERR_USAGE', '--before DATE is required');
  const d = new Date(v);
  if (Number.isNaN(d.getTime()))
    throw new BatonError('ERR_USAGE', `--before: an ISO 8601 date or time, e.g. 2026-09-01, got "${v}"`);
  return d;
}

const BEFORE_OPTION = {
  before: {
    type: 'string' as const,
    value: 'DATE',
    description: 'rows recorded before this ISO 8601 date or time, e.g. 2026-09-01 (required)',
  },
};

/** Where an export goes: a file written beside its final name and renamed once complete, or stdout. */
interface Sink {
  write(text: string): Promise<void>;
  commit(): Promise<void>;
  abandon(): Promise<void>;
}

async function fileSink(path: string): Promise<Sink> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.partial`);
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = constants;
  // Audit rows name identities and addresses: the file is the operator's alone until they move it.
  const fh = await open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  let closed = false;
  const close = async () => {
    if (!closed) await fh.close();
    closed = true;
  };
  return {
    write: async (text) => void (await fh.write(text)),
    commit: async () => {
      await fh.sync();
      await close();
      await rename(tmp, path);
      fsyncDir(dirname(path));
    },
    abandon: async () => {
      await close();
      await unlink(tmp).catch(() => undefined);
    },
  };
}

function streamSink(out: NodeJS.WritableStream): Sink {
  return {
    write: (text) =>
      new Promise((resolveWrite) => {
        if (out.write(text)) resolveWrite();
        else out.once('drain', () => resolveWrite());
      }),
    commit: async () => undefined,
    abandon: async () => undefined,
  };
}

export const auditExport: Command = {
  words: ['audit', 'export'],
  summary:
    'Write the sealed audit rows recorded before DATE, oldest first, as JSON lines with their seal_seq, prev_hash and hash (the rows `audit prune --before DATE` deletes); every hash is checked on the way.',
  options: {
    ...BEFORE_OPTION,
    out: {
      type: 'string',
      value: 'FILE',
      description: 'write to FILE (complete or not at all) instead of stdout',
    },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const before = beforeFlag(ctx.flags);
    const out = typeof ctx.flags.out === 'string' ? resolve(ctx.flags.out) : undefined;
    const client = adminClient(loadAdminClientConfig(ctx.flags, ctx.env));
    const sink = out ? await fileSink(out) : streamSink(ctx.stdout);
    // The export is a part of the chain: its first row's prev_hash is its anchor.
    const verifier = auditVerifier({ anchored: true });
    let first: number | null = null;
    let last: number | null = null;
    let rows = 0;
    let rest = '';
    const take = async (line: string) => {
      if (line === '') return;
      const view = JSON.parse(line) as AuditView;
      if (!verifier.check(toRecord(view))) {
        const v = verifier.result();
        const where = v.ok ? '' : `seal_seq ${v.sealSeq} (${v.problem})`;
        throw new BatonError(
          'ERR_INTERNAL',
          `the exported rows do not verify at ${where}: run baton audit verify`,
        );
      }
      first ??= view.seal_seq;
      last = view.seal_seq;
      rows += 1;
    };
    try {
      await client.download(
        `/v1/admin/audit/export?before=${encodeURIComponent(before.toISOString())}`,
        async (chunk) => {
          const text = rest + chunk.toString('utf8');
          const cut = text.lastIndexOf('\n');
          rest = text.slice(cut + 1);
          if (cut < 0) return;
          const whole = text.slice(0, cut + 1);
          for (const line of whole.split('\n')) await take(line);
          await sink.write(whole);
        },
      );
      if (rest !== '')
        throw new BatonError('ERR_SERVER_UNREACHABLE', 'the export ended in the middle of a row');
      await sink.commit();
    } catch (e) {
      await sink.abandon();
      throw e;
    }
    if (!out) return 0;
    if (ctx.flags.json)
      ctx.stdout.write(`${JSON.stringify({ rows, first_seq: first, through_seq: last, file: out })}\n`);
    else
      ctx.stdout.write(
        rows
          ? `exported ${rows} rows, seal_seq ${first} to ${last}, to ${out}\n`
          : `no sealed row recorded before ${before.toISOString()}: ${out} is empty\n`,
      );
    return 0;
  },
};

interface PruneAnswer {
  pruned: number;
  first_seq: number | null;
  through_seq: number | null;
  done: boolean;
}

export const auditPrune: Command = {
  words: ['audit', 'prune'],
  summary:
    'Delete the sealed audit rows recorded before DATE, oldest first (export them first: baton audit export). Refused for rows within --retain-audit of now; the prune is itself recorded in the chain, which then verifies from its first kept row. Role admin.',
  options: { ...BEFORE_OPTION, ...ADMIN_OPTIONS },
  async run(ctx) {
    const before = beforeFlag(ctx.flags);
    const client = adminClient(loadAdminClientConfig(ctx.flags, ctx.env));
    let pruned = 0;
    let first: number | null = null;
    let through: number | null = null;
    // Each request deletes a bounded number of rows (domain/audit-retention.ts PRUNE_MAX_ROWS).
    for (;;) {
      const a = await client.post<PruneAnswer>('/v1/admin/audit/prune', { before: before.toISOString() });
      pruned += a.pruned;
      first ??= a.first_seq;
      through = a.through_seq ?? through;
      if (a.done || a.pruned === 0) break;
    }
    if (ctx.flags.json)
      ctx.stdout.write(`${JSON.stringify({ pruned, first_seq: first, through_seq: through })}\n`);
    else
      ctx.stdout.write(
        pruned
          ? `pruned ${pruned} rows, seal_seq ${first} to ${through}; the chain now starts at seal_seq ${through! + 1}\n`
          : `nothing to prune: no sealed row recorded before ${before.toISOString()} but the chain head\n`,
      );
    return 0;
  },
};

export const auditCheckpoint: Command = {
  words: ['audit', 'checkpoint'],
  summary:
    'Print a signed checkpoint of the audit chain (its head: seq, hash, at, signed by the signing CA) as JSON, to keep where the database cannot be written, e.g. baton audit checkpoint > FILE; check it later with baton audit verify --checkpoint FILE.',
  options: { ...ADMIN_OPTIONS },
  async run(ctx) {
    const cp = await adminClient(loadAdminClientConfig(ctx.flags, ctx.env)).get<AuditCheckpoint>(
      '/v1/admin/audit/checkpoint',
    );
    ctx.stdout.write(`${JSON.stringify(cp)}\n`);
    return 0;
  },
};
