import fc from 'fast-check';

/**
 * Hostile strings and JSON for the fuzz suite. SQL metacharacters (every query is parameterised,
 * so each must come back as data or be refused by validation, never run), strings PostgreSQL
 * refuses to store (NUL), LIKE wildcards, Unicode that changes meaning on normalisation, and sizes
 * around the limits.
 */
export const SQL_METACHARACTERS: readonly string[] = [
  "'",
  "''",
  '"',
  '`',
  ';',
  '--',
  '/*',
  "'; drop table nodes; --",
  '"; drop table entries; --',
  "'); delete from join_tokens; --",
  "' or '1'='1",
  '1 or 1=1',
  "admin'--",
  "' || pg_sleep(5) || '",
  '1; select pg_sleep(5)',
  '%',
  '_',
  '%_%',
  '\\',
  '\\0',
  '\0',
  'a\u0000b',
  '\\x00',
  '$1',
  '$$',
  '?',
  ':name',
  "E'\\x41'",
  'null',
  'NULL',
  '\u2028',
  '\ufeff',
  '\ud800',
  '\u202espiffe',
  'A\u030a',
  'ｓｅｌｅｃｔ',
  '🙂',
  '',
  ' ',
  'x'.repeat(4096),
];

/** Keys that reach Object.prototype machinery when code treats a parsed body as a plain object. */
export const PROTOTYPE_KEYS: readonly string[] = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'valueOf',
  'hasOwnProperty',
  'toJSON',
  'then',
  'length',
];

/** Every field name any Baton JSON route reads. */
export const FIELD_NAMES: readonly string[] = [
  'method',
  'token',
  'csr',
  'spiffe_id',
  'name',
  'parent',
  'selectors',
  'dns_names',
  'allow_wildcard_dns',
  'ttl',
  'role',
  'uses',
  'node_name',
  'node_ttl',
  'reason',
  'nonce',
  'signature',
  'certificate_chain',
];

const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...SQL_METACHARACTERS) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.integer({ min: 257, max: 40_000 }).map((n) => 'x'.repeat(n)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      'join_token',
      'x509pop',
      'worker',
      'manager',
      'admin',
      'spiffe://test.example.org/w',
    ),
  },
);

const hostileKey = fc.oneof(
  fc.constantFrom(...FIELD_NAMES),
  fc.constantFrom(...PROTOTYPE_KEYS),
  fc.string({ maxLength: 10 }),
);

/** A JSON value as text. Objects are written by hand, so `__proto__` and duplicate keys really are sent. */
export const hostileJson: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    hostileString.map((s) => JSON.stringify(s)),
    fc
      .oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean())
      .map((v) => JSON.stringify(v)),
    fc.constantFrom(
      'null',
      '-0',
      '1e308',
      '-1e308',
      '1e-400',
      '123456789012345678901234567890',
      '0.1e1',
      '1E+2',
    ),
    fc.array(tie('value'), { maxLength: 4 }).map((items) => `[${items.join(',')}]`),
    fc
      .array(fc.tuple(hostileKey, tie('value')), { maxLength: 6 })
      .map((entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`),
  ),
})).value;

/** A JSON object body whose fields are the names the routes read, each with a hostile value. */
export const hostileObjectBody: fc.Arbitrary<string> = fc
  .array(fc.tuple(hostileKey, hostileJson), { minLength: 0, maxLength: 8 })
  .map((entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`);

/** Bodies that are not JSON, or JSON the parser must refuse or bound. */
export const MALFORMED_BODIES: readonly [string, string | Buffer][] = [
  ['empty', ''],
  ['not JSON', 'hello'],
  ['truncated object', '{"method":"join_token","token":'],
  ['trailing garbage', '{"a":1} x'],
  ['single quotes', "{'method':'join_token'}"],
  ['comments', '{/* c */"a":1}'],
  ['NaN literal', '{"a":NaN}'],
  ['a bare string', '"join_token"'],
  ['a bare number', '1'],
  ['null', 'null'],
  ['true', 'true'],
  ['an array', '[{"method":"join_token"}]'],
  ['BOM first', '\ufeff{"method":"join_token"}'],
  ['lone surrogate escape', '{"method":"\\ud800"}'],
  ['NUL escape', '{"method":"\\u0000"}'],
  ['raw NUL byte', '{"method":"a\u0000"}'],
  ['raw control characters', '{"method":"\u0001\u001f"}'],
  ['invalid escape', '{"method":"\\x41"}'],
  ['invalid UTF-8 bytes', Buffer.from([0xff, 0xfe, 0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d])],
  ['1000 nested arrays', `${'['.repeat(1000)}${']'.repeat(1000)}`],
  ['1000 nested objects', `${'{"a":'.repeat(1000)}1${'}'.repeat(1000)}`],
  ['1000 nested arrays as the method', `{"method":${'['.repeat(1000)}${']'.repeat(1000)}}`],
  ['20000 nested arrays as the method', `{"method":${'['.repeat(20_000)}${']'.repeat(20_000)}}`],
  [
    '20000 nested arrays as the csr',
    `{"method":"join_token","csr":${'['.repeat(20_000)}${']'.repeat(20_000)}}`,
  ],
  ['unterminated nesting', '['.repeat(30_000)],
  ['huge exponent', '{"uses":1e999999}'],
  ['10000 keys', `{${Array.from({ length: 10_000 }, (_, i) => `"k${i}":1`).join(',')}}`],
  ['5000 duplicate keys', `{${Array.from({ length: 5000 }, () => '"method":"x"').join(',')}}`],
  ['__proto__ with the fields', '{"__proto__":{"method":"join_token","role":"manager","admin":true}}'],
  ['constructor.prototype', '{"constructor":{"prototype":{"role":"manager"}}}'],
  ['toString not a function', '{"method":{"toString":1},"role":{"toString":1},"name":{"toString":1}}'],
  ['valueOf and toString not functions', '{"method":{"toString":1,"valueOf":2},"ttl":{"valueOf":1}}'],
  ['64 KiB string', `{"method":"${'x'.repeat(64 * 1024)}"}`],
];
