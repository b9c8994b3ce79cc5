import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative, sep } from 'node:path';
import * as ts from 'typescript';

/**
 * Production dependencies are what production imports (issue 15). The Docker image installs only
 * `dependencies` (npm ci --omit=dev), so every package the production code loads at run time must be
 * there; and a package there that production never loads is a test's, and belongs in
 * devDependencies. Production code: services/, clients/, common/, migrations/ and bin/ (.ts and
 * .js; tests, bench/ and examples/ may import anything). A dependency production does not import
 * itself may stay when a dependency it imports loads it: a peer dependency of that package (pg for
 * knex's `client: 'pg'`, @electric-sql/pglite for knex-pglite).
 */

const REPO = join(__dirname, '..', '..', '..');
const PRODUCTION_DIRS = ['services', 'clients', 'common', 'migrations', 'bin'];
/** node-gyp's output (services/ca/native/build) and installed or compiled trees are not sources. */
const NOT_SOURCES = new Set(['node_modules', 'dist', 'build']);

interface PackageJson {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, unknown>;
}

const posix = (p: string): string => p.split(sep).join('/');

function sourceFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (NOT_SOURCES.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.isFile() && /\.(ts|js|cjs|mjs)$/.test(entry.name) && !entry.name.endsWith('.d.ts'))
      out.push(path);
  }
  return out;
}

const literal = (node: ts.Node | undefined): string | undefined =>
  node && (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) ? node.text : undefined;

/** An import TypeScript erases: `import type`, or only `type` names in braces. */
function typeOnlyImport(node: ts.ImportDeclaration): boolean {
  const clause = node.importClause;
  if (!clause) return false; // import 'x': loaded for its side effects
  if (clause.isTypeOnly) return true;
  if (clause.name) return false;
  const bindings = clause.namedBindings;
  return (
    bindings !== undefined &&
    ts.isNamedImports(bindings) &&
    bindings.elements.length > 0 &&
    bindings.elements.every((e) => e.isTypeOnly)
  );
}

function typeOnlyExport(node: ts.ExportDeclaration): boolean {
  if (node.isTypeOnly) return true;
  const clause = node.exportClause;
  return (
    clause !== undefined &&
    ts.isNamedExports(clause) &&
    clause.elements.length > 0 &&
    clause.elements.every((e) => e.isTypeOnly)
  );
}

/** The module specifiers a file loads at run time: imports, re-exports, `import =`, `import()`, `require()`. */
function runtimeSpecifiers(source: string, fileName = 'x.ts'): string[] {
  const kind = fileName.endsWith('.ts') ? ts.ScriptKind.TS : ts.ScriptKind.JS;
  const sf = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, kind);
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    let s: string | undefined;
    if (ts.isImportDeclaration(node)) {
      if (!typeOnlyImport(node)) s = literal(node.moduleSpecifier);
    } else if (ts.isExportDeclaration(node)) {
      if (node.moduleSpecifier && !typeOnlyExport(node)) s = literal(node.moduleSpecifier);
    } else if (ts.isImportEqualsDeclaration(node)) {
      if (!node.isTypeOnly && ts.isExternalModuleReference(node.moduleReference)) {
        s = literal(node.moduleReference.expression);
      }
    } else if (ts.isCallExpression(node)) {
      const isImport = node.expression.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = ts.isIdentifier(node.expression) && node.expression.text === 'require';
      if (isImport || isRequire) s = literal(node.arguments[0]);
    }
    if (s !== undefined) found.push(s);
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

/** The package a bare specifier names (`@scope/name/sub` → `@scope/name`); undefined for a path or a built-in. */
function packageOf(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('/')) return undefined;
  if (specifier.startsWith('node:') || builtinModules.includes(specifier)) return undefined;
  return specifier
    .split('/')
    .slice(0, specifier.startsWith('@') ? 2 : 1)
    .join('/');
}

interface ProductionScan {
  /** Package → the production files (relative, '/') that load it at run time. */
  imports: Map<string, string[]>;
}

function scan(files: Array<{ file: string; source: string }>): ProductionScan {
  const imports = new Map<string, string[]>();
  for (const { file, source } of files) {
    for (const specifier of runtimeSpecifiers(source, file)) {
      const pkg = packageOf(specifier);
      if (pkg === undefined) continue;
      const list = imports.get(pkg) ?? [];
      if (!list.includes(file)) list.push(file);
      imports.set(pkg, list);
    }
  }
  return { imports };
}

/**
 * What is wrong with `dependencies` for the production imports, one line each. `peersOf(pkg)` names
 * the peer dependencies (optional ones too) of an installed package.
 */
function dependencyProblems(
  pkg: PackageJson,
  found: ProductionScan,
  peersOf: (name: string) => string[],
): string[] {
  const deps = pkg.dependencies ?? {};
  const problems: string[] = [];
  for (const [name, files] of [...found.imports].sort(([a], [b]) => a.localeCompare(b))) {
    if (deps[name] !== undefined) continue;
    const where =
      pkg.devDependencies?.[name] !== undefined ? 'only in devDependencies' : 'not in dependencies';
    problems.push(`${name}: imported by ${files.join(', ')}, but ${where} (npm ci --omit=dev leaves it out)`);
  }
  const imported = [...found.imports.keys()].filter((name) => deps[name] !== undefined);
  for (const name of Object.keys(deps).sort()) {
    if (found.imports.has(name)) continue;
    const via = imported.filter((d) => peersOf(d).includes(name));
    if (via.length > 0) continue;
    problems.push(
      `${name}: in dependencies, but no production file imports it (nor is it a peer of one that does)`,
    );
  }
  return problems;
}

