import type { Request } from 'express';
import { parseDuration } from '../domain/duration';
import { BatonError } from '../ground/errors';
import { MAX_SPIFFE_ID_CHARS } from '../domain/spiffe-id';
import { readCsr, type UnverifiedCsr } from '../pki/csr';

/** Small DTO readers: each refusal is a 400 ERR_BAD_REQUEST naming the field, never echoing it. */
export function body(req: Request): Record<string, unknown> {
  return jsonObject(req.body);
}

/** A parsed JSON body that must be an object. */
export function jsonObject(b: unknown): Record<string, unknown> {
  if (b === undefined || b === null || typeof b !== 'object' || Array.isArray(b)) {
    throw new BatonError('ERR_BAD_REQUEST', 'a JSON object body is required');
  }
  return b as Record<string, unknown>;
}

const bad = (field: string, why: string): BatonError => new BatonError('ERR_BAD_REQUEST', `${field}: ${why}`);

export function optionalString(b: Record<string, unknown>, field: string, max = 256): string | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length > max) throw bad(field, `a string of at most ${max} characters`);
  return v;
}

export function requiredString(b: Record<string, unknown>, field: string, max = 256): string {
  const v = optionalString(b, field, max);
  if (v === undefined || v === '') throw bad(field, 'required');
  return v;
}

export function optionalInt(
  b: Record<string, unknown>,
  field: string,
  min: number,
  max: number,
): number | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw bad(field, `an integer from ${min} to ${max}`);
  return v;
}

/**
 * A duration field: "15m" style string or a whole number of seconds. Fractional seconds are
 * refused: the milliseconds are stored in bigint columns, where 60000.5 is not a value (it was a
 * 500 on `node_ttl: 60.0005`).
 */
export function optionalDurationMs(
  b: Record<string, unknown>,
  field: string,
  minMs: number,
  maxMs: number,
): number | undefined {
  const v = b[field];
  if (v === undefined || v === null) return undefined;
  let ms: number;
  if (typeof v === 'number' && Number.isSafeInteger(v)) ms = v * 1000;
  else if (typeof v === 'string' && v.length <= 32) {
    try {
      ms = parseDuration(v, field);
    } catch {
      throw bad(field, 'a duration such as 15m, 24h or 7d');
    }
  } else throw bad(field, 'a duration such as 15m, 24h or 7d, or a whole number of seconds');
  if (ms < minMs || ms > maxMs) throw bad(field, `must be between ${minMs / 1000}s and ${maxMs / 1000}s`);
  return ms;
}

export function oneOf<T extends string>(
  b: Record<string, unknown>,
  field: string,
  values: readonly T[],
  fallback?: T,
): T {
  const v = b[field] ?? fallback;
  if (typeof v !== 'string' || !values.includes(v as T)) throw bad(field, `one of ${values.join(', ')}`);
  return v as T;
}

/**
 * A PEM CSR field, read and within the key policy (pki/key-policy.ts); the use case verifies its
 * signature when its order of checks says so (attestation: after the evidence).
 */
export function csrField(b: Record<string, unknown>, field = 'csr'): UnverifiedCsr {
  const v = b[field];
  if (typeof v !== 'string')
    throw new BatonError('ERR_CSR_INVALID', `${field}: a PEM certificate request is required`);
  return readCsr(v);
}

/**
 * Runs the domain's check of one field and names the field in its refusal: the domain's messages
 * never name a wire field, so a BatonError comes back as `<field>: <message>`, its code unchanged.
 */
export function atField<T>(field: string, check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (e instanceof BatonError) throw new BatonError(e.code, `${field}: ${e.message}`);
    throw e;
  }
}

const NONCE_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with its padding (RFC 4648 §4), nothing else: no whitespace, no base64url. */
export const isBase64 = (v: string): boolean => BASE64_PATTERN.test(v);

/** `nonce` of an attestation: the 32-byte base64url nonce POST /v1/attest/challenge gave. */
export function attestationNonce(v: unknown): string {
  if (typeof v !== 'string' || !NONCE_PATTERN.test(v)) {
    throw bad('nonce', 'the base64url nonce from POST /v1/attest/challenge is required');
  }
  return v;
}

/**
 * A required base64 field of binary data (RFC 4648 §4, padded) of `min` to `max` decoded bytes;
 * 400 ERR_BAD_REQUEST naming the field, its length checked before it is decoded.
 */
export function base64Field(
  b: Record<string, unknown>,
  field: string,
  p: { min: number; max: number; what: string },
): Buffer {
  const v = b[field];
  const limit = Math.ceil(p.max / 3) * 4;
  if (typeof v !== 'string' || v.length === 0 || v.length > limit || !isBase64(v)) {
    throw bad(field, `${p.what}, base64, is required`);
  }
  const bytes = Buffer.from(v, 'base64');
  if (bytes.length < p.min || bytes.length > p.max) {
    throw bad(field, p.min === p.max ? `must be ${p.min} bytes` : `must be ${p.min} to ${p.max} bytes`);
  }
  return bytes;
}

/**
 * A string field for a domain check that refuses the empty string as missing ("required"): an
 * absent field, null or any other JSON type is refused the same way, so it is read as ''.
 */
export const textOrEmpty = (v: unknown): string => (typeof v === 'string' ? v : '');

/**
 * `spiffe_id` of a node's request for an identity (workload and JWT-SVIDs): a string within
 * MAX_SPIFFE_ID_CHARS. Its syntax is not checked here: an entry parented to the node names the only
 * IDs it may ask for.
 */
export function requestedSpiffeId(b: Record<string, unknown>): string {
  const v = b.spiffe_id;
  if (typeof v !== 'string' || v.length > MAX_SPIFFE_ID_CHARS) throw bad('spiffe_id', 'required');
  return v;
}
