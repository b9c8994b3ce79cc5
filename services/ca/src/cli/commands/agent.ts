import { resolve } from 'node:path';
import {
  AgentError,
  CaClient,
  NodeIdentityStore,
  NodeRotator,
  type RotatorEvent,
  type RunOnceResult,
  parseJoinToken,
  type Timers,
} from '../../../../../clients/rotation/src';
import { loadAdminClientConfig } from '../../config';
import { systemClock } from '../../domain/clock';
import { BatonError } from '../../domain/errors';
import { type Command, JSON_OPTION } from '../command';

/**
 * `baton agent` (CONTRACT "Command line", node side): the node identity. Workload SVIDs and CRLs
 * come with later issues. The token is a secret: it is never printed, not even in an error.
 */

/** Ref'd: the daemon's own purpose is to stay alive between renewals. */
const processTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

const ACTION_WORDS = { attested: 'attested', renewed: 'renewed', 're-attested': 're-attested' } as const;

function line(r: RunOnceResult): string {
  const i = r.identity;
  if (r.action === 'none')
    return `nothing due until ${i.refreshAt.toISOString()} (node ${i.nodeId}, serial ${i.serial})\n`;
  return `${ACTION_WORDS[r.action]} node ${i.nodeId} (serial ${i.serial}, refresh at ${i.refreshAt.toISOString()})\n`;
}

function json(r: RunOnceResult): string {
  const i = r.identity;
  return `${JSON.stringify({
    action: r.action,
    node_id: i.nodeId,
    serial: i.serial,
    spiffe_id: i.spiffeId,
    expires_at: i.expiresAt.toISOString(),
    refresh_at: i.refreshAt.toISOString(),
  })}\n`;
}

export const agent: Command = {
  words: ['agent'],
  summary:
    "Run the node agent: attest with a join token after checking the server against the token's pin, write DIR/node/{cert.pem,key.pem} and DIR/bundle.pem, and renew over mTLS at the server's refresh_at until SIGTERM/SIGINT. An expired node certificate needs a new token.",
  options: {
    server: {
      type: 'string',
      value: 'URL',
      description: 'CA URL (env BATON_SERVER, default https://127.0.0.1:8443)',
    },
    dir: { type: 'string', value: 'DIR', description: 'directory of the node identity files (required)' },
    token: {
      type: 'string',
      value: 'TOKEN',
      description: 'join token, for the first attestation or after expiry (env BATON_TOKEN)',
    },
    once: { type: 'boolean', description: 'do what is due now and exit' },
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
    const client = new CaClient({ serverUrl: server });
    const onEvent = (e: RotatorEvent) => {
      if (e.type === 'waiting') ctx.stdout.write(`next renewal at ${e.until.toISOString()}\n`);
      else if (e.type === 'retry') {
        const code = e.error.code ? ` (${e.error.code})` : '';
        ctx.stderr.write(
          `baton: ${e.error.message.split('\n')[0]}${code}; retrying in ${Math.ceil(e.delayMs / 1000)}s\n`,
        );
      } else ctx.stdout.write(line({ action: e.type, identity: e.identity }));
    };
    const rotator = new NodeRotator({
      clock: systemClock,
      client,
      store: new NodeIdentityStore(resolve(dir)),
      random: Math.random,
      token,
      timers: processTimers,
      onEvent: ctx.flags.once ? undefined : onEvent,
    });
    try {
      if (ctx.flags.once) {
        const r = await rotator.runOnce();
        ctx.stdout.write(ctx.flags.json ? json(r) : line(r));
        return 0;
      }
      await rotator.run(ctx.stopSignal);
      return 0;
    } catch (e) {
      // A missing token is a usage error (exit 2); every other refusal is a runtime one (exit 1).
      if (e instanceof AgentError && e.code === 'ERR_TOKEN_REQUIRED')
        throw new BatonError('ERR_USAGE', e.message, { cause: e });
      throw e;
    } finally {
      client.close();
    }
  },
};
