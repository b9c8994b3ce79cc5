import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ADMIN_ROUTES, type AdminRoute, REVOCATION_ROLES } from '../../services/ca/src/http/authorization';
import { HTTP_STATUS } from '../../services/ca/src/http/errors';

/**
 * docs/api.md documents every route the server registers under a `### METHOD /path` heading, and
 * nothing else: a route added without its section, or a section left behind for a removed route,
 * fails here. Routes are read from the source (calls such as `r.get('/v1/bundle', …)` or
 * `app.get(['/v1/crl', '/v1/crl.pem'], …)` with literal paths), so the test needs no server.
 */
const root = join(__dirname, '..', '..');
const httpDir = join(root, 'services', 'ca', 'src', 'http');
const doc = readFileSync(join(root, 'docs', 'api.md'), 'utf8');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.isFile() && e.name.endsWith('.ts') ? [path] : [];
  });
}

/** `r.get(`, `app.post(`, `router.delete(` … followed by a literal path or an array of them. */
const ROUTE_CALL =
  /\b(?:r|app|router)\.(get|post|put|patch|delete|head|options)\(\s*(\[[^\]]*\]|'[^']*'|"[^"]*"|`[^`$]*`)/g;
const STRING_LITERAL = /'([^']*)'|"([^"]*)"|`([^`$]*)`/g;
/** The fast path (fast-path.ts) answers POSTs to these paths outside Express. */
const FAST_ROUTE = /export const \w+_ROUTE = '([^']+)'/g;

/** `METHOD /path` → the source files that register it. */
function registeredRoutes(): Map<string, string[]> {
  const routes = new Map<string, string[]>();
  const add = (route: string, file: string) => routes.set(route, [...(routes.get(route) ?? []), file]);
  for (const file of sourceFiles(httpDir)) {
    const text = readFileSync(file, 'utf8');
    const name = relative(root, file);
    for (const [, method, paths] of text.matchAll(ROUTE_CALL)) {
      for (const m of paths!.matchAll(STRING_LITERAL)) {
        add(`${method!.toUpperCase()} ${m[1] ?? m[2] ?? m[3]}`, name);
      }
    }
    for (const [, path] of text.matchAll(FAST_ROUTE)) add(`POST ${path}`, name);
  }
  return routes;
}

/** `### METHOD /path` headings of the doc, in order (duplicates kept), with their section text. */
function documentedRoutes(): { route: string; section: string }[] {
  const heading = /^#{2,4} +(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) +(\/\S*)[^\n]*$/gm;
  return [...doc.matchAll(heading)].map((m) => {
    const start = m.index + m[0].length;
    const next = doc.slice(start).search(/^#{1,3} /m);
    return { route: `${m[1]} ${m[2]}`, section: doc.slice(start, next < 0 ? undefined : start + next) };
  });
}

const registered = registeredRoutes();
const documented = documentedRoutes();
const documentedSet = new Set(documented.map((d) => d.route));

describe('docs/api.md', () => {
  it('ok/the route scan finds the routes (a scan that finds nothing would pass everything)', () => {
    expect(registered.size).toBeGreaterThanOrEqual(25);
    for (const route of ['POST /v1/attest', 'GET /v1/crl.pem', 'DELETE /v1/admin/entries/:name']) {
      expect(registered.has(route)).toBe(true);
    }
  });

  it.each([...registered.keys()].sort())('ok/%s has a "### METHOD /path" section', (route) => {
    if (!documentedSet.has(route)) {
      throw new Error(
        `${route} (registered in ${registered.get(route)!.join(', ')}) has no "### ${route}" heading in docs/api.md`,
      );
    }
  });

  it('ok/every route heading names a route the server registers, once', () => {
    const unknown = documented.map((d) => d.route).filter((r) => !registered.has(r));
    expect(unknown).toEqual([]);
    const twice = documented.map((d) => d.route).filter((r, i, all) => all.indexOf(r) !== i);
    expect(twice).toEqual([]);
  });

  it('ok/every route section says who may call it', () => {
    const missing = documented.filter((d) => !/^\*\*Caller:\*\*/m.test(d.section)).map((d) => d.route);
    expect(missing).toEqual([]);
  });

  it.each(Object.keys(ADMIN_ROUTES) as AdminRoute[])(
    'ok/%s: the documented roles are the table’s',
    (route) => {
      const section = documented.find((d) => d.route === route)?.section ?? '';
      const caller = /^\*\*Caller:\*\*([^\n]*)/m.exec(section)?.[1] ?? '';
      const roles = [...caller.matchAll(/`(admin|operator|auditor)`/g)].map((m) => m[1]);
      expect(roles.sort()).toEqual([...ADMIN_ROUTES[route]].sort());
    },
  );

  it('ok/the kinds each role may revoke are REVOCATION_ROLES (issue 14), within the route’s roles', () => {
    const route = 'POST /v1/admin/certificates/:serial/revoke';
    const section = documented.find((d) => d.route === route)?.section ?? '';
    // The rows of the section's "| kind | roles |" table.
    const kinds = /^\| kind \| roles \|\n\|[- |]+\|\n((?:\|[^\n]*\n)+)/m.exec(section)?.[1] ?? '';
    const rows = [...kinds.matchAll(/^\| `(\w+)` \| ([^\n|]*) \|$/gm)].map((m) => [
      m[1],
      [...m[2]!.matchAll(/`(admin|operator|auditor)`/g)].map((r) => r[1]).sort(),
    ]);
    const table = Object.entries(REVOCATION_ROLES).map(([kind, roles]) => [kind, [...roles].sort()]);
    expect(Object.fromEntries(rows)).toEqual(Object.fromEntries(table));
    expect(rows).toHaveLength(table.length);
    const allowed: readonly string[] = ADMIN_ROUTES[route];
    for (const [, roles] of table) for (const role of roles!) expect(allowed).toContain(role);
  });

  it('ok/the error table is http/errors.ts HTTP_STATUS (plus ERR_INTERNAL 500)', () => {
    const rows = [...doc.matchAll(/^\| `(ERR_[A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    expect(Object.fromEntries(rows)).toEqual({ ...HTTP_STATUS, ERR_INTERNAL: 500 });
    expect(rows.length).toBe(Object.keys(HTTP_STATUS).length + 1);
  });
});
