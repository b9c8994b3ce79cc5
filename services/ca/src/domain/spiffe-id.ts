import { BatonError } from '../ground/errors';

/**
 * SPIFFE ID validation by the SPIFFE ID specification (§2), strict: anything outside the
 * grammar is refused, never normalized, because two spellings of one identity are how
 * authorization checks get bypassed.
 *   spiffe://<trust domain>/<path>, trust domain [a-z0-9.-_]+, path segments [a-zA-Z0-9.-_]+,
 *   no empty, "." or ".." segment, no trailing slash, no percent-encoding, query, fragment,
 *   userinfo or port, at most 2048 bytes.
 */
const MAX_BYTES = 2048;

/**
 * The bound of a SPIFFE ID a node asks for (`spiffe_id` of the workload and JWT-SVID routes), in
 * characters: read before any syntax check, since an entry of the node decides what it may ask for.
 */
export const MAX_SPIFFE_ID_CHARS = 2048;
const TD = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Paths Baton mints itself: an entry may never claim them (it would impersonate a node or an admin). */
export const RESERVED_PATH_PREFIXES = ['/node/', '/admin/', '/baton/'] as const;

declare const checkedSpiffeId: unique symbol;
declare const checkedWorkload: unique symbol;
/** A SPIFFE ID that validateSpiffeId accepted for its trust domain (a type only: still a string). */
export type SpiffeId = string & { readonly [checkedSpiffeId]: true };
/** A SPIFFE ID an entry may name: validateWorkloadSpiffeId accepted it. */
export type WorkloadSpiffeId = SpiffeId & { readonly [checkedWorkload]: true };

/** Refuses anything outside the grammar above; the empty string is a missing ID ("required"). */
export function validateSpiffeId(id: string, trustDomain: string): SpiffeId {
  const bad = (why: string): never => {
    throw new BatonError('ERR_BAD_REQUEST', `invalid SPIFFE ID: ${why}`);
  };
  if (id.length === 0) return bad('required');
  if (Buffer.byteLength(id, 'utf8') > MAX_BYTES) bad(`longer than ${MAX_BYTES} bytes`);
  if (!id.startsWith('spiffe://')) bad('must start with spiffe:// (lowercase scheme)');
  const rest = id.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const td = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (td.length === 0) bad('empty trust domain');
  if (td.includes('@')) bad('userinfo is not allowed');
  if (td.includes(':')) bad('a port is not allowed');
  if (!TD.test(td)) bad('trust domain must be lowercase letters, digits, ".", "-" or "_"');
  if (td !== trustDomain) bad(`trust domain must be ${trustDomain}`);
  if (path === '' || path === '/') bad('a workload SPIFFE ID needs a path');
  if (path.endsWith('/')) bad('trailing slash');
  for (const seg of path.slice(1).split('/')) {
    if (seg === '') bad('empty path segment');
    if (seg === '.' || seg === '..') bad('"." and ".." segments are not allowed');
    if (seg.includes('%')) bad('percent-encoding is not allowed');
    if (seg.includes('?')) bad('a query is not allowed');
    if (seg.includes('#')) bad('a fragment is not allowed');
    if (!SEGMENT.test(seg)) bad('path segments must be letters, digits, ".", "-" or "_"');
  }
  return id as SpiffeId;
}

/** A SPIFFE ID an entry may use: valid, and not under a path Baton reserves. */
export function validateWorkloadSpiffeId(id: string, trustDomain: string): WorkloadSpiffeId {
  const valid = validateSpiffeId(id, trustDomain);
  const path = valid.slice(`spiffe://${trustDomain}`.length);
  if (RESERVED_PATH_PREFIXES.some((p) => `${path}/`.startsWith(p))) {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      `invalid SPIFFE ID: paths under ${RESERVED_PATH_PREFIXES.join(', ')} are reserved`,
    );
  }
  return valid as WorkloadSpiffeId;
}