function installedPeers(name: string): string[] {
  const file = join(REPO, 'node_modules', ...name.split('/'), 'package.json');
  const p = JSON.parse(readFileSync(file, 'utf8')) as PackageJson;
  return [...Object.keys(p.peerDependencies ?? {}), ...Object.keys(p.peerDependenciesMeta ?? {})];
}

describe('production dependencies (package.json) are what production imports', () => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as PackageJson;
  const files = PRODUCTION_DIRS.flatMap((d) => sourceFiles(join(REPO, d))).map((path) => ({
    file: posix(relative(REPO, path)),
    source: readFileSync(path, 'utf8'),
  }));

  it('reads the production sources (bin/baton.js and the services among them)', () => {
    const names = files.map((f) => f.file);
    expect(names).toContain('bin/baton.js');
    expect(names).toContain('services/ca/src/cli/main.ts');
    expect(names.filter((n) => n.startsWith('services/')).length).toBeGreaterThan(20);
    expect(names.some((n) => n.startsWith('services/ca/native/build/'))).toBe(false);
  });

  it('every package production loads is in dependencies, and every dependency is loaded by production', () => {
    expect(dependencyProblems(pkg, scan(files), installedPeers)).toEqual([]);
  });

  it('the packages only tests use are devDependencies', () => {
    for (const name of [
      '@peculiar/x509',
      '@peculiar/asn1-schema',
      '@peculiar/asn1-x509',
      'reflect-metadata',
    ]) {
      expect({ name, dependency: pkg.dependencies?.[name] }).toEqual({ name, dependency: undefined });
      expect(pkg.devDependencies?.[name]).toBeDefined();
    }
  });
});

describe('the dependency check itself, on synthetic input', () => {
  const pkg: PackageJson = {
    dependencies: { express: '5', knex: '3', pg: '8', 'left-over': '1' },
    devDependencies: { jest: '29', 'reflect-metadata': '0.2', '@peculiar/x509': '2' },
  };
  const peers: Record<string, string[]> = { knex: ['pg', 'mysql'] };
  const peersOf = (name: string) => peers[name] ?? [];
  const problemsOf = (files: Record<string, string>) =>
    dependencyProblems(pkg, scan(Object.entries(files).map(([file, source]) => ({ file, source }))), peersOf);
  const base = {
    'services/a.ts': "import express from 'express';\nimport knexFactory from 'knex';\n",
    'services/b.ts': "import 'left-over';\n",
  };

  it('ok/imports of dependencies, built-ins and relative paths; pg as a peer of knex', () => {
    expect(
      problemsOf({
        ...base,
        'services/c.ts':
          "import { join } from 'node:path';\nimport { readFileSync } from 'fs';\nimport { x } from '../y';\n",
      }),
    ).toEqual([]);
  });

  it.each([
    ['a side-effect import', "import 'reflect-metadata';", 'reflect-metadata'],
    ['a require()', "const x = require('@peculiar/x509');", '@peculiar/x509'],
    ['a deep import', "import { X509Certificate } from '@peculiar/x509/lib/x';", '@peculiar/x509'],
    ['a dynamic import()', "const m = await import('jest');", 'jest'],
    ['a re-export', "export { a } from 'jest';", 'jest'],
    ['an import with a value among types', "import { type A, b } from 'jest';", 'jest'],
  ])('fail/%s of a devDependency', (_name, source, name) => {
    expect(problemsOf({ ...base, 'clients/x.ts': source })).toEqual([
      `${name}: imported by clients/x.ts, but only in devDependencies (npm ci --omit=dev leaves it out)`,
    ]);
  });

  it('fail/a package in neither list, from a .js file', () => {
    expect(problemsOf({ ...base, 'bin/x.js': "require('left-pad');" })).toEqual([
      'left-pad: imported by bin/x.js, but not in dependencies (npm ci --omit=dev leaves it out)',
    ]);
  });

  it.each([
    ['import type', "import type { A } from 'jest';"],
    ['only type names', "import { type A, type B } from 'jest';"],
    ['export type', "export type { A } from 'jest';"],
    ['a comment', "// import 'jest';\n/* require('jest') */"],
    ['a string', 'const s = "require(\'jest\')";'],
  ])('ok/%s does not load a package', (_name, source) => {
    expect(problemsOf({ ...base, 'services/t.ts': source })).toEqual([]);
  });

  it('fail/a dependency nothing imports, and a peer whose package is not imported', () => {
    expect(problemsOf({ 'services/a.ts': "import express from 'express';" })).toEqual([
      'knex: in dependencies, but no production file imports it (nor is it a peer of one that does)',
      'left-over: in dependencies, but no production file imports it (nor is it a peer of one that does)',
      'pg: in dependencies, but no production file imports it (nor is it a peer of one that does)',
    ]);
  });
});
