import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  AgentError,
  type AgentEvent,
  type AgentRunResult,
  CaClient,
  EK_TYPES,
  type EkType,
  NodeAgent,
  type NodeIdentitySummary,
  NodeTpm,
  nodeIdOfEk,
  parseJoinToken,
  resolveTcti,
  type RunOnceResult,
  type Timers,
  Tpm2Tools,
  TpmAttestor,
  loadPeerCredentialReader,
  WorkloadApiServer,
  WorkloadApiState,
  type WorkloadResult,
} from '../../../../../clients/rotation/src';
import type { Flags } from '../../config';
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

/** A root pin: lowercase base32 (no padding) of a SHA-256, as in join tokens (CONTRACT "Join tokens"). */
const PIN_RE = /^[a-z2-7]{52}$/;

const TPM_OPTIONS: Command['options'] = {
  'tpm-tcti': {
    type: 'string',
    value: 'TCTI',
    description:
      "the TPM's TCTI for tpm2-tools, e.g. device:/dev/tpm0 or swtpm:path=SOCK (env TPM2TOOLS_TCTI, default device:/dev/tpmrm0, the kernel resource manager)",
  },
  'tpm-ek-type': {
    type: 'string',
    value: 'rsa|ecc',
    description: 'which TCG default endorsement key: rsa (RSA 2048, the default) or ecc (NIST P-256)',
  },
};

const usage = (message: string) => new BatonError('ERR_USAGE', message);
const stringFlag = (flags: Flags, name: string) =>
  typeof flags[name] === 'string' ? (flags[name] as string) : undefined;

/** The node's TPM as the TPM flags name it; working files go in private directories under `workParent`. */
function nodeTpm(
  ctx: { flags: Flags; env: Readonly<Record<string, string | undefined>> },
  workParent: string,
) {
  const ekType = stringFlag(ctx.flags, 'tpm-ek-type') ?? 'rsa';
  if (!(EK_TYPES as readonly string[]).includes(ekType)) throw usage('--tpm-ek-type: rsa or ecc');
  const tctiFlag = stringFlag(ctx.flags, 'tpm-tcti');
  if (tctiFlag !== undefined && tctiFlag.trim() === '')
    throw usage('--tpm-tcti: a TCTI, e.g. device:/dev/tpmrm0');
  const tools = new Tpm2Tools({ tcti: resolveTcti(tctiFlag, ctx.env), env: ctx.env });
  return new NodeTpm(tools, ekType as EkType, workParent);
}

/**
 * `--tpm` (CONTRACT "TPM node attestation"): no token, so `--pin` (or BATON_PIN) or an existing
 * DIR/bundle.pem says which CA to trust on first contact. Undefined without --tpm.
 */
function tpmAttestor(ctx: Parameters<Command['run']>[0], dir: string, client: CaClient, token?: string) {
  const pinFlag = stringFlag(ctx.flags, 'pin');
  if (!ctx.flags.tpm) {
    if (
      pinFlag !== undefined ||
      ctx.flags['tpm-tcti'] !== undefined ||
      ctx.flags['tpm-ek-type'] !== undefined
    )
      throw usage('--pin, --tpm-tcti and --tpm-ek-type go with --tpm (a join token carries its own pin)');
    return undefined;
  }
  if (token)
    throw usage(
      '--tpm and a join token (--token or BATON_TOKEN) exclude each other: the node attests with one',
    );
  const pin = (pinFlag ?? ctx.env.BATON_PIN)?.trim() || undefined;
  if (pin !== undefined && !PIN_RE.test(pin))
    throw usage('--pin: not a root pin (52 characters of lowercase base32, as `baton ca init` prints it)');
  const bundlePath = join(dir, 'bundle.pem');
  if (!pin && !existsSync(bundlePath))
    throw usage(
      '--tpm needs --pin ROOT_PIN (the root pin `baton ca init` printed) until DIR/bundle.pem exists',
    );
  return new TpmAttestor({ client, tpm: nodeTpm(ctx, dir), pin, bundlePath });
}

const secondsUntil = (at: Date | undefined) =>
  at ? Math.max(0, Math.ceil((at.getTime() - systemClock.now().getTime()) / 1000)) : 0;

export const agent: Command = {
  words: ['agent'],
  summary:
    "Run the node agent: attest with a join token after checking the server against the token's pin (or, with --tpm, with the node's TPM after checking the server against --pin), write DIR/node/{cert.pem,key.pem} and DIR/bundle.pem, renew over mTLS at the server's refresh_at, keep DIR/workloads/<entry>/{cert.pem,key.pem,bundle.pem} for the entries parented to this node and DIR/crl.pem fresh, and follow the revocation feed, until SIGTERM/SIGINT or until the node is revoked. An expired node certificate needs a new token; with --tpm the agent attests again with the TPM.",
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
    tpm: {
      type: 'boolean',
      description:
        'attest with the TPM 2.0 endorsement key instead of a token, first and after expiry (needs tpm2-tools)',
    },
    pin: {
      type: 'string',
      value: 'ROOT_PIN',
      description:
        'with --tpm: the root pin `baton ca init` printed, which CA to trust until DIR/bundle.pem exists (env BATON_PIN)',
    },
    ...TPM_OPTIONS,
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
    let attestor: TpmAttestor | undefined;
    try {
      attestor = tpmAttestor(ctx, resolve(dir), client, token);
    } catch (e) {
      client.close();
      throw e;
    }
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
      attestor,
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
      // A missing token or pin is a usage error (exit 2); every other refusal is a runtime one (exit 1).
      if (e instanceof AgentError && (e.code === 'ERR_TOKEN_REQUIRED' || e.code === 'ERR_PIN_REQUIRED'))
        throw new BatonError('ERR_USAGE', e.message, { cause: e });
      throw e;
    } finally {
      await socket?.stop();
      client.close();
    }
  },
};

/** `baton agent tpm-id` (CONTRACT "TPM node attestation"): what an admin enrolls. */
export const agentTpmId: Command = {
  words: ['agent', 'tpm-id'],
  summary:
    "Print the EK identifier of this node's TPM alone on stdout (lowercase hex SHA-256 of the endorsement key's SubjectPublicKeyInfo), for `baton node enroll --tpm-ek-id`; the node ID is tpm- and its first 20 characters. Needs tpm2-tools and access to the TPM.",
  options: { ...TPM_OPTIONS, ...JSON_OPTION },
  async run(ctx) {
    // The EK's public parts only: a private directory of the system's temporary one will do.
    const ekId = await nodeTpm(ctx, tmpdir()).ekIdentifier();
    ctx.stdout.write(
      ctx.flags.json ? `${JSON.stringify({ ek_id: ekId, node_id: nodeIdOfEk(ekId) })}\n` : `${ekId}\n`,
    );
    return 0;
  },
};
