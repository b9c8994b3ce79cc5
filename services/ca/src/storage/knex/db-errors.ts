import { BatonError } from '../../ground/errors';

interface DbErrorLike {
  code?: string;
  constraint?: string;
  message?: string;
}

/**
 * SQLSTATE class 08 (connection), 57P0x (shutdown), 53 (resources), and socket errors. Errors
 * without a code come from the drivers: pg's "Client has encountered a connection error and is
 * not queryable" is what a transaction's ROLLBACK throws once PostgreSQL went away mid-transaction.
 */
function isUnavailable(code: string | undefined, message: string): boolean {
  if (!code)
    return /Knex: Timeout acquiring a connection|Connection terminated|connect ECONNREFUSED|is not queryable/.test(
      message,
    );
  return (
    /^(08|57P0|53)/.test(code) ||
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND'].includes(code)
  );
}

/**
 * Translates driver errors into Baton's codes at the storage boundary: a unique violation is
 * ERR_CONFLICT, an unreachable database ERR_DATABASE_UNAVAILABLE (503, retry later); anything
 * else stays an internal error.
 */
export function mapDbError(e: unknown): unknown {
  if (e instanceof BatonError) return e;
  const err = (e ?? {}) as DbErrorLike;
  if (err.code === '23505' && err.constraint === 'certificates_key_fingerprint_unique') {
    return new BatonError('ERR_KEY_REUSED', 'this public key is already certified: use a new key', {
      cause: e,
    });
  }
  if (err.code === '23505') return new BatonError('ERR_CONFLICT', 'the record already exists', { cause: e });
  // 22021 (a NUL in text) and 22P05 (\u0000 in jsonb): text PostgreSQL cannot store. Baton never
  // writes such text itself, so it came from the request: a 400, not a 500.
  if (err.code === '22021' || err.code === '22P05') {
    return new BatonError('ERR_BAD_REQUEST', 'a text field holds a NUL character', { cause: e });
  }
  // 40P01 deadlock, 40001 serialization failure, 57014 statement timeout: transient; retry later.
  if (err.code === '40P01' || err.code === '40001' || err.code === '57014') {
    return new BatonError('ERR_DATABASE_UNAVAILABLE', 'the database is busy: retry later', { cause: e });
  }
  if (isUnavailable(err.code, String(err.message ?? ''))) {
    return new BatonError('ERR_DATABASE_UNAVAILABLE', 'the database is unavailable', { cause: e });
  }
  return e;
}

export async function db<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (e) {
    throw mapDbError(e);
  }
}

/** bytea comes back as Buffer from pg and as Uint8Array from PGlite. */
export const toBuffer = (v: Uint8Array): Buffer =>
  Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
