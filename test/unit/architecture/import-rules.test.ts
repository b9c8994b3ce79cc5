import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import * as ts from 'typescript';

/**
 * Dependencies point one way (issue 15): every relative import of the production code is resolved
 * to a file and checked against the rules below; a broken rule is printed as
 * `file → import (rule)`. The production code is services/, clients/, common/ and migrations/;
 * tests, bench/ and examples/ may import anything.
 */

const REPO = join(__dirname, '..', '..', '..');
const PRODUCTION_DIRS = ['services', 'clients', 'common', 'migrations'];
const SRC = 'services/ca/src/';

type ImportKind = 'import' | 'export' | 'import =' | 'dynamic import' | 'require' | 'import type';

interface ImportEdge {
  /** The importing file, relative to the repository, with '/'. */
  file: string;
  /** The module specifier as written. */
  specifier: string;
  kind: ImportKind;
  /**
   * The imported file, relative to the repository, for a relative specifier; null when it does not
   * resolve; undefined for a package or a Node built-in.
   */
  target?: string | null;
}

interface Violation {
  file: string;
  specifier: string;
  rule: string;
}

const formatViolation = (v: Violation): string => `${v.file} → ${v.specifier} (${v.rule})`;

const posix = (p: string): string => p.split(sep).join('/');

function tsFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name === 'dist' || entry.name === 'build') continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...tsFiles(path));
    else if (entry.isFile() && entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

const isFile = (p: string): boolean => existsSync(p) && statSync(p).isFile();

/** Node16 resolution of a relative specifier as this project writes them (extensionless, or a folder's index). */
function resolveRelative(fromFile: string, specifier: string): string | null {
  const base = resolve(dirname(fromFile), specifier);
  const candidates = [
    `${base}.ts`,
    `${base}.d.ts`,
    join(base, 'index.ts'),
    base,
    `${base}.js`,
    `${base}.json`,
    ...(specifier.endsWith('.js') ? [`${base.slice(0, -3)}.ts`] : []),
  ];
  return candidates.find(isFile) ?? null;
}

const stringArgument = (node: ts.Node | undefined): string | undefined =>
  node && (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) ? node.text : undefined;

/**
 * Every module specifier of one file: static imports and re-exports (type-only ones too: a type is a
 * dependency of the source), `import x = require()`, `import()`, `require()` and `import('…').T`
 * types. A dynamic import or require of a computed name cannot be checked; `nonLiteral` counts them.
 */
function importsOf(
  source: string,
  fileName = 'x.ts',
): { imports: Array<{ specifier: string; kind: ImportKind }>; nonLiteral: number } {
  const sf = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const imports: Array<{ specifier: string; kind: ImportKind }> = [];
  let nonLiteral = 0;
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      const s = stringArgument(node.moduleSpecifier);
      if (s !== undefined) imports.push({ specifier: s, kind: 'import' });
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier) {
      const s = stringArgument(node.moduleSpecifier);
      if (s !== undefined) imports.push({ specifier: s, kind: 'export' });
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      const s = stringArgument(node.moduleReference.expression);
      if (s !== undefined) imports.push({ specifier: s, kind: 'import =' });
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      const s = stringArgument(node.argument.literal);
      if (s !== undefined) imports.push({ specifier: s, kind: 'import type' });
    } else if (ts.isCallExpression(node)) {
      const isImport = node.expression.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = ts.isIdentifier(node.expression) && node.expression.text === 'require';
      if (isImport || isRequire) {
        const s = stringArgument(node.arguments[0]);
        if (s === undefined) nonLiteral++;
        else imports.push({ specifier: s, kind: isImport ? 'dynamic import' : 'require' });
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return { imports, nonLiteral };
}

/** The import edges of every .ts file under `dirs` of `root`. */
function collectEdges(
  root: string,
  dirs: string[],
): { edges: ImportEdge[]; files: number; nonLiteral: string[] } {
  const edges: ImportEdge[] = [];
  const nonLiteral: string[] = [];
  let files = 0;
  for (const dir of dirs) {
    for (const path of tsFiles(join(root, dir))) {
      files++;
      const file = posix(relative(root, path));
      const found = importsOf(readFileSync(path, 'utf8'), path);
      if (found.nonLiteral > 0) nonLiteral.push(file);
      for (const { specifier, kind } of found.imports) {
        const relativeSpecifier = specifier.startsWith('./') || specifier.startsWith('../');
        const resolved = relativeSpecifier ? resolveRelative(path, specifier) : undefined;
        edges.push({
          file,
          specifier,
          kind,
          target: resolved === undefined ? undefined : resolved && posix(relative(root, resolved)),
        });
      }
    }
  }
  return { edges, files, nonLiteral };
}

const isBuiltin = (specifier: string): boolean =>
  specifier.startsWith('node:') || builtinModules.includes(specifier);

/** `@scope/name/sub` → `@scope/name`, `name/sub` → `name`. */
const packageName = (specifier: string): string =>
  specifier
    .split('/')
    .slice(0, specifier.startsWith('@') ? 2 : 1)
    .join('/');

const under =
  (...prefixes: string[]) =>
  (path: string): boolean =>
    prefixes.some((p) => (p.endsWith('/') ? path.startsWith(p) : path === p));

interface Rule {
  name: string;
  appliesTo(file: string): boolean;
  /** Whether an edge from a file the rule applies to breaks it. */
  breaks(edge: ImportEdge): boolean;
}

/** A relative import that leaves the allowed places; packages and built-ins are judged by the package rule. */
const onlyInto =
  (...allowed: string[]) =>
  (e: ImportEdge): boolean =>
    typeof e.target === 'string' && !under(...allowed)(e.target);

const into =
  (...forbidden: string[]) =>
  (e: ImportEdge): boolean =>
    typeof e.target === 'string' && under(...forbidden)(e.target);

const GROUND = `${SRC}ground/`;
const PKI = `${SRC}pki/`;
const DOMAIN = `${SRC}domain/`;
const STORAGE = `${SRC}storage/`;
const KMS = `${SRC}kms/`;
const HTTP = `${SRC}http/`;
const SERVER = `${SRC}server/`;
const CLI = `${SRC}cli/`;
const COMMON = 'common/';
const AGENT_COMMAND = `${SRC}cli/commands/agent.ts`;
const ROTATION_ENTRY = 'clients/rotation/src/index.ts';

const RULES: Rule[] = [
  {
    name: 'ground/ imports only ground/ and Node built-ins',
    appliesTo: under(GROUND),
    breaks: (e) => (e.target === undefined ? !isBuiltin(e.specifier) : onlyInto(GROUND)(e)),
  },
  {
    name: 'pki/ imports only ground/, pki/ and common/',
    appliesTo: under(PKI),
    breaks: onlyInto(GROUND, PKI, COMMON),
  },
  {
    name: 'domain/ imports only ground/, pki/, domain/ and common/',
    appliesTo: under(DOMAIN),
    breaks: onlyInto(GROUND, PKI, DOMAIN, COMMON),
  },
  {
    // A key custody adapter (issue 18): the domain's port on a key store, like storage/ on a database.
    name: 'kms/ imports only ground/, pki/, domain/, kms/ and common/',
    appliesTo: under(KMS),
    breaks: onlyInto(GROUND, PKI, DOMAIN, KMS, COMMON),
  },
  {
    name: 'storage/ does not import http/, server/ or cli/',
    appliesTo: under(STORAGE),
    breaks: into(HTTP, SERVER, CLI),
  },
  {
    name: 'http/ does not import server/, cli/ or storage/',
    appliesTo: under(HTTP),
    breaks: into(SERVER, CLI, STORAGE),
  },
  {
    name: `services/ imports clients/ only from ${AGENT_COMMAND}, and only ${ROTATION_ENTRY}`,
    appliesTo: under('services/'),
    breaks: (e) => into('clients/')(e) && !(e.file === AGENT_COMMAND && e.target === ROTATION_ENTRY),
  },
  {
    // The CA's errors at the API are BatonErrors: pki/der-reader.ts translates the reader's DerError.
    name: `services/ reads DER only through ${PKI}der-reader.ts`,
    appliesTo: (file) => under('services/')(file) && file !== `${PKI}der-reader.ts`,
    breaks: into('common/src/der-reader.ts'),
  },
  {
    name: 'clients/ does not import services/',
    appliesTo: under('clients/'),
    breaks: into('services/'),
  },
  {
    name: 'common/ imports only common/',
    appliesTo: under(COMMON),
    breaks: onlyInto(COMMON),
  },
  {
    name: 'migrations/ imports only migrations/',
    appliesTo: under('migrations/'),
    breaks: onlyInto('migrations/'),
  },
  {
    name: 'a relative import resolves to a file',
    appliesTo: () => true,
    breaks: (e) => e.target === null,
  },
];

interface PackageJson {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

/** Production code runs where only `dependencies` are installed (the Docker image: npm ci --omit=dev). */
function packageViolation(e: ImportEdge, pkg: PackageJson): string | undefined {
  if (e.target !== undefined || isBuiltin(e.specifier)) return undefined;
  const name = packageName(e.specifier);
  if (pkg.dependencies?.[name] !== undefined) return undefined;
  return pkg.devDependencies?.[name] !== undefined
    ? 'production code imports a package listed only in devDependencies'
    : 'production code imports a package not listed in dependencies';
}

function violations(edges: ImportEdge[], pkg: PackageJson): Violation[] {
  const out: Violation[] = [];
  for (const e of edges) {
    for (const rule of RULES) {
      if (rule.appliesTo(e.file) && rule.breaks(e))
        out.push({ file: e.file, specifier: e.specifier, rule: rule.name });
    }
    const p = packageViolation(e, pkg);
    if (p) out.push({ file: e.file, specifier: e.specifier, rule: p });
  }
  return out;
}

/**
 * Violations accepted on purpose, each with the reason it could not reasonably be moved. Keep it
 * empty: an entry that no longer matches a violation fails the test too.
 */
const ALLOWED: Array<Violation & { why: string }> = [];

const isAllowed = (v: Violation): boolean =>
  ALLOWED.some((a) => a.file === v.file && a.specifier === v.specifier && a.rule === v.rule);

const readPackageJson = (root: string): PackageJson =>
  JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson;

describe('import rules of the production code', () => {
  const scan = collectEdges(REPO, PRODUCTION_DIRS);
  const found = violations(scan.edges, readPackageJson(REPO));

  it('the scan sees the tree (a broken scanner must not pass for a clean tree)', () => {
    expect(scan.files).toBeGreaterThan(100);
    // Known edges of each kind the rules depend on.
    expect(scan.edges).toContainEqual(
      expect.objectContaining({ file: AGENT_COMMAND, target: ROTATION_ENTRY, kind: 'import' }),
    );
    expect(scan.edges).toContainEqual(
      expect.objectContaining({ file: `${PKI}der-reader.ts`, target: 'common/src/der-reader.ts' }),
    );
    expect(scan.edges.some((e) => e.file.startsWith(HTTP) && e.target?.startsWith(DOMAIN))).toBe(true);
  });

  it('has no violations', () => {
    expect(found.filter((v) => !isAllowed(v)).map(formatViolation)).toEqual([]);
  });

  it('allows nothing that is not needed', () => {
    const stale = ALLOWED.filter(
      (a) => !found.some((v) => v.file === a.file && v.specifier === a.specifier && v.rule === a.rule),
    );
    expect(stale.map(formatViolation)).toEqual([]);
  });

  it('only pki/native-ec.ts requires a computed name (the native addon, which imports nothing of ours)', () => {
    expect(scan.nonLiteral).toEqual([`${PKI}native-ec.ts`]);
  });
});

describe('the import checker reports what breaks a rule', () => {
  const pkg: PackageJson = { dependencies: { express: '5' }, devDependencies: { jest: '29' } };
  const edge = (file: string, target: string | null | undefined, specifier = target ?? 'x'): ImportEdge => ({
    file,
    specifier,
    kind: 'import',
    target,
  });

  it.each([
    ['fail/ground imports domain', edge(`${GROUND}errors.ts`, `${DOMAIN}ports.ts`), 'ground/ imports only'],
    [
      'fail/ground imports a package',
      edge(`${GROUND}errors.ts`, undefined, 'express'),
      'ground/ imports only',
    ],
    ['fail/pki imports domain', edge(`${PKI}csr.ts`, `${DOMAIN}ports.ts`), 'pki/ imports only'],
    ['fail/pki imports config.ts', edge(`${PKI}csr.ts`, `${SRC}config.ts`), 'pki/ imports only'],
    ['fail/domain imports config.ts', edge(`${DOMAIN}issue.ts`, `${SRC}config.ts`), 'domain/ imports only'],
    [
      'fail/domain imports storage',
      edge(`${DOMAIN}issue.ts`, `${STORAGE}knex/db.ts`),
      'domain/ imports only',
    ],
    ['fail/storage imports http', edge(`${STORAGE}knex/a.ts`, `${HTTP}errors.ts`), 'storage/ does not'],
    ['fail/http imports server', edge(`${HTTP}app.ts`, `${SERVER}crl-service.ts`), 'http/ does not'],
    ['fail/http imports storage', edge(`${HTTP}app.ts`, `${STORAGE}knex/db.ts`), 'http/ does not'],
    [
      'fail/server imports a client',
      edge(`${SERVER}x.ts`, 'clients/rotation/src/index.ts'),
      'services/ imports',
    ],
    [
      'fail/agent command imports a client internal',
      edge(AGENT_COMMAND, 'clients/rotation/src/rotator.ts'),
      'services/ imports',
    ],
    [
      'fail/domain reads DER around the translation',
      edge(`${DOMAIN}attestation/x509pop-attestor.ts`, 'common/src/der-reader.ts'),
      'reads DER only through',
    ],
    ['fail/client imports services', edge('clients/identity/src/a.ts', `${PKI}der.ts`), 'clients/ does not'],
    ['fail/common imports services', edge('common/src/a.ts', `${GROUND}errors.ts`), 'common/ imports only'],
    [
      'fail/common imports clients',
      edge('common/src/a.ts', 'clients/rotation/src/a.ts'),
      'common/ imports only',
    ],
    [
      'fail/migrations import domain',
      edge('migrations/a.ts', `${DOMAIN}ports.ts`),
      'migrations/ imports only',
    ],
    ['fail/unresolved relative import', edge(`${HTTP}app.ts`, null, './gone'), 'resolves to a file'],
    [
      'fail/devDependency in production',
      edge('common/src/a.ts', undefined, 'jest'),
      'only in devDependencies',
    ],
    ['fail/undeclared package', edge(`${HTTP}a.ts`, undefined, 'left-pad/x'), 'not listed in dependencies'],
  ])('%s', (_name, e, rule) => {
    const out = violations([e], pkg);
    expect(out).toHaveLength(1);
    expect(formatViolation(out[0]!)).toBe(`${e.file} → ${e.specifier} (${out[0]!.rule})`);
    expect(out[0]!.rule).toContain(rule);
  });

  it.each([
    ['ok/agent command imports the rotation entry point', edge(AGENT_COMMAND, ROTATION_ENTRY)],
    ['ok/pki imports common', edge(`${PKI}csr.ts`, 'common/src/der.ts')],
    ['ok/domain imports pki and ground', edge(`${DOMAIN}issue.ts`, `${PKI}certificate.ts`)],
    ['ok/http imports domain and config.ts', edge(`${HTTP}app.ts`, `${SRC}config.ts`)],
    ['ok/server imports http', edge(`${SERVER}start-server.ts`, `${HTTP}app.ts`)],
    ['ok/clients import common', edge('clients/rotation/src/a.ts', 'common/src/csr.ts')],
    ['ok/a dependency and a built-in', edge(`${HTTP}a.ts`, undefined, 'express')],
    ['ok/a Node built-in in ground', edge(`${GROUND}a.ts`, undefined, 'node:crypto')],
  ])('%s', (_name, e) => {
    expect(violations([e], pkg)).toEqual([]);
  });

  it('finds every import form in real files and reports each violation once', () => {
    const root = mkdtempSync(join(tmpdir(), 'baton-import-rules-'));
    try {
      const write = (path: string, text: string): void => {
        mkdirSync(dirname(join(root, path)), { recursive: true });
        writeFileSync(join(root, path), text);
      };
      write(`${SERVER}s.ts`, 'export const s = 1;\nexport type S = number;\n');
      write(`${GROUND}errors.ts`, "import { s } from '../server/s';\nexport const e = s;\n");
      write(
        `${HTTP}app.ts`,
        [
          "import type { S } from '../server/s';",
          "export { s } from '../server/s';",
          "import fs = require('../server/s');",
          "export type T = import('../server/s').S;",
          "export const later = () => import('../server/s');",
          "export const now = () => require('../server/s');",
          'export const computed = (name: string) => require(name);',
          "import express from 'express';",
          "import { readFileSync } from 'node:fs';",
          "import { ok } from './ok';",
          'export const all = [fs, express, readFileSync, ok] as unknown as S;',
        ].join('\n'),
      );
      write(`${HTTP}ok/index.ts`, 'export const ok = 1;\n');
      write('clients/rotation/src/index.ts', 'export const r = 1;\n');
      write(`${CLI}commands/agent.ts`, "export { r } from '../../../../../clients/rotation/src';\n");
      write('clients/identity/src/a.ts', "export { e } from '../../../services/ca/src/ground/errors';\n");
      write('common/src/c.ts', "import { describe } from 'jest';\nexport const d = describe;\n");

      const scanned = collectEdges(root, PRODUCTION_DIRS);
      expect(scanned.nonLiteral).toEqual([`${HTTP}app.ts`]);
      const out = violations(scanned.edges, pkg).map(formatViolation).sort();
      const httpRule = 'http/ does not import server/, cli/ or storage/';
      expect(out).toEqual(
        [
          `${GROUND}errors.ts → ../server/s (ground/ imports only ground/ and Node built-ins)`,
          ...Array.from({ length: 6 }, () => `${HTTP}app.ts → ../server/s (${httpRule})`),
          `clients/identity/src/a.ts → ../../../services/ca/src/ground/errors (clients/ does not import services/)`,
          'common/src/c.ts → jest (production code imports a package listed only in devDependencies)',
        ].sort(),
      );
      // The six forms were all seen, once each.
      expect(
        scanned.edges
          .filter((e) => e.file === `${HTTP}app.ts` && e.target === `${SERVER}s.ts`)
          .map((e) => e.kind)
          .sort(),
      ).toEqual(['dynamic import', 'export', 'import', 'import =', 'import type', 'require']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
