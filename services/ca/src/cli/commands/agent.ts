import { join, resolve } from 'node:path';
import {
  AgentError,
  type AgentEvent,
  type AgentRunResult,
  CaClient,
  NodeAgent,
  type NodeIdentitySummary,
  parseJoinToken,
  type RunOnceResult,
  type Timers,
  loadPeerCredentialReader,
  WorkloadApiServer,
  WorkloadApiState,
  type WorkloadResult,
} from '../../../../../clients/rotation/src';
import { loadAdminClientConfig } from '../../config';
import { systemClock } from '../../domain/clock';
import { parseDuration } from '../../domain/duration';
import { BatonError } from '../../ground/errors';
import { type Command, JSON_OPTION } from '../command';

/**
 * `baton agent` (CONTRACT "Command line", node side): the node identity, the workload SVIDs of
 * the entries parented to the node, DIR/crl.pem and, as a daemon, the revocation feed
 * (clients/rotation NodeAgent; docs/agent.md). The token is a secret: it is never printed, not
 * even in an error.
 *
 * `--once` prints one line per thing done (the node line is always there), or one JSON object
 * with --json; each failure is one line on stderr and makes the exit status 1.
 */

/** Ref'd: the daemon's own purpose is to stay alive between renewals. */
const processTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

const ACTION_WORDS = { attested: 'attested', renewed: 'renewed', 're-attested': 're-attested' } as const;

function nodeLine(r: RunOnceResult): string {
  const i = r.identity;
  if (r.action === 'none')
    return `nothing due until ${i.refreshAt.toISOString()} (node ${i.nodeId}, serial ${i.serial})\n`;
  return `${ACTION_WORDS[r.action]} node ${i.nodeId} (serial ${i.serial}, refresh at ${i.refreshAt.toISOString()})\n`;
}

function workloadLine(w: WorkloadResult): string {
  if (w.action === 'removed') return `removed workload ${w.name}\n`;
  const why = w.reason ? `: ${w.reason}` : '';
  return `${w.action} workload ${w.name} (${w.spiffeId}, serial ${w.serial}, refresh at ${w.refreshAt?.toISOString()})${why}\n`;
}

const crlLine = (crls: number | undefined) => `crl updated (${crls} CRL${crls === 1 ? '' : 's'})\n`;

const firstLine = (e: Error & { code?: string }) =>
  `${e.message.split('\n')[0]}${e.code ? ` (${e.code})` : ''}`;

function lines(r: AgentRunResult): string {
  let out = r.node ? nodeLine(r.node) : '';
  for (const w of r.workloads) if (w.action !== 'failed') out += workloadLine(w);
  if (r.crl.action === 'updated') out += crlLine(r.crl.crls);
  return out;
}

/** One stderr line per failure, each said once (an unreachable CA fails every step alike). */
function failures(r: AgentRunResult): string[] {
  const out: string[] = [];
  if (r.nodeError) out.push(`baton: ${firstLine(r.nodeError)}\n`);
  if (r.workloadsError) out.push(`baton: workloads: ${firstLine(r.workloadsError)}\n`);
  for (const w of r.workloads)
    if (w.action === 'failed' && w.error) out.push(`baton: workload ${w.name}: ${firstLine(w.error)}\n`);
  if (r.crl.action === 'failed') out.push(`baton: crl: ${firstLine(r.crl.error)}\n`);
  return [...new Set(out)];
}

const errorJson = (e: Error & { code?: string }) => ({ code: e.code ?? 'ERR_INTERNAL', message: e.message });
const iso = (d: Date | undefined) => d?.toISOString();

function nodeJson(i: NodeIdentitySummary) {
  return {
    node_id: i.nodeId,
    serial: i.serial,
    spiffe_id: i.spiffeId,
    expires_at: i.expiresAt.toISOString(),
    refresh_at: i.refreshAt.toISOString(),
  };
}

