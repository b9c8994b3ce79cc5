import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { server } from '../../services/ca/src/cli/commands/server';

/**
 * docs/configuration.md lists every `baton server` flag in its "Server side" table, with the
 * environment variable the flag's help names: a flag added without its row fails here.
 */
const doc = readFileSync(join(__dirname, '..', '..', 'docs', 'configuration.md'), 'utf8');
const serverSide = /^## Server side\n([\s\S]*?)^## /m.exec(doc)?.[1] ?? '';
const rows = new Map(
  [...serverSide.matchAll(/^\| `--([a-z0-9-]+)` \|([^|]*)\|/gm)].map((m) => [m[1]!, m[2]!.trim()]),
);

describe('docs/configuration.md', () => {
  it('ok/the table scan finds rows (a scan that finds nothing would pass everything)', () => {
    expect(rows.size).toBeGreaterThanOrEqual(20);
  });

  it.each(Object.entries(server.options).map(([name, o]) => [name, o.description]))(
    'ok/--%s has a row naming its environment variable',
    (name, description) => {
      expect(rows.has(name!)).toBe(true);
      const env = /\(env (BATON_[A-Z0-9_]+)/.exec(description ?? '')?.[1];
      if (env) expect(rows.get(name!)).toBe(`\`${env}\``);
    },
  );
});
