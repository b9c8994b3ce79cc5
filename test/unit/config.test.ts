import { join, resolve } from 'node:path';
import {
  type Env,
  type Flags,
  loadInitConfig,
  loadServerConfig,
  loadStorageConfig,
} from '../../services/ca/src/config';
import { DAY, HOUR, MINUTE, parseDuration } from '../../services/ca/src/domain/duration';
import { MAX_TTL } from '../../services/ca/src/ground/ttl';
import { errorOf } from '../support/errors';

const noEnv: Env = {};

describe('parseDuration', () => {
  it.each([
    ['ok/seconds', '90s', 90_000],
    ['ok/minutes', '15m', 15 * MINUTE],
    ['ok/hours and minutes', '1h30m', 90 * MINUTE],
    ['ok/days', '7d', 7 * DAY],
    ['ok/milliseconds', '250ms', 250],
    ['ok/minutes then milliseconds', '1m5ms', MINUTE + 5],
    ['ok/surrounding whitespace', ' 24h\n', 24 * HOUR],
    ['ok/zero', '0s', 0],
  ])('%s: %p', (_name, text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    ['fail/empty', ''],
    ['fail/only whitespace', '   '],
    ['fail/bare number', '24'],
    ['fail/unknown unit', '1x'],
    ['fail/negative', '-1m'],
    ['fail/unit without number', 'm'],
    ['fail/fraction', '1.5h'],
    ['fail/uppercase unit', '1H'],
    ['fail/space between parts', '1h 30m'],
    ['fail/trailing garbage', '15mx'],
    ['fail/too large to be exact', '99999999999999999999d'],
  ])('%s: %p -> ERR_CONFIG_INVALID', (_name, text) => {
    const e = errorOf(() => parseDuration(text, '--ttl'));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toMatch(/^--ttl: /);
  });
});

