import type { Page, PageKey } from '../../domain/ports';

/**
 * Keyset paging (issue 20): a page is `WHERE key > after ORDER BY key LIMIT n+1` on an index whose
 * columns are the filter's and then the key's (migrations/20261208120000_admin_list_paging.ts).
 * The extra row only says whether another page follows, so a list that ends exactly at a page
 * boundary has `next: null` there instead of one more, empty, page.
 */

/**
 * The exact text of a timestamptz column for a page key: UTC with microseconds, the precision
 * PostgreSQL stores. A Date has milliseconds only, so a key made from one could fall between two
 * rows of the same millisecond and skip one of them.
 */
export const timeKeySql = (column: string): string =>
  `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/** The rows of one page (the query asked for limit + 1) and the key of its last row if more follow. */
export function pageOf<R, T>(
  rows: R[],
  limit: number,
  toItem: (r: R) => T,
  keyOf: (r: R) => PageKey,
): Page<T> {
  const more = rows.length > limit;
  const kept = more ? rows.slice(0, limit) : rows;
  return { items: kept.map(toItem), next: more ? keyOf(kept[kept.length - 1]!) : null };
}
