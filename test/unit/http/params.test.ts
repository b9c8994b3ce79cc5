import { BatonError } from '../../../services/ca/src/ground/errors';
import { readIssueAdminParams } from '../../../services/ca/src/http/params/admins';
import { readCreateEntryParams } from '../../../services/ca/src/http/params/entries';
import { readCreateTokenParams } from '../../../services/ca/src/http/params/tokens';
import { atField, textOrEmpty } from '../../../services/ca/src/http/validate';
import { errorOf } from '../../support/errors';
import { keyAndCsr } from '../../support/node-client';

/**
 * The edge parse of each admin route body (issue 15): the JSON type here, the value by the domain,
 * field by field in the route's order; each refusal is byte for byte what docs/api.md and the
 * clients have always seen.
 */
const TD = 'test.example.org';
const refusal = (f: () => unknown) => {
  const e = errorOf(f);
  return `${e.code} ${e.message}`;
};

describe('atField and textOrEmpty', () => {
  it('atField names the field in a BatonError, code unchanged, and lets anything else through', () => {
    expect(atField('role', () => 7)).toBe(7);
    expect(
      refusal(() =>
        atField('role', () => {
          throw new BatonError('ERR_TOKEN_INVALID', 'one of a, b');
        }),
      ),
    ).toBe('ERR_TOKEN_INVALID role: one of a, b');
    const plain = new TypeError('boom');
    expect(() =>
      atField('role', () => {
        throw plain;
      }),
    ).toThrow(plain);
  });

  it('textOrEmpty reads any JSON value that is not a string as the empty string', () => {
    expect(textOrEmpty('a')).toBe('a');
    for (const v of [undefined, null, 0, 5, true, [], ['a'], {}, { toString: () => 'a' }])
      expect(textOrEmpty(v)).toBe('');
  });
});

