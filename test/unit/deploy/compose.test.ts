import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

/**
 * The deployment files (docker-compose.yml, Dockerfile, .dockerignore) are read as text and checked
 * for what an operator relies on: two replicas on one PostgreSQL database and one KEK, started only
 * after a successful `ca init`, no secret written in the repository, a non-root image.
 */
const root = join(__dirname, '..', '..', '..');
const read = (name: string): string => readFileSync(join(root, name), 'utf8');

type Dict = Record<string, unknown>;
const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v);

function dict(v: unknown, what: string): Dict {
  if (!isDict(v)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v;
}

const composeText = read('docker-compose.yml');
/** As Compose sees it: `<<` merge keys applied. */
const compose = dict(parse(composeText, { merge: true }), 'docker-compose.yml');
/** As written: `<<` left as a key, to see which services are built from the shared extension field. */
const composeRaw = dict(parse(composeText), 'docker-compose.yml');
const services = dict(compose.services, 'services');
const topVolumes = dict(compose.volumes ?? {}, 'volumes');

const service = (name: string): Dict => dict(services[name], `services.${name}`);

/** `environment` as a map, from either the map or the `KEY=value` list form. */
function envOf(name: string): Record<string, string> {
  const env = service(name).environment ?? {};
  const out: Record<string, string> = {};
  if (Array.isArray(env)) {
    for (const item of env) {
      const s = String(item);
      const i = s.indexOf('=');
      out[i < 0 ? s : s.slice(0, i)] = i < 0 ? '' : s.slice(i + 1);
    }
  } else {
    for (const [k, v] of Object.entries(dict(env, `${name}.environment`)))
      out[k] = v == null ? '' : String(v);
  }
  return out;
}

/** `depends_on` as service → condition (the short list form means `service_started`). */
function dependsOn(name: string): Record<string, string> {
  const deps = service(name).depends_on ?? {};
  if (Array.isArray(deps)) return Object.fromEntries(deps.map((d) => [String(d), 'service_started']));
  return Object.fromEntries(
    Object.entries(dict(deps, `${name}.depends_on`)).map(([k, v]) => [
      k,
      String(dict(v ?? {}, `${name}.depends_on.${k}`).condition ?? 'service_started'),
    ]),
  );
}

/** Volume mounts of a service as { source, target, readOnly }, from the short or the long form. */
function mountsOf(name: string): { source: string; target: string; readOnly: boolean }[] {
  const vols = service(name).volumes ?? [];
  if (!Array.isArray(vols)) throw new Error(`${name}.volumes: expected a list`);
  return vols.map((v) => {
    if (typeof v === 'string') {
      const [source = '', target = '', mode = ''] = v.split(':');
      return { source, target, readOnly: mode.split(',').includes('ro') };
    }
    const d = dict(v, `${name}.volumes[]`);
    return { source: String(d.source ?? ''), target: String(d.target ?? ''), readOnly: d.read_only === true };
  });
}

/** Host port → container port, from the short or the long form. */
function portsOf(name: string): { published: number; target: number }[] {
  const ports = service(name).ports ?? [];
  if (!Array.isArray(ports)) throw new Error(`${name}.ports: expected a list`);
  return ports.map((p) => {
    if (isDict(p)) return { published: Number(p.published), target: Number(p.target) };
    const parts = String(p).split('/')[0]!.split(':');
    return { published: Number(parts.at(-2)), target: Number(parts.at(-1)) };
  });
}

/** Every (key, string value) pair of a YAML tree, with its path; list items carry their parent's key. */
function walkStrings(
  node: unknown,
  path: string[],
  key: string,
  out: { path: string; key: string; value: string }[],
) {
  if (typeof node === 'string') out.push({ path: path.join('.'), key, value: node });
  else if (typeof node === 'number' || typeof node === 'boolean') {
    out.push({ path: path.join('.'), key, value: String(node) });
  } else if (Array.isArray(node)) {
    for (const [i, v] of node.entries()) walkStrings(v, [...path, String(i)], key, out);
  } else if (isDict(node)) for (const [k, v] of Object.entries(node)) walkStrings(v, [...path, k], k, out);
  return out;
}

const SECRET_NAME = /PASSWORD|PASSWD|KEK|SECRET|TOKEN|PRIVATE_?KEY/i;
/**
 * The whole value is one required interpolation: `${VAR}`, `${VAR?msg}` or `${VAR:?msg}`.
 * A default (`${VAR:-x}`, `${VAR-x}`) or an alternative (`${VAR:+x}`) would commit a literal.
 */
const REQUIRED_INTERPOLATION = /^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$/;
const INTERPOLATION = /\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}/g;
const ENV_REF = '__ENV_REF__';
/** `${inner}`, for writing interpolations in test strings. */
const ref = (inner: string): string => `\${${inner}}`;

