import { resolve } from 'node:path';
import { auditVerifier } from '../../domain/audit';
import { loadAdminClientConfig } from '../../config';
import type { AuditRecord } from '../../domain/ports';
import { MAX_PAGE_LIMIT } from '../../domain/admin-lists';
import { adminClient } from '../admin-client';
import { printAdminList, totalLimitFlag } from '../admin-list';
import { ADMIN_OPTIONS, type Command } from '../command';
import { type CheckpointCheck, checkpointFailure, readCheckpoint } from '../checkpoint-file';

/** One audit row as `GET /v1/admin/audit` renders it. */
export interface AuditView {
  id: number;
  at: string;
  event: string;
  actor: string;
  source: string | null;
  subject: string | null;
  outcome: 'success' | 'failure';
  details: Record<string, unknown>;
  seal_seq: number | null;
  prev_hash: string | null;
  hash: string | null;
}

/** The API's view back into a domain record, for verifying the chain client-side. */
export const toRecord = (v: AuditView): AuditRecord => ({
  id: v.id,
  at: new Date(v.at),
  event: v.event,
  actor: v.actor,
  source: v.source,
  subject: v.subject,
  outcome: v.outcome,
  details: v.details,
  sealSeq: v.seal_seq,
  prevHash: v.prev_hash === null ? null : Buffer.from(v.prev_hash, 'hex'),
  hash: v.hash === null ? null : Buffer.from(v.hash, 'hex'),
});

export const auditList: Command = {
  words: ['audit', 'list'],
  summary:
    'List audit events, newest first, filtered by actor, subject, event and time. Pages through all of them (--limit N stops after N); --json prints one document.',
  options: {
    actor: { type: 'string', value: 'SPIFFE_ID', description: 'only events by this actor' },
    subject: { type: 'string', value: 'SUBJECT', description: 'only events about this subject' },
    event: { type: 'string', value: 'EVENT', description: 'only this event, e.g. node.revoked' },
    since: { type: 'string', value: 'TIME', description: 'ISO 8601 time, inclusive' },
    until: { type: 'string', value: 'TIME', description: 'ISO 8601 time, exclusive' },
    limit: { type: 'string', value: 'N', description: 'stop after N events (default: all)' },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const query = new URLSearchParams();
    for (const k of ['actor', 'subject', 'event', 'since', 'until']) {
      const v = ctx.flags[k];
      if (typeof v === 'string') query.set(k, v);
    }
    const limit = totalLimitFlag(ctx.flags.limit);
    await printAdminList<AuditView>(
      ctx,
      adminClient(loadAdminClientConfig(ctx.flags, ctx.env)),
      { path: '/v1/admin/audit', member: 'events', query, limit },
      {
        headers: ['ID', 'TIME', 'EVENT', 'OUTCOME', 'ACTOR', 'SUBJECT'],
        row: (e) => [String(e.id), e.at, e.event, e.outcome, e.actor, e.subject],
      },
    );
    return 0;
  },
};

/** The chain is read in pages of the API's largest limit, by seal_seq (`sealed_after`). */
const PAGE = MAX_PAGE_LIMIT;

export const auditVerify: Command = {
  words: ['audit', 'verify'],
  summary:
    'Walk the audit hash chain and recompute every hash; exit 1 naming the first row that was changed, removed or reordered. After a prune the chain is verified from its first kept row, whose prev_hash is the anchor.',
  options: {
    checkpoint: {
      type: 'string',
      value: 'FILE',
      description:
        'also check a checkpoint saved by baton audit checkpoint: exit 1 naming it when its signature does not verify or the chain no longer holds its row with its hash',
    },
    ...ADMIN_OPTIONS,
  },
  async run(ctx) {
    const cfg = loadAdminClientConfig(ctx.flags, ctx.env);
    const client = adminClient(cfg);
    let cp: CheckpointCheck | undefined;
    if (typeof ctx.flags.checkpoint === 'string') {
      const read = await readCheckpoint(resolve(ctx.flags.checkpoint), cfg);
      if ('failure' in read) {
        ctx.stderr.write(`baton: ${read.failure}\n`);
        return 1;
      }
      cp = read.ok;
    }
    const verifier = auditVerifier();
    let after = 0;
    let unsealed = 0;
    let broken = false;
    let last = 0;
    let hashAtSeq: string | undefined;
    for (;;) {
      const page = await client.get<{ events: AuditView[]; unsealed: number }>(
        `/v1/admin/audit?sealed_after=${after}&limit=${PAGE}`,
      );
      unsealed = page.unsealed;
      for (const e of page.events) {
        if (!verifier.check(toRecord(e))) {
          broken = true;
          break;
        }
        last = e.seal_seq ?? last;
        if (cp && e.seal_seq === cp.checkpoint.seq) hashAtSeq = e.hash ?? undefined;
      }
      if (page.events.length < PAGE || broken) break;
      after = page.events[page.events.length - 1]!.seal_seq ?? after;
    }
    const v = verifier.result();
    const cpFailure = cp && v.ok ? checkpointFailure(cp, { from: v.from, last, hashAtSeq }) : null;
    if (ctx.flags.json)
      ctx.stdout.write(
        `${JSON.stringify({
          ...v,
          unsealed,
          ...(cp ? { checkpoint: { seq: cp.checkpoint.seq, ok: v.ok && !cpFailure } } : {}),
        })}\n`,
      );
    if (v.ok && !cpFailure) {
      if (!ctx.flags.json) {
        const from =
          v.from > 1
            ? ` from seal_seq ${v.from} (its prev_hash is the anchor: the rows before it were pruned)`
            : '';
        ctx.stdout.write(
          `audit log verified: ${v.rows} sealed rows${from}, chain intact${unsealed ? ` (${unsealed} not sealed yet)` : ''}\n`,
        );
        if (cp) ctx.stdout.write(`${cp.name} holds\n`);
      }
      return 0;
    }
    if (cpFailure) {
      ctx.stderr.write(`baton: ${cpFailure}\n`);
      return 1;
    }
    if (v.ok) return 1;
    const where =
      v.problem === 'removed'
        ? `row with seal_seq ${v.sealSeq} is missing (before row ${v.rowId})`
        : `row ${v.rowId} (seal_seq ${v.sealSeq}) was ${v.problem}`;
    // A break at or before the checkpoint's row is a checkpoint that no longer holds.
    if (cp && v.sealSeq <= cp.checkpoint.seq) ctx.stderr.write(`baton: ${cp.name} does not hold: ${where}\n`);
    else ctx.stderr.write(`baton: audit log tampered: ${where}\n`);
    return 1;
  },
};