/** The node fields stay at the top level, as before workloads and CRLs were added. */
function json(r: AgentRunResult): string {
  return `${JSON.stringify({
    ...(r.node ? { action: r.node.action, ...nodeJson(r.node.identity) } : {}),
    ...(r.nodeError ? { action: 'failed', error: errorJson(r.nodeError) } : {}),
    workloads: r.workloads.map((w) => ({
      name: w.name,
      action: w.action,
      spiffe_id: w.spiffeId,
      serial: w.serial,
      expires_at: iso(w.expiresAt),
      refresh_at: iso(w.refreshAt),
      reason: w.reason,
      error: w.error && errorJson(w.error),
    })),
    ...(r.workloadsError ? { workloads_error: errorJson(r.workloadsError) } : {}),
    crl: r.crl.action === 'failed' ? { action: 'failed', error: errorJson(r.crl.error) } : r.crl,
  })}\n`;
}

const secondsUntil = (at: Date | undefined) =>
  at ? Math.max(0, Math.ceil((at.getTime() - systemClock.now().getTime()) / 1000)) : 0;

export const agent: Command = {
  words: ['agent'],
  summary:
    "Run the node agent: attest with a join token after checking the server against the token's pin, write DIR/node/{cert.pem,key.pem} and DIR/bundle.pem, renew over mTLS at the server's refresh_at, keep DIR/workloads/<entry>/{cert.pem,key.pem,bundle.pem} for the entries parented to this node and DIR/crl.pem fresh, and follow the revocation feed, until SIGTERM/SIGINT or until the node is revoked. An expired node certificate needs a new token.",
  options: {
    server: {
      type: 'string',
      value: 'URL',
      description: 'CA URL (env BATON_SERVER, default https://127.0.0.1:8443)',
    },
    dir: { type: 'string', value: 'DIR', description: 'directory of the agent files (required)' },
    token: {
      type: 'string',
      value: 'TOKEN',
      description: 'join token, for the first attestation or after expiry (env BATON_TOKEN)',
    },
    once: { type: 'boolean', description: 'do what is due now (node, workloads, crl.pem) and exit' },
    'sync-interval': {
      type: 'string',
      value: 'D',
      description:
        'list the entries and check the CRLs and JWT keys at least this often (default 30s, at least 1s); revocations arrive through the feed at once',
    },
    socket: {
      type: 'string',
      value: 'PATH',
      description:
        'serve the SPIFFE Workload API on this Unix socket (default DIR/api.sock; "none" turns it off; not with --once)',
    },
    ...JSON_OPTION,
  },
  async run(ctx) {
    const { server } = loadAdminClientConfig(ctx.flags, ctx.env);
    const dir = ctx.flags.dir;
    if (typeof dir !== 'string' || dir === '') throw new BatonError('ERR_USAGE', '--dir is required');
    const tokenFlag = typeof ctx.flags.token === 'string' ? ctx.flags.token : undefined;
    const token = (tokenFlag ?? ctx.env.BATON_TOKEN)?.trim() || undefined;
    if (token) {
      try {
        parseJoinToken(token);
      } catch (e) {
        throw new BatonError('ERR_USAGE', `--token: ${(e as Error).message}`);
      }
    }
    const syncFlag = ctx.flags['sync-interval'];
    let syncIntervalMs = 30_000;
    if (typeof syncFlag === 'string') {
      try {
        syncIntervalMs = parseDuration(syncFlag, '--sync-interval');
      } catch (e) {
        throw new BatonError('ERR_USAGE', (e as Error).message);
      }
      if (syncIntervalMs < 1000) throw new BatonError('ERR_USAGE', '--sync-interval: at least 1s');
    }
    const socketFlag = typeof ctx.flags.socket === 'string' ? ctx.flags.socket : undefined;
    if (socketFlag === '') throw new BatonError('ERR_USAGE', '--socket: a path, or none');
    const socketPath =
      ctx.flags.once || socketFlag === 'none'
        ? undefined
        : resolve(socketFlag ?? join(resolve(dir), 'api.sock'));
    // Fail closed: without the kernel's word on who is calling, there is no Workload API at all.
    const peers = socketPath ? loadPeerCredentialReader() : null;
    if (socketPath && !peers)
      throw new AgentError(
        'ERR_NATIVE_MISSING',
        'the Workload API needs the native peer-credential module (services/ca/native, built by `npm run build` with python3, make and a C compiler); build it, or run with --socket none',
      );
    const client = new CaClient({ serverUrl: server });
    const onEvent = (e: AgentEvent) => {
      switch (e.type) {
        case 'waiting':
          ctx.stdout.write(`next renewal at ${e.until.toISOString()}\n`);
          break;
        case 'retry':
          ctx.stderr.write(`baton: ${firstLine(e.error)}; retrying in ${Math.ceil(e.delayMs / 1000)}s\n`);
          break;
        case 'workload':
          if (e.result.action !== 'failed') ctx.stdout.write(workloadLine(e.result));
          else if (e.result.error)
            ctx.stderr.write(
              `baton: workload ${e.result.name}: ${firstLine(e.result.error)}; retrying in ${secondsUntil(e.result.retryAt)}s\n`,
            );
          break;
        case 'crl':
          ctx.stdout.write(crlLine(e.result.crls));
          break;
        case 'error':
          ctx.stderr.write(
            `baton: ${e.scope}: ${firstLine(e.error)}; retrying in ${Math.ceil((e.retryInMs ?? 0) / 1000)}s\n`,
          );
          break;
        case 'revoked':
          // run() rejects right after with the one line that says so.
          break;
        default:
          ctx.stdout.write(nodeLine({ action: e.type, identity: e.identity }));
      }
    };
    const workloadApi = socketPath ? new WorkloadApiState() : undefined;
    const nodeAgent = new NodeAgent({
      dir: resolve(dir),
      clock: systemClock,
      client,
      random: Math.random,
      token,
      timers: processTimers,
      onEvent: ctx.flags.once ? undefined : onEvent,
      syncIntervalMs,
      workloadApi,
    });
    let socket: WorkloadApiServer | undefined;
    try {
      if (ctx.flags.once) {
        const r = await nodeAgent.runOnce();
        ctx.stdout.write(ctx.flags.json ? json(r) : lines(r));
        const failed = failures(r);
        for (const line of failed) ctx.stderr.write(line);
        return failed.length > 0 ? 1 : 0;
      }
      if (socketPath && workloadApi && peers) {
        socket = await WorkloadApiServer.start({
          socketPath,
          state: workloadApi,
          peers,
          clock: systemClock,
          mintJwtSvid: (spiffeId, audience) => nodeAgent.fetchJwtSvid(spiffeId, audience),
          onError: (e) => ctx.stderr.write(`baton: workload api: ${firstLine(e)}\n`),
        });
        ctx.stdout.write(`workload api: ${socket.address}\n`);
      }
      try {
        await nodeAgent.run(ctx.stopSignal);
      } catch (e) {
        if (!socket || (e instanceof AgentError && e.code === 'ERR_TOKEN_REQUIRED')) throw e;
        // CONTRACT: a revoked node's agent keeps answering PermissionDenied until it is stopped,
        // so that its workloads learn why, rather than finding no socket.
        ctx.stderr.write(`baton: ${firstLine(e as Error)}\n`);
        ctx.stderr.write('baton: the Workload API answers PermissionDenied until the agent is stopped\n');
        await ctx.stopSignal;
        return 1;
      }
      return 0;
    } catch (e) {
      // A missing token is a usage error (exit 2); every other refusal is a runtime one (exit 1).
      if (e instanceof AgentError && e.code === 'ERR_TOKEN_REQUIRED')
        throw new BatonError('ERR_USAGE', e.message, { cause: e });
      throw e;
    } finally {
      await socket?.stop();
      client.close();
    }
  },
};
