import { once } from 'node:events';
import { MAX_PAGE_LIMIT } from '../domain/admin-lists';
import { BatonError } from '../ground/errors';
import type { AdminClient } from './admin-client';
import type { CommandContext } from './command';

/**
 * The list commands (`node list`, `cert list`, `entry list`, `audit list`) page through an admin
 * list to its end (CONTRACT "Fleet scale") and print each page as it comes: a fleet's 100,000 nodes
 * or millions of certificates are never all in memory. `--json` is still ONE document, the API's
 * shape with every page merged and `"next": null`, written piece by piece; a failure midway leaves
 * it unfinished (not valid JSON) and exits 1, so it cannot pass for a whole list.
 */

export interface AdminListSource {
  /** The route, e.g. `/v1/admin/nodes`. */
  path: string;
  /** The member the rows are under, e.g. `nodes`. */
  member: string;
  /** The list's filters as query parameters. */
  query: URLSearchParams;
  /** Stop after this many rows in all (`--limit`); undefined: every row. */
  limit?: number;
}

export interface TableView<T> {
  headers: string[];
  row(item: T): (string | null | undefined)[];
}

/** `--limit N`: a positive integer, or undefined when not given; anything else is a usage error. */
export function totalLimitFlag(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && /^[0-9]{1,15}$/.test(v) ? Number(v) : 0;
  if (n < 1) throw new BatonError('ERR_USAGE', '--limit must be a positive integer');
  return n;
}

/** A `--flag` that must be one of `values`, or absent; anything else is a usage error. */
export function oneOfFlag(v: unknown, flag: string, values: readonly string[]): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !values.includes(v)) {
    const words =
      values.length > 2 ? `${values.slice(0, -1).join(', ')} or ${values.at(-1)}` : values.join(' or ');
    throw new BatonError('ERR_USAGE', `--${flag} must be ${words}`);
  }
  return v;
}

/** Each page of the list in turn, the last one cut at `limit` rows in all. */
export async function* adminListPages<T>(client: AdminClient, src: AdminListSource): AsyncGenerator<T[]> {
  let left = src.limit ?? Number.POSITIVE_INFINITY;
  let after: string | null = null;
  do {
    const q = new URLSearchParams(src.query);
    q.set('limit', String(Math.min(MAX_PAGE_LIMIT, left)));
    if (after !== null) q.set('after', after);
    const page = await client.get<Record<string, unknown>>(`${src.path}?${q}`);
    const items = page[src.member];
    const next = page.next;
    if (!Array.isArray(items) || !(next === null || typeof next === 'string'))
      throw new BatonError('ERR_INTERNAL', `unexpected answer from ${src.path}: no ${src.member} and next`);
    const kept = (items as T[]).slice(0, left);
    left -= kept.length;
    yield kept;
    // An empty page with a cursor would loop forever on a broken server: stop instead.
    after = items.length > 0 ? next : null;
  } while (after !== null && left > 0);
}

/** Writes and waits for the stream to drain when it asks to (a pipe read slower than we page). */
async function write(out: NodeJS.WritableStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}

/** Widens each column to the longest cell of `rows`. */
function widen(widths: number[], rows: string[][]): void {
  for (const r of rows) {
    for (const [i, c] of r.entries()) widths[i] = Math.max(widths[i] ?? 0, c.length);
  }
}

/** Rows as aligned columns in the current widths. */
function tableLines(widths: number[], rows: string[][]): string {
  return rows
    .map(
      (r) =>
        `${r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('');
}

/**
 * Pages through the list and prints it: `--json` one document, else a table page by page. Column
 * widths come from the header and the first page; a longer value later widens its column from then
 * on (the rows printed before stay as they were).
 */
export async function printAdminList<T>(
  ctx: CommandContext,
  client: AdminClient,
  src: AdminListSource,
  view: TableView<T>,
): Promise<void> {
  const json = ctx.flags.json === true;
  const widths = view.headers.map((h) => h.length);
  let pages = 0;
  let items = 0;
  if (json) await write(ctx.stdout, `{${JSON.stringify(src.member)}:[`);
  for await (const page of adminListPages<T>(client, src)) {
    if (json) {
      if (page.length)
        await write(ctx.stdout, `${items ? ',' : ''}${page.map((i) => JSON.stringify(i)).join(',')}`);
    } else {
      const rows = page.map((i) => view.row(i).map((c) => c ?? '-'));
      widen(widths, rows);
      await write(ctx.stdout, tableLines(widths, pages === 0 ? [view.headers, ...rows] : rows));
    }
    pages += 1;
    items += page.length;
  }
  if (json) await write(ctx.stdout, '],"next":null}\n');
}
