import { randomBytes } from 'node:crypto';
import type { Clock } from './clock';
import { type AdminList, type ListFilters, openCursor, sealCursor } from './list-cursor';
import type { ListCursorKeyRepository, Page, PageRequest } from './ports';

/**
 * Paging of the admin lists (CONTRACT "Fleet scale"): `limit` rows after a cursor, and the cursor
 * of the next page. The order and the index each list pages on are the repository's (ports.ts
 * `page` methods); positions are keys, never offsets, so rows inserted while a client pages are
 * neither skipped nor repeated for the rows that existed before.
 */

export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 1000;

export interface ListPageParams {
  /** 1 to MAX_PAGE_LIMIT (checked at the edge). */
  limit: number;
  /** The cursor the previous page gave, as the client sent it back; absent: the first page. */
  after?: string;
  /** The request's filters: the cursor is bound to them. */
  filters: ListFilters;
}

export interface ListPageDeps {
  clock: Clock;
  keys: ListCursorKeyRepository;
}

export interface ListPage<T> {
  items: T[];
  /** The cursor of the next page; null on the last one. */
  next: string | null;
}

/**
 * One page of `list`: the cursor opened (ERR_CURSOR_INVALID unless this installation made it for
 * this list and these filters), `read` asked for the rows after its position, the position of the
 * page's last row sealed into the next cursor.
 */
export async function readListPage<T>(
  deps: ListPageDeps,
  list: AdminList,
  params: ListPageParams,
  read: (page: PageRequest) => Promise<Page<T>>,
): Promise<ListPage<T>> {
  // The migration made the key; a candidate is only stored if that row was deleted since.
  const key = await deps.keys.getOrCreate(randomBytes(32), deps.clock.now());
  const after = params.after === undefined ? null : openCursor(key, list, params.filters, params.after);
  const page = await read({ limit: params.limit, after });
  return {
    items: page.items,
    next: page.next === null ? null : sealCursor(key, list, params.filters, page.next),
  };
}
