import { type Agent, request } from 'node:https';
import type { OutgoingHttpHeaders } from 'node:http';
import type { SecureContext } from 'node:tls';

/** Where and how to connect: every benchmark target is on 127.0.0.1. */
export interface TlsTarget {
  /** https://127.0.0.1:PORT */
  url: string;
  /** PEM roots to trust. */
  ca: string;
  /** Client certificate chain and key PEM (mTLS). */
  cert?: string;
  key?: string;
  /**
   * The same three made into a TLS context ahead of time, for fresh connections: a node keeps its
   * credentials loaded, so the generator should not pay for parsing them on every connection.
   */
  secureContext?: SecureContext;
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

const TIMEOUT_MS = 60_000;

/**
 * One HTTPS request. `agent` is a keep-alive agent shared by a load loop, or `false` for a fresh
 * connection (a node renewing with its own certificate). The socket is bounded by a timeout.
 */
export function send(
  target: TlsTarget,
  p: { method: string; path: string; body?: string; agent: Agent | false; headers?: OutgoingHttpHeaders },
): Promise<Reply> {
  const u = new URL(p.path, target.url);
  if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost')
    return Promise.reject(new Error(`refusing a non-loopback target ${u.hostname}`));
  return new Promise((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { ...p.headers };
    if (p.body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(p.body);
    }
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: `${u.pathname}${u.search}`,
        method: p.method,
        headers,
        agent: p.agent,
        ...(p.agent === false
          ? target.secureContext
            ? { secureContext: target.secureContext }
            : { ca: target.ca, cert: target.cert, key: target.key }
          : {}),
        timeout: TIMEOUT_MS,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(p.body);
  });
}

/** JSON body of a reply that must be 2xx. */
export function json<T>(r: Reply, what: string): T {
  if (r.status < 200 || r.status > 299) throw new Error(`${what}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  return JSON.parse(r.body) as T;
}
