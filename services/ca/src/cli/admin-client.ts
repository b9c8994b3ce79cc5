import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import type { AdminClientConfig } from '../config';
import { type BatonErrorCode, BatonError } from '../ground/errors';

export interface AdminClient {
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
  delete<T>(path: string): Promise<T>;
}

function readCredential(dir: string): { cert: string; key: string; ca: string } {
  try {
    return {
      cert: readFileSync(join(dir, 'cert.pem'), 'utf8'),
      key: readFileSync(join(dir, 'key.pem'), 'utf8'),
      ca: readFileSync(join(dir, 'bundle.pem'), 'utf8'),
    };
  } catch {
    throw new BatonError(
      'ERR_NOT_AUTHENTICATED',
      `no admin credential in ${dir} (run \`baton ca init\` or \`baton admin recover\`, or pass --admin-dir)`,
    );
  }
}

/**
 * The admin side of the CLI: JSON over mTLS with the admin credential, trusting only the bundle
 * in the admin dir. Server errors come back as the server's own stable code.
 */
export function adminClient(cfg: AdminClientConfig): AdminClient {
  const cred = readCredential(cfg.adminDir);
  const call = <T>(method: string, path: string, body?: unknown): Promise<T> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        new URL(path, `${cfg.server}/`),
        {
          method,
          ...cred,
          headers: payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {},
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : {};
            } catch {
              reject(
                new BatonError(
                  'ERR_INTERNAL',
                  `unexpected response from ${cfg.server} (HTTP ${res.statusCode})`,
                ),
              );
              return;
            }
            if ((res.statusCode ?? 500) >= 400) {
              const e = (json as { error?: { code?: string; message?: string } }).error;
              reject(
                new BatonError(
                  (e?.code ?? 'ERR_INTERNAL') as BatonErrorCode,
                  e?.message ?? `HTTP ${res.statusCode}`,
                ),
              );
            } else resolve(json as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (e: NodeJS.ErrnoException) =>
        reject(
          new BatonError('ERR_SERVER_UNREACHABLE', `cannot reach ${cfg.server}: ${e.code ?? e.message}`),
        ),
      );
      if (payload) req.write(payload);
      req.end();
    });
  return {
    get: (p) => call('GET', p),
    post: (p, b) => call('POST', p, b ?? {}),
    delete: (p) => call('DELETE', p),
  };
}
