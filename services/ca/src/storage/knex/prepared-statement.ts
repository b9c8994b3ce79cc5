import type { Knex } from 'knex';

/** A pooled connection of the `pg` driver (node-postgres Client), as far as used here. */
interface PgConnection {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[] }>;
}

interface PoolClient {
  config: { client?: unknown };
  acquireConnection(): Promise<PgConnection>;
  releaseConnection(connection: PgConnection): Promise<unknown>;
}

/** `?` placeholders to PostgreSQL's `$1 … $n`, once per statement text. */
const numbered = new Map<string, string>();
function toNumbered(text: string): string {
  let out = numbered.get(text);
  if (out === undefined) {
    let n = 0;
    out = text.replace(/\?/g, () => `$${++n}`);
    numbered.set(text, out);
  }
  return out;
}

/**
 * Runs a named statement (a PostgreSQL prepared statement: parsed and planned once per connection)
 * as `baton_<name>`: one text per name, for the life of the process (the pg driver refuses a name
 * reused with another text).
 * Its text uses `?` placeholders and must contain no other `?` (no jsonb `?` operators).
 *
 * On PostgreSQL through `pg`, outside a transaction, it goes straight to a pooled connection: for
 * every call knex rewrites each placeholder of the text and copies every binding, which for a
 * group-commit statement of 64 rows (1,664 bindings) cost more event-loop time than pg's own
 * encoding of them. The values are the same ones knex would have passed to pg, so the two paths
 * store the same bytes. Elsewhere (PGlite, which ignores the name, or inside a transaction, whose
 * connection knex holds) it goes through `knex.raw`.
 */
export async function runPrepared<R>(
  k: Knex | Knex.Transaction,
  shortName: string,
  text: string,
  values: readonly Knex.RawBinding[],
): Promise<R[]> {
  const name = `baton_${shortName}`;
  const client = k.client as PoolClient;
  if (k.isTransaction || client.config.client !== 'pg') {
    const result = (await k.raw(text, values as Knex.RawBinding[]).options({ name })) as { rows: R[] };
    return result.rows;
  }
  const sql = toNumbered(text);
  // Observers of knex's 'query' event (tests, debugging) still see the statement, as sent, marked.
  if (k.listenerCount('query') > 0) {
    k.emit('query', { method: 'raw', sql, bindings: values, options: { name }, direct: true });
  }
  const connection = await client.acquireConnection();
  try {
    const result = await connection.query({ name, text: sql, values: values as unknown[] });
    return result.rows as R[];
  } finally {
    await client.releaseConnection(connection);
  }
}
