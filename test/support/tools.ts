import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

export function tempDir(prefix = 'baton-test-'): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** Runs a real tool and returns its exit status and output (never throws on non-zero). */
export function run(cmd: string, args: string[], input?: string): { status: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  return { status: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

export function writeFiles(dir: string, files: Record<string, string>): Record<string, string> {
  const paths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    paths[name] = join(dir, name);
    writeFileSync(paths[name]!, content);
  }
  return paths;
}

export function opensslText(pem: string): string {
  return execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem, encoding: 'utf8' });
}

/**
 * A self-signed EC P-256 certificate and its key (PEM) from `openssl req -x509`, valid for a day:
 * a TLS server that is none of Baton's. `extra` adds openssl arguments (e.g. `-addext`).
 */
export function selfSignedEc(subject: string, extra: string[] = []): { key: Buffer; cert: Buffer } {
  const dir = tempDir('baton-selfsigned-');
  try {
    const [key, cert] = [join(dir.path, 'key.pem'), join(dir.path, 'cert.pem')];
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-subj',
        subject,
      ].concat(extra, ['-days', '1', '-keyout', key, '-out', cert]),
      { stdio: 'ignore' },
    );
    return { key: readFileSync(key), cert: readFileSync(cert) };
  } finally {
    dir.cleanup();
  }
}

export const hasTool = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/**
 * Like `run`, without blocking the event loop: for tools that talk to a server running in this
 * test process (a spawnSync there would deadlock).
 */
export function runAsync(
  cmd: string,
  args: string[],
  input?: string,
): Promise<{ status: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ status: code ?? -1, out }));
    // A tool that exits without reading its input (nginx -t) makes this write fail with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

/**
 * What a test needs from the machine beyond Node: a program (openssl, GnuTLS certtool, nginx, ...)
 * or root. `itWith`/`describeWith` register the test when it is met; when it is not, the test is
 * registered as skipped with the reason in its title (and a warning once per file), never as a
 * test that passes without asserting. With BATON_REQUIRE_TOOLS=1 (`.ci/run` sets it, after
 * installing every tool) an unmet requirement is a failing test that names it instead.
 */
export interface Requirement {
  /** What is needed, as the skip reason and the failure say it: "certtool (Debian gnutls-bin)". */
  what: string;
  met: boolean;
}

/** The Debian package each program the tests call comes from (`.ci/run` installs them). */
const PACKAGE_OF: Record<string, string> = {
  openssl: 'openssl',
  certtool: 'gnutls-bin',
  ocsptool: 'gnutls-bin',
  nginx: 'nginx-light',
  setpriv: 'util-linux',
  base32: 'coreutils',
  go: 'golang-go',
  swtpm: 'swtpm',
  swtpm_setup: 'swtpm-tools',
  tpm2_createek: 'tpm2-tools',
};

/** A program, by name (looked up on PATH) or by absolute path (which must be executable). */
export function tool(name: string): Requirement {
  let met: boolean;
  if (name.includes('/')) {
    try {
      accessSync(name, constants.X_OK);
      met = true;
    } catch {
      met = false;
    }
  } else {
    met = hasTool(name);
  }
  const pkg = PACKAGE_OF[basename(name)];
  return { what: pkg ? `${name} (Debian ${pkg})` : name, met };
}

/**
 * Debian's Python: /usr/bin/python3 where it exists (a python3 earlier on PATH, pyenv's for one,
 * does not see the modules Debian packages install), else python3 on PATH.
 */
export const DEBIAN_PYTHON = (() => {
  try {
    accessSync('/usr/bin/python3', constants.X_OK);
    return '/usr/bin/python3';
  } catch {
    return 'python3';
  }
})();

/** Python modules `DEBIAN_PYTHON` can import, e.g. PyJWT: `pythonModules(['jwt', 'cryptography'], 'python3-jwt …')`. */
export function pythonModules(modules: string[], debianPackages: string): Requirement {
  const r = spawnSync(DEBIAN_PYTHON, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' });
  return { what: `the Python modules ${modules.join(', ')} (Debian ${debianPackages})`, met: r.status === 0 };
}

/** Running as root (uid 0): tests of file ownership and of privilege separation. */
export const rootUser: Requirement = { what: 'root (uid 0)', met: process.getuid?.() === 0 };

/** Whether BATON_REQUIRE_TOOLS=1 makes an unmet requirement a failure rather than a skip. */
export const toolsRequired = (): boolean => process.env.BATON_REQUIRE_TOOLS === '1';

type Needs = string | Requirement | Array<string | Requirement>;

/** The unmet requirements, as one reason ("certtool (Debian gnutls-bin) and root (uid 0)"), or undefined. */
export function unmet(needs: Needs): string | undefined {
  const list = (Array.isArray(needs) ? needs : [needs]).map((n) => (typeof n === 'string' ? tool(n) : n));
  const missing = list.filter((r) => !r.met).map((r) => r.what);
  return missing.length === 0 ? undefined : missing.join(' and ');
}

const warned = new Set<string>();
function warnSkip(reason: string, title: string): void {
  if (warned.has(reason)) return;
  warned.add(reason);
  console.warn(
    `skipped (needs ${reason}, which is missing): "${title}"; BATON_REQUIRE_TOOLS=1 makes this a failure`,
  );
}

const requiredFailure = (reason: string) =>
  new Error(`needs ${reason}, which is missing; BATON_REQUIRE_TOOLS=1 makes a missing tool a failure`);

/** `it`, when the requirements are met; else a skipped test saying why (a failing one under BATON_REQUIRE_TOOLS=1). */
export function itWith(needs: Needs, title: string, fn: jest.ProvidesCallback, timeout?: number): void {
  const reason = unmet(needs);
  if (reason === undefined) {
    it(title, fn, timeout);
  } else if (toolsRequired()) {
    it(title, () => {
      throw requiredFailure(reason);
    });
  } else {
    warnSkip(reason, title);
    it.skip(`${title} (skipped: needs ${reason})`, fn, timeout);
  }
}

/**
 * `describe`, when the requirements are met; else one skipped test saying why (a failing one under
 * BATON_REQUIRE_TOOLS=1). The suite's body is not run then: it may set things up with the tool.
 */
export function describeWith(needs: Needs, title: string, fn: () => void): void {
  const reason = unmet(needs);
  if (reason === undefined) {
    describe(title, fn);
  } else if (toolsRequired()) {
    describe(title, () => {
      it(`has ${reason}`, () => {
        throw requiredFailure(reason);
      });
    });
  } else {
    warnSkip(reason, title);
    describe.skip(`${title} (skipped: needs ${reason})`, () => {
      it(`needs ${reason}`, () => undefined);
    });
  }
}

export const itWithTool = (name: string, title: string, fn: jest.ProvidesCallback, timeout?: number): void =>
  itWith(name, title, fn, timeout);

export const describeWithTool = (name: string, title: string, fn: () => void): void =>
  describeWith(name, title, fn);