/** Why a string holds a plaintext secret, or undefined when it does not. */
function plaintextSecret(key: string, value: string): string | undefined {
  if (SECRET_NAME.test(key) && !REQUIRED_INTERPOLATION.test(value.trim())) {
    return `${key} is not a required interpolation \${VAR:?...}`;
  }
  // A secret variable interpolated anywhere (a URL, a command) must not carry a default.
  for (const m of value.matchAll(INTERPOLATION)) {
    if (SECRET_NAME.test(m[1]!) && !/^(:?\?.*)?$/.test(m[2]!)) return `\${${m[1]}${m[2]}} has a default`;
  }
  // KEY=value pairs: environment lists, shell commands (PGPASSWORD=... pg_isready).
  for (const m of value.matchAll(/\b([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|'[^']*'|\S*)/g)) {
    const v = m[2]!.replace(/^["']|["']$/g, '');
    if (
      SECRET_NAME.test(m[1]!) &&
      !REQUIRED_INTERPOLATION.test(v) &&
      !/^\$\$?[A-Za-z_][A-Za-z0-9_]*$/.test(v)
    ) {
      return `${m[1]}=${v} is a literal`;
    }
  }
  // Passwords in URLs: scheme://user:password@host, with required interpolations masked first.
  const masked = value.replace(INTERPOLATION, (all) => (REQUIRED_INTERPOLATION.test(all) ? ENV_REF : all));
  for (const m of masked.matchAll(/[a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:([^@\s]*)@/gi)) {
    if (m[1] !== ENV_REF) return `the URL password "${m[1]}" is a literal`;
  }
  return undefined;
}

const REPLICAS = ['baton-1', 'baton-2'];
const BATON = ['baton-init', ...REPLICAS];

describe('docker-compose.yml', () => {
  it('has the services postgres, baton-init, baton-1 and baton-2', () => {
    for (const name of ['postgres', ...BATON]) expect(isDict(services[name])).toBe(true);
  });

  it('runs PostgreSQL 15 with a pg_isready healthcheck and its data on a named volume', () => {
    const pg = service('postgres');
    expect(String(pg.image)).toMatch(/^postgres:15(\.|-|$)/);
    const test = dict(pg.healthcheck, 'postgres.healthcheck').test;
    expect([test].flat().join(' ')).toContain('pg_isready');
    const data = mountsOf('postgres').find((m) => m.target === '/var/lib/postgresql/data');
    expect(data).toBeDefined();
    expect(Object.keys(topVolumes)).toContain(data!.source);
    expect(envOf('postgres').POSTGRES_PASSWORD).toMatch(/^\$\{POSTGRES_PASSWORD:?\?[^}]*\}$/);
  });

  it('gives both replicas the same BATON_DATABASE_URL, on the postgres service', () => {
    const [a, b] = REPLICAS.map((name) => envOf(name).BATON_DATABASE_URL);
    expect(a).toBeTruthy();
    expect(b).toBe(a);
    expect(envOf('baton-init').BATON_DATABASE_URL).toBe(a);
    // Interpolations are not URL syntax: stand a placeholder in for them before parsing.
    const url = new URL(a!.replace(INTERPOLATION, 'x'));
    expect(url.protocol).toMatch(/^postgres(ql)?:$/);
    expect(url.hostname).toBe('postgres');
    expect(url.port === '' || url.port === '5432').toBe(true);
    const pg = envOf('postgres');
    expect(url.username).toBe(pg.POSTGRES_USER ?? 'postgres');
    expect(url.pathname.slice(1)).toBe(pg.POSTGRES_DB ?? pg.POSTGRES_USER ?? 'postgres');
  });

  it('takes BATON_KEK from the environment, never a literal, the same for every Baton service', () => {
    for (const name of BATON) expect(envOf(name).BATON_KEK).toMatch(/^\$\{BATON_KEK(:?\?[^}]*)?\}$/);
  });

  it('holds no plaintext secret anywhere', () => {
    const found = walkStrings(compose, [], '', [])
      .concat(walkStrings(composeRaw, [], '', []))
      .map((s) => ({ ...s, why: plaintextSecret(s.key, s.value) }))
      .filter((s) => s.why)
      .map((s) => `${s.path}: ${s.why}`);
    expect(found).toEqual([]);
  });

  it('detects plaintext secrets (self-check of the walk)', () => {
    expect(plaintextSecret('POSTGRES_PASSWORD', 'hunter2')).toBeDefined();
    expect(plaintextSecret('POSTGRES_PASSWORD', ref('POSTGRES_PASSWORD:-hunter2'))).toBeDefined();
    expect(plaintextSecret('BATON_KEK', 'AAAA')).toBeDefined();
    expect(plaintextSecret('0', 'BATON_KEK=AAAA')).toBeDefined();
    expect(plaintextSecret('test', 'PGPASSWORD=hunter2 pg_isready')).toBeDefined();
    expect(plaintextSecret('URL', 'postgres://baton:hunter2@postgres/baton')).toBeDefined();
    expect(plaintextSecret('URL', `postgres://baton:${ref('PW:?set PW')}@postgres/baton`)).toBeUndefined();
    expect(plaintextSecret('URL', `postgres://baton:${ref('PW:-pw')}@postgres/baton`)).toBeDefined();
    expect(plaintextSecret('URL', `postgres://b:${ref('POSTGRES_PASSWORD:-x')}@postgres/b`)).toBeDefined();
    expect(plaintextSecret('BATON_KEK', ref('BATON_KEK:?set it'))).toBeUndefined();
    expect(plaintextSecret('test', 'PGPASSWORD=$$POSTGRES_PASSWORD pg_isready')).toBeUndefined();
  });

  it('builds every Baton service from the shared x-baton extension field', () => {
    const shared = dict(composeRaw['x-baton'], 'x-baton');
    const rawServices = dict(composeRaw.services, 'services');
    for (const name of BATON) expect(dict(rawServices[name], name)['<<']).toEqual(shared);
  });

  it('runs ca init once, after PostgreSQL is healthy, treating "already initialized" as success', () => {
    const init = service('baton-init');
    expect(init.restart).toBe('no');
    expect(dependsOn('baton-init').postgres).toBe('service_healthy');
    const script = [init.entrypoint, init.command].flat().map(String).join(' ');
    expect(script).toMatch(/\bca init\b/);
    expect(script).toMatch(/--trust-domain\b/);
    expect(script).toContain('already initialized');
    expect(script).toMatch(/\bmigrate\b/);
  });

  it('writes the admin credentials to a named volume', () => {
    const dataDir = envOf('baton-init').BATON_DATA_DIR;
    expect(dataDir).toMatch(/^\//);
    const admin = mountsOf('baton-init').find((m) => m.target === `${dataDir}/admin` || m.target === dataDir);
    expect(admin).toBeDefined();
    expect(admin!.readOnly).toBe(false);
    expect(Object.keys(topVolumes)).toContain(admin!.source);
  });

  it('starts the replicas only after baton-init completed successfully', () => {
    for (const name of REPLICAS) expect(dependsOn(name)['baton-init']).toBe('service_completed_successfully');
  });

  it('runs the replicas on the same image as baton-init, which builds it', () => {
    const [a, b] = REPLICAS.map(service);
    expect(a!.image).toBeTruthy();
    expect(b!.image).toBe(a!.image);
    expect(b!.build).toEqual(a!.build);
    expect(service('baton-init').image).toBe(a!.image);
    const builders = BATON.map(service).filter((s) => s.image === a!.image && s.build !== undefined);
    expect(builders.length).toBeGreaterThan(0);
    const build = builders[0]!.build;
    const context = typeof build === 'string' ? build : dict(build, 'build').context;
    expect(context).toBe('.');
    for (const s of builders) expect(s.build).toEqual(build);
  });

  it('publishes the replicas on distinct host ports 8443 and 8444, each with its own public URL', () => {
    const published = REPLICAS.map((name) => {
      const ports = portsOf(name);
      expect(ports).toHaveLength(1);
      expect(ports[0]!.target).toBe(8443);
      const url = new URL(envOf(name).BATON_PUBLIC_URL!.replace(INTERPOLATION, 'host'));
      expect(url.protocol).toBe('https:');
      expect(Number(url.port)).toBe(ports[0]!.published);
      return ports[0]!.published;
    });
    expect(published).toEqual([8443, 8444]);
  });
});

/** Dockerfile instructions, continuation lines joined and comments dropped, grouped by stage. */
function dockerfileStages(text: string): { from: string; lines: { op: string; args: string }[] }[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    const line = raw.trimEnd();
    if (line.endsWith('\\')) current += `${line.slice(0, -1)} `;
    else {
      current += line;
      if (current.trim()) logical.push(current.trim());
      current = '';
    }
  }
  if (current.trim()) logical.push(current.trim());
  const stages: { from: string; lines: { op: string; args: string }[] }[] = [];
  for (const line of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(line)!;
    const op = m[1]!.toUpperCase();
    const args = m[2]!;
    if (op === 'FROM') stages.push({ from: args, lines: [] });
    else if (stages.length > 0) stages.at(-1)!.lines.push({ op, args });
    else if (op !== 'ARG') throw new Error(`Dockerfile: ${op} before FROM`);
  }
  return stages;
}

describe('Dockerfile', () => {
  const stages = dockerfileStages(read('Dockerfile'));
  const final = stages.at(-1)!;
  const last = (op: string) => final.lines.filter((l) => l.op === op).at(-1)?.args;
  const runs = final.lines.filter((l) => l.op === 'RUN').map((l) => l.args);

  it('is multi-stage on node:20-bookworm-slim', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.from).toMatch(/^node:20-bookworm-slim(\s|$)/);
    const build = stages
      .slice(0, -1)
      .flatMap((s) => s.lines.filter((l) => l.op === 'RUN').map((l) => l.args));
    expect(build.join('\n')).toMatch(/\bnpm ci\b/);
    expect(build.join('\n')).toMatch(/\bnpm run build\b/);
  });

  it('installs production dependencies only in the final stage (npm ci --omit=dev)', () => {
    const npmCi = runs.filter((r) => /\bnpm ci\b/.test(r));
    expect(npmCi.length).toBeGreaterThan(0);
    for (const r of npmCi) expect(r).toMatch(/\bnpm ci\b[^&;|]*--omit=dev\b/);
    expect(runs.join('\n')).not.toMatch(/\bnpm (install|i)\b/);
    const copies = final.lines.filter((l) => l.op === 'COPY').map((l) => l.args);
    expect(copies.some((c) => /--from=\S+.*\bdist\/?\s/.test(`${c} `))).toBe(true);
    expect(copies.some((c) => /\bbin\/?\s/.test(`${c} `))).toBe(true);
    // The agent reads the Workload API's service definition at run time (proto-loader).
    expect(copies).toContain(
      'clients/rotation/src/workload-api/workload.proto ./clients/rotation/src/workload-api/',
    );
    expect(copies).toContain(
      'clients/rotation/src/workload-api/envoy-proto ./clients/rotation/src/workload-api/envoy-proto',
    );
  });

  it('builds the native modules in the build stage and ships only the modules', () => {
    const build = stages.slice(0, -1).flatMap((s) => s.lines);
    const buildRuns = build
      .filter((l) => l.op === 'RUN')
      .map((l) => l.args)
      .join('\n');
    expect(buildRuns).toMatch(/apt-get install\b[^&;|]*\bpython3\b/);
    expect(buildRuns).toMatch(/apt-get install\b[^&;|]*\bg\+\+/);
    expect(buildRuns).toMatch(/apt-get install\b[^&;|]*\bmake\b/);
    const env = build
      .filter((l) => l.op === 'ENV')
      .map((l) => l.args)
      .join(' ');
    expect(env).toMatch(/\bBATON_REQUIRE_NATIVE=1\b/);
    // `npm ci` comes before the sources: it must not run `prepare` (the build) there.
    const firstCi = build.find((l) => l.op === 'RUN' && /\bnpm ci\b/.test(l.args))!;
    expect(firstCi.args).toMatch(/--ignore-scripts\b/);
    const copies = final.lines.filter((l) => l.op === 'COPY').map((l) => l.args);
    // The ECDSA verifier and the peer credentials of the agent's Workload API (services/ca/native).
    for (const module of ['baton_ec_verify', 'baton_peer_credentials']) {
      const copy = new RegExp(
        `^--from=\\S+ /app/services/ca/native/build/Release/${module}\\.node \\./services/ca/native/build/Release/$`,
      );
      expect({ module, copied: copies.some((c) => copy.test(c)) }).toEqual({ module, copied: true });
    }
    // pkcs11js (--kms): compiled in the build stage, its addon copied (the runtime npm ci skips scripts).
    expect(buildRuns).toMatch(/\bnpm rebuild pkcs11js\b/);
    expect(copies).toContain(
      '--from=build /app/node_modules/pkcs11js/build/Release/pkcs11.node ./node_modules/pkcs11js/build/Release/',
    );
    expect(runs.join('\n')).not.toMatch(/\b(g\+\+|gcc|python3)\b/);
  });

  it('runs as a non-root user', () => {
    const user = last('USER');
    expect(user).toBeDefined();
    expect(user!.split(':')[0]).not.toMatch(/^(root|0)$/);
  });

  it('has ENTRYPOINT node bin/baton.js (exec form) and serves on 8443', () => {
    const entrypoint = JSON.parse(last('ENTRYPOINT') ?? 'null') as unknown;
    expect(entrypoint).toEqual(['node', 'bin/baton.js']);
    expect(JSON.parse(last('CMD') ?? 'null')).toEqual(['server', '--listen', '0.0.0.0:8443']);
    expect(last('EXPOSE')).toMatch(/\b8443\b/);
  });

  it('has a HEALTHCHECK on /healthz', () => {
    const hc = last('HEALTHCHECK');
    expect(hc).toBeDefined();
    expect(hc).not.toMatch(/^NONE\b/i);
    expect(hc).toContain('/healthz');
  });

  it('sets no secret in the image', () => {
    for (const s of stages) {
      for (const l of s.lines.filter((x) => x.op === 'ENV' || x.op === 'ARG')) {
        expect(l.args).not.toMatch(SECRET_NAME);
      }
    }
  });
});

describe('.dockerignore', () => {
  it('keeps local dependencies, builds, data and secrets out of the build context', () => {
    const entries = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim().replace(/^\/|\/$/g, ''))
      .filter((l) => l && !l.startsWith('#'));
    for (const e of [
      'node_modules',
      'dist',
      'services/ca/native/build',
      'baton-data',
      '.git',
      'bench/results',
      'coverage',
      '.env',
    ]) {
      expect(entries).toContain(e);
    }
  });
});
