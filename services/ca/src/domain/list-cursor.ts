import { createHmac, timingSafeEqual } from 'node:crypto';
import { BatonError } from '../ground/errors';
import type { PageKey } from './ports';

/**
 * Cursors of the admin lists (CONTRACT "Fleet scale"): opaque to the client, protected against
 * tampering and bound to their list and filters.
 *
 *     cursor = base64url(JSON of the page key) "." base64url(HMAC-SHA256(key, context))
 *     context = "baton list cursor v1" NUL list NUL JSON of the filters NUL the first part
 *
 * The MAC (RFC 2104, SHA-256) covers the list's name and its filters as well as the position, so
 * a cursor of another list, or of the same list with other filters, fails like an edited one;
 * the filters are not in the cursor, the request states them again. The key is 256 random bits in
 * the database (`list_cursor_key`, migrations/20261208120000_admin_list_paging.ts): every replica
 * must open the cursors the others made, and the database is the one thing they share; a key in
 * process memory would make a cursor fail on the next replica, and one in configuration would be
 * one more secret to deploy. Whoever can read that row can read every list anyway, so the key
 * protects nothing a database reader lacks. The page key is readable (base64url JSON): it holds
 * an id, a name, a time or a serial that the page itself showed.
 */

/** The admin lists that page. */
export type AdminList = 'nodes' | 'certificates' | 'entries' | 'audit';

/**
 * The filters a cursor is bound to, by their query names, as the route read them (a time as its
 * ISO string); an absent filter is undefined.
 */
export type ListFilters = Readonly<Record<string, string | undefined>>;

type KeyPart = 'text' | 'time' | 'id';

/** The page key of each list (domain/ports.ts PageKey): checked again after the MAC, in depth. */
const KEY_SHAPES: Record<AdminList, readonly KeyPart[]> = {
  nodes: ['text'],
  certificates: ['time', 'text'],
  entries: ['text'],
  audit: ['time', 'id'],
};

const CONTEXT = 'baton list cursor v1';
/** A 32-byte MAC is 43 base64url characters; keys are ids, names, times and serials (short). */
const CURSOR = /^([A-Za-z0-9_-]{1,1024})\.([A-Za-z0-9_-]{43})$/;
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
/** The longest text key part: node ids and entry names are at most 63, serials 40. */
const MAX_TEXT = 256;

const invalid = (): BatonError =>
  new BatonError('ERR_CURSOR_INVALID', 'after: not a cursor of this list with these filters');

/** The filters in one canonical form: sorted by name, absent ones left out. */
function canonicalFilters(filters: ListFilters): string {
  return JSON.stringify(
    Object.entries(filters)
      .filter((e): e is [string, string] => e[1] !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

function macOf(key: Buffer, list: AdminList, filters: ListFilters, payload: string): string {
  return createHmac('sha256', key)
    .update(`${CONTEXT}\0${list}\0${canonicalFilters(filters)}\0${payload}`)
    .digest('base64url');
}

function isKeyPart(v: unknown, part: KeyPart): boolean {
  switch (part) {
    case 'text':
      return typeof v === 'string' && v.length > 0 && v.length <= MAX_TEXT;
    case 'time':
      return typeof v === 'string' && TIME.test(v);
    case 'id':
      return typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
  }
}

/** The cursor of the position after `position` in `list` with `filters`. */
export function sealCursor(key: Buffer, list: AdminList, filters: ListFilters, position: PageKey): string {
  const payload = Buffer.from(JSON.stringify(position)).toString('base64url');
  return `${payload}.${macOf(key, list, filters, payload)}`;
}

/**
 * The position a cursor names, when this key made it for this list and these filters; else
 * ERR_CURSOR_INVALID, the same for every reason (garbage, a wrong MAC, another list or filters).
 * The MAC is compared in constant time, before anything of the payload is read.
 */
export function openCursor(key: Buffer, list: AdminList, filters: ListFilters, cursor: string): PageKey {
  const m = CURSOR.exec(cursor);
  if (!m) throw invalid();
  const payload = m[1]!;
  const expected = Buffer.from(macOf(key, list, filters, payload));
  const given = Buffer.from(m[2]!);
  // Both are 43 ASCII characters: the regex fixed the given one's length, the digest the other's.
  // Comparing the text, not the decoded bytes, also refuses another spelling of the same MAC.
  if (!timingSafeEqual(expected, given)) throw invalid();
  let position: unknown;
  try {
    position = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  const shape = KEY_SHAPES[list];
  if (!Array.isArray(position) || position.length !== shape.length) throw invalid();
  if (!shape.every((part, i) => isKeyPart(position[i], part))) throw invalid();
  return position as PageKey;
}