describe('POST /v1/admin/entries: readCreateEntryParams', () => {
  const good = { name: 'web', spiffe_id: `spiffe://${TD}/web`, parent: 'n1' };
  const read = (b: unknown) => readCreateEntryParams(b, TD);

  it('reads a full body into checked values', () => {
    expect(
      read({
        ...good,
        selectors: ['unix:uid:1000', 'unix:gid:0'],
        dns_names: ['*.web.example.org', 'web.example.org', 'web.example.org'],
        allow_wildcard_dns: true,
        ttl: '30m',
        hint: 'internal',
      }),
    ).toEqual({
      name: 'web',
      spiffeId: `spiffe://${TD}/web`,
      parentNodeId: 'n1',
      selectors: [
        { type: 'unix', key: 'uid', value: 1000 },
        { type: 'unix', key: 'gid', value: 0 },
      ],
      // duplicates are the domain's to drop (createEntry)
      dnsNames: ['*.web.example.org', 'web.example.org', 'web.example.org'],
      allowWildcardDns: true,
      ttlMs: 30 * 60_000,
      hint: 'internal',
    });
  });

  it('defaults: no selectors, no DNS names, no wildcard, the installation TTL (null)', () => {
    for (const absent of [{}, { selectors: null, dns_names: null, ttl: null }]) {
      expect(read({ ...good, ...absent })).toMatchObject({
        selectors: [],
        dnsNames: [],
        allowWildcardDns: false,
        ttlMs: null,
      });
    }
  });

  const NAME = 'ERR_BAD_REQUEST invalid entry name: lowercase letters, digits, ".", "-", "_" (at most 63)';
  const PARENT = 'ERR_BAD_REQUEST parent: the id of the node that may mint this identity is required';
  const SPIFFE_REQUIRED = 'ERR_BAD_REQUEST invalid SPIFFE ID: required';
  const SELECTOR = 'ERR_BAD_REQUEST invalid selector: use unix:uid:N, unix:gid:N or unix:path:/absolute/path';
  it.each([
    ['not an object', [], 'ERR_BAD_REQUEST a JSON object body is required'],
    ['no body', undefined, 'ERR_BAD_REQUEST a JSON object body is required'],
    [
      'allow_wildcard_dns a string',
      { ...good, allow_wildcard_dns: 'yes' },
      'ERR_BAD_REQUEST allow_wildcard_dns: a boolean',
    ],
    [
      'allow_wildcard_dns null',
      { ...good, allow_wildcard_dns: null },
      'ERR_BAD_REQUEST allow_wildcard_dns: a boolean',
    ],
    ['ttl not a duration', { ...good, ttl: 'x' }, 'ERR_BAD_REQUEST ttl: a duration such as 15m, 24h or 7d'],
    ['ttl over 7d', { ...good, ttl: '8d' }, 'ERR_BAD_REQUEST ttl: must be between 60s and 604800s'],
    [
      'ttl fractional',
      { ...good, ttl: 60.5 },
      'ERR_BAD_REQUEST ttl: a duration such as 15m, 24h or 7d, or a whole number of seconds',
    ],
    ['name missing', { ...good, name: undefined }, NAME],
    ['name a number', { ...good, name: 5 }, NAME],
    ['name uppercase', { ...good, name: 'Web' }, NAME],
    ['parent missing', { ...good, parent: undefined }, PARENT],
    ['parent empty', { ...good, parent: '' }, PARENT],
    ['parent a list', { ...good, parent: ['n1'] }, PARENT],
    ['spiffe_id missing', { ...good, spiffe_id: undefined }, SPIFFE_REQUIRED],
    ['spiffe_id a number', { ...good, spiffe_id: 42 }, SPIFFE_REQUIRED],
    ['spiffe_id an object', { ...good, spiffe_id: { id: 'x' } }, SPIFFE_REQUIRED],
    [
      'spiffe_id reserved',
      { ...good, spiffe_id: `spiffe://${TD}/node/n1` },
      'ERR_BAD_REQUEST invalid SPIFFE ID: paths under /node/, /admin/, /baton/ are reserved',
    ],
    [
      'spiffe_id of another trust domain',
      { ...good, spiffe_id: 'spiffe://other.org/web' },
      `ERR_BAD_REQUEST invalid SPIFFE ID: trust domain must be ${TD}`,
    ],
    [
      'selectors a string',
      { ...good, selectors: 'unix:uid:1' },
      'ERR_BAD_REQUEST selectors: a list of at most 16',
    ],
    [
      'selectors 17',
      { ...good, selectors: Array.from({ length: 17 }, (_, i) => `unix:uid:${i}`) },
      'ERR_BAD_REQUEST selectors: a list of at most 16',
    ],
    ['a selector not a string', { ...good, selectors: [1000] }, SELECTOR],
    ['a selector off the grammar', { ...good, selectors: ['unix:uid:01'] }, SELECTOR],
    ['dns_names an object', { ...good, dns_names: {} }, 'ERR_BAD_REQUEST dns_names: a list of at most 32'],
    [
      'dns_names 33',
      { ...good, dns_names: Array.from({ length: 33 }, (_, i) => `h${i}.example.org`) },
      'ERR_BAD_REQUEST dns_names: a list of at most 32',
    ],
    ['a DNS name not a string', { ...good, dns_names: [null] }, 'ERR_BAD_REQUEST invalid DNS name: required'],
    ['hint not a string', { ...good, hint: 5 }, 'ERR_BAD_REQUEST hint: a string'],
    [
      'hint too long',
      { ...good, hint: 'h'.repeat(129) },
      'ERR_BAD_REQUEST hint: at most 128 characters, no control characters',
    ],
    [
      'hint with a newline',
      { ...good, hint: 'a\nb' },
      'ERR_BAD_REQUEST hint: at most 128 characters, no control characters',
    ],
    [
      'a wildcard without allow_wildcard_dns',
      { ...good, dns_names: ['*.web.example.org'] },
      'ERR_BAD_REQUEST invalid DNS name: wildcards need an entry that allows them',
    ],
    // The order: the first refusal wins.
    [
      'ttl before name',
      { ...good, ttl: 'x', name: 5 },
      'ERR_BAD_REQUEST ttl: a duration such as 15m, 24h or 7d',
    ],
    ['name before parent', { ...good, name: 'Web', parent: 5 }, NAME],
    ['parent before spiffe_id', { ...good, parent: 5, spiffe_id: 5 }, PARENT],
    [
      'spiffe_id before selectors',
      { ...good, spiffe_id: 'web', selectors: 'x' },
      'ERR_BAD_REQUEST invalid SPIFFE ID: must start with spiffe:// (lowercase scheme)',
    ],
    ['each selector before dns_names', { ...good, selectors: ['x'], dns_names: 5 }, SELECTOR],
  ])('refuses %s', (_name, b, expected) => {
    expect(refusal(() => read(b))).toBe(expected);
  });
});

