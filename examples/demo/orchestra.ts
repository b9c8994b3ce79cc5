import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { request, type Server } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import {
  type Authorizer,
  authorizeIds,
  createMtlsServer,
  Identity,
  type IdentityError,
  mtlsAgent,
  mtlsRequest,
  RevocationGuard,
  requestPeer,
  tlsPeer,
} from '../../clients/identity/src';
import { onCleanup, say } from './stage';

/**
 * The players of the demo: small services that use the identity library exactly as a real one
 * would. Each reads its SVID from the directory its node's agent keeps (workloads/<entry>), keeps a
 * RevocationGuard on the agent's crl.pem and the CA's revocation feed, and talks mutual TLS.
 */

export interface Player {
  name: string;
  identity: Identity;
  guard: RevocationGuard;
  server: Server;
  url: string;
  /** Connections refused at the handshake (new) and closed later (open), by the peer's SPIFFE ID. */
  refused: { spiffeId: string; code: string; open: boolean }[];
  /** TLS handshakes that failed before any authorization: an unknown CA, say. */
  handshakeErrors: string[];
  /** Requests answered, by the caller's SPIFFE ID. */
  answered: Map<string, number>;
}

export interface PlayerParams {
  name: string;
  /** The agent's directory of the node this service runs on. */
  agentDir: string;
  /** The registration entry whose SVID the service holds. */
  entry: string;
  serverUrl: string;
  /** Who may call this service. */
  authorize: Authorizer;
}

/** A service with its identity, its guard and an mTLS server (fail-closed, the default for servers). */
export async function startPlayer(p: PlayerParams): Promise<Player> {
  const identity = (await Identity.fromDirectory(join(p.agentDir, 'workloads', p.entry))).watch();
  onCleanup(() => identity.close());
  const guard = await RevocationGuard.start({
    identity,
    crlFile: join(p.agentDir, 'crl.pem'),
    serverUrl: p.serverUrl,
  });
  onCleanup(() => guard.close());
  guard.on('revoked', (serials, source) =>
    say(
      p.name,
      `learned from the ${source === 'feed' ? 'revocation feed' : 'CRL'}: ${serials.length} certificate(s) revoked`,
    ),
  );
  guard.on('error', (e) => say(p.name, `revocation source: ${e.message}`));

  const answered = new Map<string, number>();
  const refused: Player['refused'] = [];
  const handshakeErrors: string[] = [];
  const served = new WeakSet<TLSSocket>();
  const server = createMtlsServer(
    identity,
    {
      authorize: p.authorize,
      revocation: guard,
      onRefused: (e: IdentityError, socket) => {
        const spiffeId = tlsPeer(socket)?.spiffeId ?? 'an unknown peer';
        const open = served.has(socket);
        refused.push({ spiffeId, code: e.code, open });
        // The first of each kind is the news; the rest are tallied at the end.
        if (
          refused.filter((r) => r.spiffeId === spiffeId && r.code === e.code && r.open === open).length === 1
        )
          say(p.name, `${open ? 'closed the open connection of' : 'refused'} ${spiffeId}: ${e.message}`);
      },
    },
    (req, res) => {
      served.add(req.socket as TLSSocket);
      const you = requestPeer(req).spiffeId;
      answered.set(you, (answered.get(you) ?? 0) + 1);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ from: identity.current().spiffeId, you }));
    },
  );
  server.on('tlsClientError', (e: Error & { code?: string }) => {
    handshakeErrors.push(e.message);
    say(p.name, `refused a TLS handshake: ${e.code ?? e.message}`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  onCleanup(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as { port: number };
  return {
    name: p.name,
    identity,
    guard,
    server,
    url: `https://127.0.0.1:${port}/`,
    refused,
    handshakeErrors,
    answered,
  };
}

export interface Caller {
  ok: number;
  failed: number;
  /** The outcome of the last call: 'HTTP 200' or the error. */
  last: string;
  /** Successful calls since the last stop() / revocation mark. */
  okSince(mark: number): number;
  stop(): void;
}

/**
 * Calls `to` every `everyMs` on a keep-alive mtlsAgent that talks only to `toId`. Prints the first
 * outcome and every change, and a tally every tenth call in between.
 */
export function callEvery(
  from: Player,
  to: { name: string; url: string; id: string },
  everyMs: number,
): Caller {
  const agent = mtlsAgent(from.identity, { authorize: authorizeIds([to.id]), revocation: from.guard });
  const log: { at: number; ok: boolean }[] = [];
  const c: Caller = {
    ok: 0,
    failed: 0,
    last: '',
    okSince: (mark) => log.filter((l) => l.ok && l.at > mark).length,
    stop: () => {
      clearInterval(timer);
      agent.destroy();
    },
  };
  let busy = false;
  let same = 0;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    let outcome: string;
    try {
      const r = await mtlsRequest(from.identity, to.url, { agent, timeoutMs: 3000 });
      outcome = `HTTP ${r.status}`;
    } catch (e) {
      const err = e as Error & { code?: string };
      outcome = `refused (${err.code ?? err.message})`;
    }
    busy = false;
    const ok = outcome === 'HTTP 200';
    log.push({ at: Date.now(), ok });
    if (ok) c.ok++;
    else c.failed++;
    same = outcome === c.last ? same + 1 : 1;
    if (same === 1 || same % 10 === 0)
      say(from.name, `→ ${to.name}: ${outcome}${same > 1 ? ` (${same} calls in a row)` : ''}`);
    c.last = outcome;
  }, everyMs);
  onCleanup(() => c.stop());
  return c;
}

/**
 * The rogue conductor: a certificate for the manager's very SPIFFE ID, from another CA. It does not
 * verify the server (it has no way to), presents its certificate, and reports what happened.
 */
export function rogueCall(workloadDir: string, url: string): Promise<string> {
  const read = (f: string) => readFileSync(join(workloadDir, f), 'utf8');
  return new Promise((resolve) => {
    const req = request(
      url,
      {
        cert: read('cert.pem'),
        key: read('key.pem'),
        rejectUnauthorized: false,
        agent: false,
        timeout: 3000,
      },
      (res) => {
        res.resume();
        resolve(`HTTP ${res.statusCode}`);
      },
    );
    req.on('error', (e: Error & { code?: string }) => resolve(`refused (${e.code ?? e.message})`));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}
