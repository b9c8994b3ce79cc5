import { BatonError } from '../../services/ca/src/ground/errors';

/**
 * The BatonError a function throws or a promise rejects with. Anything else thrown (a TypeError, a
 * plain Error) is rethrown, and nothing thrown fails the test: a test asserting on the code of the
 * error cannot pass because the call went through.
 *
 *   expect(errorOf(() => parseRate('x')).code).toBe('ERR_CONFIG_INVALID');
 *   expect((await errorOf(storage.ping())).code).toBe('ERR_DATABASE_UNAVAILABLE');
 *   expect((await errorOf(() => client.renew())).code).toBe('ERR_NODE_REVOKED');
 */
export function errorOf(p: PromiseLike<unknown>): Promise<BatonError>;
export function errorOf(fn: () => PromiseLike<unknown>): Promise<BatonError>;
export function errorOf(fn: () => unknown): BatonError;
export function errorOf(x: PromiseLike<unknown> | (() => unknown)): BatonError | Promise<BatonError> {
  if (typeof x !== 'function') return rejectionOf(x);
  let result: unknown;
  try {
    result = x();
  } catch (e) {
    return batonErrorOrRethrow(e);
  }
  if (isThenable(result)) return rejectionOf(result);
  throw new Error('expected a BatonError, nothing was thrown');
}

async function rejectionOf(p: PromiseLike<unknown>): Promise<BatonError> {
  try {
    await p;
  } catch (e) {
    return batonErrorOrRethrow(e);
  }
  throw new Error('expected a BatonError, the promise resolved');
}

function batonErrorOrRethrow(e: unknown): BatonError {
  if (e instanceof BatonError) return e;
  throw e;
}

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';

/** The `error` member of a JSON error answer of the API: `{ error: { code, message } }`. */
export const errorBodyOf = (r: { json<T>(): T }): { code: string; message: string } =>
  r.json<{ error: { code: string; message: string } }>().error;
