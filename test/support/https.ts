import type { ClientRequest } from 'node:http';
import { request, type Agent } from 'node:https';

export interface HttpsResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json<T = unknown>(): T;
}

export interface HttpsOptions {
  method?: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
  /** PEM trust anchors; when absent the server certificate is not checked. */
  ca?: string;
  cert?: string;
  key?: string;
  /** false: a connection of its own, closed after the answer. */
  agent?: Agent | false;
  /** Source address, e.g. 127.0.0.2 to be another client of a server on 127.0.0.1. */
  localAddress?: string;
}

/** A small HTTPS client for tests: no retries, no magic. */
export function https(url: string, opts: HttpsOptions = {}): Promise<HttpsResult> {
  return httpsRequest(url, opts).result;
}

/** https(), with the request itself, for a test that must abort it or watch its socket. */
export function httpsRequest(
  url: string,
  opts: HttpsOptions = {},
): { req: ClientRequest; result: Promise<HttpsResult> } {
  let req!: ClientRequest;
  const result = new Promise<HttpsResult>((resolve, reject) => {
    req = request(
      url,
      {
        method: opts.method ?? 'GET',
        headers: { ...(opts.body ? { 'content-type': 'application/json' } : {}), ...opts.headers },
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        rejectUnauthorized: opts.ca !== undefined,
        agent: opts.agent,
        localAddress: opts.localAddress,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: () => JSON.parse(body.toString('utf8')),
          });
        });
      },
    );
    req.on('error', reject);
    if (opts.body) req.write(opts.body);
    req.end();
  });
  return { req, result };
}

/**
 * A call to a Baton server (its URL and trust bundle) with a client credential: an admin's or a
 * node's. `body` is sent as JSON, except a Buffer, which is sent as it is (a malformed body);
 * `agent` is for a test that reuses (or must not reuse) a connection.
 */
export function callAs(
  server: { url: string; bundle: string },
  cred: { cert: string; key: string },
  method: string,
  path: string,
  body?: unknown,
  opts: { agent?: Agent | false } = {},
): Promise<HttpsResult> {
  return https(`${server.url}${path}`, {
    method,
    body: body === undefined ? undefined : Buffer.isBuffer(body) ? body : JSON.stringify(body),
    ca: server.bundle,
    cert: cred.cert,
    key: cred.key,
    agent: opts.agent,
  });
}