describe('POST /v1/admin/admins: readIssueAdminParams', () => {
  let csrPem: string;
  beforeAll(async () => {
    csrPem = (await keyAndCsr()).csrPem;
  });
  const body = (over: Record<string, unknown> = {}) => ({
    name: 'alice',
    role: 'operator',
    csr: csrPem,
    ...over,
  });

  it('reads a parsed CSR, the name, the role and the TTL', () => {
    const p = readIssueAdminParams(body({ ttl: '1h' }));
    expect(p).toMatchObject({ name: 'alice', role: 'operator', ttlMs: 3_600_000 });
    expect(p.csr.key).toBeDefined();
    expect(readIssueAdminParams(body()).ttlMs).toBeUndefined();
  });

  const NAME = 'ERR_BAD_REQUEST invalid admin name: lowercase letters, digits, ".", "-", "_" (at most 63)';
  const ROLE = 'ERR_BAD_REQUEST role: one of admin, operator, auditor';
  it.each([
    ['csr missing', { csr: undefined }, 'ERR_BAD_REQUEST csr: required'],
    ['csr a number', { csr: 5 }, 'ERR_BAD_REQUEST csr: a string of at most 16384 characters'],
    ['csr not PEM', { csr: 'x' }, 'ERR_CSR_INVALID expected a pem certificate request'],
    ['ttl under 1m', { ttl: '30s' }, 'ERR_BAD_REQUEST ttl: must be between 60s and 604800s'],
    ['name missing', { name: undefined }, NAME],
    ['name a number', { name: 5 }, NAME],
    ['name uppercase', { name: 'Alice' }, NAME],
    ['role missing', { role: undefined }, ROLE],
    ['role a number', { role: 1 }, ROLE],
    ['role unknown', { role: 'root' }, ROLE],
    ['role in another case', { role: 'Admin' }, ROLE],
    // The order: csr, ttl, name, role.
    ['csr before name', { csr: undefined, name: 5 }, 'ERR_BAD_REQUEST csr: required'],
    ['ttl before name', { ttl: 'x', name: 5 }, 'ERR_BAD_REQUEST ttl: a duration such as 15m, 24h or 7d'],
    ['name before role', { name: 'A', role: 'root' }, NAME],
  ])('refuses %s', (_name, over, expected) => {
    expect(refusal(() => readIssueAdminParams(body(over)))).toBe(expected);
  });
});

describe('POST /v1/admin/tokens: readCreateTokenParams', () => {
  it('reads the fields, with their defaults', () => {
    expect(readCreateTokenParams({ role: 'worker' })).toEqual({
      role: 'worker',
      ttlMs: 15 * 60_000,
      uses: 1,
      nodeName: null,
      nodeTtlMs: null,
    });
    expect(
      readCreateTokenParams({ role: 'manager', ttl: '1h', uses: 1, node_name: 'web-1', node_ttl: '12h' }),
    ).toEqual({ role: 'manager', ttlMs: 3_600_000, uses: 1, nodeName: 'web-1', nodeTtlMs: 12 * 3_600_000 });
  });

  it.each([
    ['role missing', {}, 'ERR_BAD_REQUEST role: one of worker, manager'],
    ['role inherited', { role: 'constructor' }, 'ERR_BAD_REQUEST role: one of worker, manager'],
    ['ttl over 30d', { role: 'worker', ttl: '31d' }, 'ERR_BAD_REQUEST ttl: must be between 60s and 2592000s'],
    ['uses 0', { role: 'worker', uses: 0 }, 'ERR_BAD_REQUEST uses: an integer from 1 to 10000'],
    ['uses a string', { role: 'worker', uses: '2' }, 'ERR_BAD_REQUEST uses: an integer from 1 to 10000'],
    [
      'node_name a number',
      { role: 'worker', node_name: 5 },
      'ERR_BAD_REQUEST node_name: a string of at most 63 characters',
    ],
    [
      'node_ttl fractional',
      { role: 'worker', node_ttl: 60.0005 },
      'ERR_BAD_REQUEST node_ttl: a duration such as 15m, 24h or 7d, or a whole number of seconds',
    ],
    // The order: role, ttl, uses, node_name, node_ttl.
    ['role before ttl', { role: 'x', ttl: 'x' }, 'ERR_BAD_REQUEST role: one of worker, manager'],
    [
      'uses before node_name',
      { role: 'worker', uses: 0, node_name: 5 },
      'ERR_BAD_REQUEST uses: an integer from 1 to 10000',
    ],
    [
      'node_name before node_ttl',
      { role: 'worker', node_name: 5, node_ttl: 'x' },
      'ERR_BAD_REQUEST node_name: a string of at most 63 characters',
    ],
  ])('refuses %s', (_name, b, expected) => {
    expect(refusal(() => readCreateTokenParams(b))).toBe(expected);
  });

  it('leaves the node name and the one use of a bound token to the domain', () => {
    expect(readCreateTokenParams({ role: 'worker', node_name: 'Bad Name', uses: 2 })).toMatchObject({
      nodeName: 'Bad Name',
      uses: 2,
    });
  });
});
