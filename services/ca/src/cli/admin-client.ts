import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { writeFileAtomic } from '../../../../common/src/atomic-file';
import { trustStorePem } from '../../../../common/src/trust-store';
import type { AdminClientConfig } from '../config';
import { type BatonErrorCode, BatonError } from '../ground/errors';

export interface AdminClient {
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
  delete<T>(path: string): Promise<T>;
  /**
   * A streamed GET (`GET /v1/admin/audit/export`): each chunk of the body to `onChunk` as it comes,
   * awaited (backpressure); resolves when the whole body has arrived, rejects with the server's
   * code on an error answer, and with ERR_SERVER_UNREACHABLE when the body is cut short.
   */
  download(path: string, onChunk: (chunk: Buffer) => Promise<void> | void): Promise<void>;
}

const BUNDLE_PATH = '/v1/bundle';

function readCredential(dir: string): { cert: string; key: string; ca: string } {
  completeSwap(dir);
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
 * `ca rotate --root` renews the admin's own certificate by writing key.pem.next and cert.pem.next,
 * then renaming the key and then the certificate. Killed between the two renames, the directory
 * holds the next key beside the next certificate's pending file: the swap is finished here.
 */
function completeSwap(dir: string): void {
  const next = join(dir, 'cert.pem.next');
  if (!existsSync(next) || existsSync(join(dir, 'key.pem.next'))) return;
  try {
    const cert = new X509Certificate(readFileSync(next));
    if (cert.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'key.pem')))))
      renameSync(next, join(dir, 'cert.pem'));
  } catch {
    // Not a pair: readCredential goes on with what is there, and the server says what it thinks.
  }
}

/**
 * The admin side of the CLI: JSON over mTLS with the admin credential, trusting only the bundle
 * in the admin dir. Server errors come back as the server's own stable code.
 */
export function adminClient(cfg: AdminClientConfig): AdminClient {
  const read = readCredential(cfg.adminDir);
  const cred = { ...read, ca: trustStorePem(read.ca, read.cert) };
  let bundleChecked = false;
  /**
   * CONTRACT "CA custody and rotation": admin commands refresh `<admin-dir>/bundle.pem` from
   * `/v1/bundle`, fetched over the connection the bundle they hold verified, so that a root
   * rotation reaches the admin's trust too. Once per command, after its first answer.
   */
  const refreshBundle = async () => {
    if (bundleChecked) return;
    bundleChecked = true;
    const pem = await call<string>('GET', BUNDLE_PATH).catch(() => undefined);
    if (typeof pem === 'string' && pem.includes('-----BEGIN CERTIFICATE-----') && pem !== read.ca)
      writeFileAtomic(join(cfg.adminDir, 'bundle.pem'), pem, 0o644);
  };
  const callAndRefresh = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const out = await call<T>(method, path, body);
    await refreshBundle();
    return out;
  };
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
            if (path === BUNDLE_PATH && res.statusCode === 200) {
              resolve(text as T);
              return;
            }
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
  const download = (path: string, onChunk: (chunk: Buffer) => Promise<void> | void): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = request(
        new URL(path, `${cfg.server}/`),
        { method: 'GET', ...cred, timeout: 30_000 },
        (res) => {
          if ((res.statusCode ?? 500) >= 400) {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              let e: { code?: string; message?: string } | undefined;
              try {
                e = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: typeof e }).error;
              } catch {
                e = undefined;
              }
              reject(
                new BatonError(
                  (e?.code ?? 'ERR_INTERNAL') as BatonErrorCode,
                  e?.message ?? `HTTP ${res.statusCode}`,
                ),
              );
            });
            return;
          }
          let failed = false;
          const fail = (e: unknown) => {
            if (failed) return;
            failed = true;
            req.destroy();
            reject(e);
          };
          // The chunks in order, one at a time, the response paused meanwhile.
          let pending = Promise.resolve();
          res.on('data', (c: Buffer) => {
            res.pause();
            pending = pending.then(() => onChunk(c)).then(() => void res.resume(), fail);
          });
          res.on('end', () => {
            void pending.then(() => {
              // `end` without `complete`: the connection closed before the chunked body's last chunk.
              if (!res.complete)
                fail(new BatonError('ERR_SERVER_UNREACHABLE', `the answer from ${cfg.server} was cut short`));
              else if (!failed) resolve();
            });
          });
          res.on('aborted', () =>
            fail(new BatonError('ERR_SERVER_UNREACHABLE', `the answer from ${cfg.server} was cut short`)),
          );
          res.on('error', () =>
            fail(new BatonError('ERR_SERVER_UNREACHABLE', `the answer from ${cfg.server} was cut short`)),
          );
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (e: NodeJS.ErrnoException) =>
        reject(
          new BatonError('ERR_SERVER_UNREACHABLE', `cannot reach ${cfg.server}: ${e.code ?? e.message}`),
        ),
      );
      req.end();
    });
  return {
    download: async (p, onChunk) => {
      await download(p, onChunk);
      await refreshBundle();
    },
    get: (p) => callAndRefresh('GET', p),
    post: (p, b) => callAndRefresh('POST', p, b ?? {}),
    delete: (p) => callAndRefresh('DELETE', p),
  };
}
