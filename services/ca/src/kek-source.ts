import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../../common/src/atomic-file';
import type { StorageConfig } from './config';
import { BatonError } from './ground/errors';
import { type Kek, kekFromBase64 } from './pki/kek';

export const kekPath = (dataDir: string): string => join(dataDir, 'kek');

/**
 * The KEK comes from BATON_KEK, or for the embedded default from <data-dir>/kek (mode 0600),
 * which `ca init` creates. A server on a shared PostgreSQL must be given BATON_KEK: a file
 * on one replica's disk is not how several replicas share a secret.
 */
export function resolveKek(cfg: StorageConfig, opts: { create: boolean }): Kek {
  if (cfg.kekBase64) return kekFromBase64(cfg.kekBase64, 'BATON_KEK');
  if (cfg.databaseUrl) {
    throw new BatonError(
      'ERR_KEK_MISSING',
      'BATON_KEK is required with --database-url (base64 of 32 random bytes)',
    );
  }
  const path = kekPath(cfg.dataDir);
  if (existsSync(path)) {
    if ((statSync(path).mode & 0o077) !== 0) {
      throw new BatonError('ERR_KEK_INVALID', `${path} must not be readable by group or others (chmod 600)`);
    }
    return kekFromBase64(readFileSync(path, 'utf8'), path);
  }
  if (!opts.create) {
    throw new BatonError('ERR_KEK_MISSING', `no key-encryption key: set BATON_KEK or restore ${path}`);
  }
  mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 });
  const text = randomBytes(32).toString('base64');
  writeFileAtomic(path, `${text}\n`, 0o600);
  return kekFromBase64(text, path);
}