describe('loadInitConfig', () => {
  const init = (flags: Flags, env: Env = noEnv) => loadInitConfig(flags, env);

  it('ok/defaults: CONTRACT lifetimes node 24h, workload 1h, admin 8h; public URL of the default listen', () => {
    const c = init({ 'trust-domain': 'prod.example.org' });
    expect(c).toMatchObject({
      trustDomain: 'prod.example.org',
      publicUrl: 'https://127.0.0.1:8443',
      nodeTtlMs: 24 * HOUR,
      workloadTtlMs: HOUR,
      adminTtlMs: 8 * HOUR,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it.each([
    ['fail/missing', {}],
    ['fail/flag without a value', { 'trust-domain': true }],
    ['fail/empty', { 'trust-domain': '' }],
  ] as [string, Flags][])('%s --trust-domain -> ERR_USAGE', (_name, flags) => {
    expect(errorOf(() => init(flags)).code).toBe('ERR_USAGE');
  });

  it.each([
    ['ok/dotted', 'prod.example.org'],
    ['ok/single label', 'localdomain'],
    ['ok/dash, underscore, digits', 'a_b-c.9'],
  ])('%s trust domain %p', (_name, td) => {
    expect(init({ 'trust-domain': td }).trustDomain).toBe(td);
  });

  it.each([
    ['fail/uppercase', 'Prod.example.org'],
    ['fail/empty label', 'a..b'],
    ['fail/leading dot', '.a'],
    ['fail/trailing dot', 'a.'],
    ['fail/a SPIFFE ID instead of a trust domain', 'spiffe://prod.example.org'],
    ['fail/space', 'prod example'],
    ['fail/port', 'prod.example.org:443'],
  ])('%s trust domain %p -> ERR_CONFIG_INVALID', (_name, td) => {
    const e = errorOf(() => init({ 'trust-domain': td }));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toContain('--trust-domain');
  });

  it.each([
    ['ok/node-ttl at the minimum', 'node-ttl', '1m', 'nodeTtlMs', MINUTE],
    ['ok/node-ttl at the maximum', 'node-ttl', '30d', 'nodeTtlMs', MAX_TTL.node],
    ['ok/workload-ttl', 'workload-ttl', '15m', 'workloadTtlMs', 15 * MINUTE],
    ['ok/workload-ttl at the maximum', 'workload-ttl', '7d', 'workloadTtlMs', MAX_TTL.workload],
    ['ok/admin-ttl', 'admin-ttl', '1h30m', 'adminTtlMs', 90 * MINUTE],
  ] as const)('%s: --%s %s', (_name, flag, value, field, ms) => {
    expect(init({ 'trust-domain': 'td', [flag]: value })[field]).toBe(ms);
  });

  it.each([
    ['fail/node-ttl below 1m', 'node-ttl', '30s'],
    ['fail/node-ttl of 59999ms', 'node-ttl', '59999ms'],
    ['fail/node-ttl above the maximum', 'node-ttl', '31d'],
    ['fail/node-ttl one millisecond above the maximum', 'node-ttl', '30d1ms'],
    ['fail/node-ttl without unit', 'node-ttl', '24'],
    ['fail/workload-ttl above the maximum', 'workload-ttl', '8d'],
    ['fail/admin-ttl below 1m', 'admin-ttl', '59s'],
    ['fail/admin-ttl above the maximum', 'admin-ttl', '8d'],
  ])('%s: --%s %s -> ERR_CONFIG_INVALID', (_name, flag, value) => {
    const e = errorOf(() => init({ 'trust-domain': 'td', [flag]: value }));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toContain(`--${flag}`);
  });

  it.each([
    ['ok/flag', { 'public-url': 'https://ca.example.org:8443' }, noEnv, 'https://ca.example.org:8443'],
    ['ok/env', {}, { BATON_PUBLIC_URL: 'https://env.example.org' }, 'https://env.example.org'],
    [
      'ok/flag wins over env',
      { 'public-url': 'https://flag.example.org' },
      { BATON_PUBLIC_URL: 'https://env.example.org' },
      'https://flag.example.org',
    ],
  ] as [string, Flags, Env, string][])('%s --public-url', (_name, flags, env, url) => {
    expect(init({ 'trust-domain': 'td', ...flags }, env).publicUrl).toBe(url);
  });

  it('fail/http public URL', () => {
    expect(errorOf(() => init({ 'trust-domain': 'td', 'public-url': 'http://ca.example.org' })).code).toBe(
      'ERR_CONFIG_INVALID',
    );
  });

  it('ok/--public-http-url takes an http URL (flag or BATON_PUBLIC_HTTP_URL); none by default', () => {
    expect(init({ 'trust-domain': 'td' }).publicHttpUrl).toBeUndefined();
    expect(
      init({ 'trust-domain': 'td', 'public-http-url': 'http://pki.example.org:8080/' }).publicHttpUrl,
    ).toBe('http://pki.example.org:8080');
    expect(
      init({ 'trust-domain': 'td' }, { BATON_PUBLIC_HTTP_URL: 'http://pki.example.org' }).publicHttpUrl,
    ).toBe('http://pki.example.org');
  });

  it.each(['https://pki.example.org', 'ldap://pki.example.org', 'http://pki.example.org/?q=1', 'not a url'])(
    'fail/--public-http-url %s',
    (url) => {
      const e = errorOf(() => init({ 'trust-domain': 'td', 'public-http-url': url }));
      expect(`${e.code} ${e.message}`).toMatch(/^ERR_CONFIG_INVALID --public-http-url: /);
    },
  );
});

describe('loadServerConfig', () => {
  const server = (flags: Flags, env: Env = noEnv) => loadServerConfig(flags, env);

  it('ok/defaults', () => {
    const c = server({});
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8443 });
    expect(c.publicUrl).toBeUndefined();
    expect(c.publicHttpUrl).toBeUndefined();
    expect(c.httpListen).toBeUndefined();
    expect(c.logLevel).toBe('info');
    expect(c.serverCertTtlMs).toBe(24 * HOUR);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it.each([
    ['ok/IPv4 with port 0 (pick a free port)', '127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['ok/bracketed IPv6', '[::1]:8443', { host: '::1', port: 8443 }],
    ['ok/all interfaces', '0.0.0.0:443', { host: '0.0.0.0', port: 443 }],
    ['ok/host name and highest port', 'localhost:65535', { host: 'localhost', port: 65535 }],
  ])('%s: --listen %s', (_name, text, listen) => {
    expect(server({ listen: text }).listen).toEqual(listen);
  });

  it.each([
    ['fail/no port', '127.0.0.1'],
    ['fail/port above 65535', 'x:99999'],
    ['fail/six-digit port', 'x:123456'],
    ['fail/no host', ':8443'],
    ['fail/unbracketed IPv6', '::1:8443'],
    ['fail/bracketed IPv6 without port', '[::1]'],
    ['fail/negative port', '127.0.0.1:-1'],
    ['fail/port with letters', '127.0.0.1:80a'],
    ['fail/empty port', '127.0.0.1:'],
    ['fail/URL instead of address', 'https://127.0.0.1:8443'],
  ])('%s: --listen %s -> ERR_CONFIG_INVALID', (_name, text) => {
    const e = errorOf(() => server({ listen: text }));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toContain('--listen');
  });

  it.each([
    ['ok/env', {}, { BATON_LISTEN: '127.0.0.1:9000' }, 9000],
    ['ok/flag wins over env', { listen: '127.0.0.1:9001' }, { BATON_LISTEN: '127.0.0.1:9000' }, 9001],
  ] as [string, Flags, Env, number][])('%s --listen / BATON_LISTEN', (_name, flags, env, port) => {
    expect(server(flags, env).listen.port).toBe(port);
  });

  it.each([
    ['ok/https with port', 'https://ca.example.org:8443', 'https://ca.example.org:8443'],
    ['ok/trailing slash removed', 'https://ca.example.org/', 'https://ca.example.org'],
    ['ok/path kept', 'https://ca.example.org/baton/', 'https://ca.example.org/baton'],
    ['ok/IPv6 literal', 'https://[::1]:8443', 'https://[::1]:8443'],
  ])('%s: --public-url %s', (_name, text, url) => {
    expect(server({ 'public-url': text }).publicUrl).toBe(url);
  });

  it.each([
    ['fail/http', 'http://ca.example.org'],
    ['fail/no scheme', 'ca.example.org:8443'],
    ['fail/other scheme', 'ftp://ca.example.org'],
    ['fail/credentials', 'https://user:secret@ca.example.org'],
    ['fail/query', 'https://ca.example.org/?a=1'],
    ['fail/fragment', 'https://ca.example.org/#x'],
  ])('%s: --public-url %s -> ERR_CONFIG_INVALID', (_name, text) => {
    const e = errorOf(() => server({ 'public-url': text }));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toContain('--public-url');
  });

  it.each([
    ['ok/trace', 'trace'],
    ['ok/debug', 'debug'],
    ['ok/warn', 'warn'],
    ['ok/error', 'error'],
    ['ok/silent', 'silent'],
  ])('%s BATON_LOG_LEVEL', (_name, level) => {
    expect(server({}, { BATON_LOG_LEVEL: level }).logLevel).toBe(level);
  });

  it.each([
    ['fail/unknown level', 'verbose'],
    ['fail/uppercase', 'INFO'],
    ['fail/numeric pino level', '30'],
  ])('%s BATON_LOG_LEVEL=%s -> ERR_CONFIG_INVALID', (_name, level) => {
    const e = errorOf(() => server({}, { BATON_LOG_LEVEL: level }));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toContain('BATON_LOG_LEVEL');
  });

  it.each([
    ['ok/1h', '1h', HOUR],
    ['ok/30d maximum', '30d', 30 * DAY],
  ])('%s BATON_SERVER_CERT_TTL', (_name, text, ms) => {
    expect(server({}, { BATON_SERVER_CERT_TTL: text }).serverCertTtlMs).toBe(ms);
  });

  it.each([
    ['fail/below 1m', '10s'],
    ['fail/above 30d', '31d'],
  ])('%s BATON_SERVER_CERT_TTL -> ERR_CONFIG_INVALID', (_name, text) => {
    expect(errorOf(() => server({}, { BATON_SERVER_CERT_TTL: text })).code).toBe('ERR_CONFIG_INVALID');
  });

  it('ok/retention (issue 20): --retain-expired 7d and --retain-audit 90d by default; flag over env', () => {
    expect(server({})).toMatchObject({ retainExpiredMs: 7 * DAY, retainAuditMs: 90 * DAY });
    expect(server({}, { BATON_RETAIN_EXPIRED: '1m', BATON_RETAIN_AUDIT: '365d' })).toMatchObject({
      retainExpiredMs: 60_000,
      retainAuditMs: 365 * DAY,
    });
    expect(
      server(
        { 'retain-expired': '2d', 'retain-audit': '30d' },
        { BATON_RETAIN_EXPIRED: '1m', BATON_RETAIN_AUDIT: '1d' },
      ),
    ).toMatchObject({ retainExpiredMs: 2 * DAY, retainAuditMs: 30 * DAY });
  });

  it.each([
    ['fail/below 1m', { 'retain-expired': '59s' }, '--retain-expired: must be at least 1m'],
    [
      'fail/a bare number',
      { 'retain-expired': '7' },
      '--retain-expired: invalid duration "7" (use e.g. 90s, 15m, 24h, 7d)',
    ],
    ['fail/audit below 1m', { 'retain-audit': '30s' }, '--retain-audit: must be at least 1m'],
    [
      'fail/audit not a duration',
      { 'retain-audit': 'forever' },
      '--retain-audit: invalid duration "forever" (use e.g. 90s, 15m, 24h, 7d)',
    ],
  ] as [string, Flags, string][])('%s -> ERR_CONFIG_INVALID', (_name, flags, message) => {
    const e = errorOf(() => server(flags));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toBe(message);
  });

  it('ok/--public-http-url and --listen-http', () => {
    const c = server({ 'public-http-url': 'http://pki.example.org:8080', 'listen-http': '0.0.0.0:8080' });
    expect(c.publicHttpUrl).toBe('http://pki.example.org:8080');
    expect(c.httpListen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(errorOf(() => server({ 'listen-http': 'nowhere' })).message).toMatch(
      /^--listen-http: expected HOST:PORT/,
    );
    expect(errorOf(() => server({ 'public-http-url': 'https://pki.example.org' })).message).toMatch(
      /^--public-http-url: must be an http:\/\/ URL/,
    );
  });

  it('ok/includes the storage settings', () => {
    const c = server(
      { 'data-dir': '/srv/baton' },
      { BATON_DATABASE_URL: 'postgres://db/baton', BATON_KEK: 'k' },
    );
    expect(c).toMatchObject({ dataDir: '/srv/baton', databaseUrl: 'postgres://db/baton', kekBase64: 'k' });
  });
});

describe('loadStorageConfig', () => {
  it.each([
    ['ok/default ./baton-data', {}, noEnv, resolve('baton-data')],
    ['ok/BATON_DATA_DIR', {}, { BATON_DATA_DIR: '/var/lib/baton' }, '/var/lib/baton'],
    ['ok/--data-dir', { 'data-dir': '/srv/baton' }, noEnv, '/srv/baton'],
    [
      'ok/--data-dir wins over BATON_DATA_DIR',
      { 'data-dir': '/srv/flag' },
      { BATON_DATA_DIR: '/srv/env' },
      '/srv/flag',
    ],
    ['ok/relative path is resolved', { 'data-dir': 'rel/dir' }, noEnv, join(process.cwd(), 'rel/dir')],
    ['ok/empty BATON_DATA_DIR means unset', {}, { BATON_DATA_DIR: '' }, resolve('baton-data')],
  ] as [string, Flags, Env, string][])('%s', (_name, flags, env, dataDir) => {
    expect(loadStorageConfig(flags, env).dataDir).toBe(dataDir);
  });

  it.each([
    ['ok/unset: embedded PGlite', {}, noEnv, undefined],
    ['ok/postgres://', { 'database-url': 'postgres://u@db:5432/baton' }, noEnv, 'postgres://u@db:5432/baton'],
    ['ok/postgresql://', { 'database-url': 'postgresql://db/baton' }, noEnv, 'postgresql://db/baton'],
    ['ok/env', {}, { BATON_DATABASE_URL: 'postgres://env/baton' }, 'postgres://env/baton'],
    [
      'ok/flag wins over env',
      { 'database-url': 'postgres://flag/baton' },
      { BATON_DATABASE_URL: 'postgres://env/baton' },
      'postgres://flag/baton',
    ],
    ['ok/empty env means unset', {}, { BATON_DATABASE_URL: '' }, undefined],
  ] as [string, Flags, Env, string | undefined][])('%s database URL', (_name, flags, env, url) => {
    expect(loadStorageConfig(flags, env).databaseUrl).toBe(url);
  });

  it.each([
    ['fail/mysql', { 'database-url': 'mysql://db/baton' }, noEnv],
    ['fail/sqlite file', { 'database-url': 'sqlite:baton.db' }, noEnv],
    ['fail/http', { 'database-url': 'http://db:5432/baton' }, noEnv],
    ['fail/bare host', {}, { BATON_DATABASE_URL: 'db:5432' }],
    ['fail/scheme without slashes', {}, { BATON_DATABASE_URL: 'postgres:db/baton' }],
  ] as [string, Flags, Env][])('%s database URL -> ERR_CONFIG_INVALID', (_name, flags, env) => {
    const e = errorOf(() => loadStorageConfig(flags, env));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toContain('postgres://');
  });

  it('ok/BATON_KEK is read from the environment only', () => {
    expect(loadStorageConfig({}, { BATON_KEK: 'abc' }).kekBase64).toBe('abc');
    expect(loadStorageConfig({ kek: 'abc' }, noEnv).kekBase64).toBeUndefined();
    expect(loadStorageConfig({}, { BATON_KEK: '' }).kekBase64).toBeUndefined();
  });
});
