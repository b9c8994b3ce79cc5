import fc from 'fast-check';
import { type Answer, assertRefused, useFuzzServer } from './support/fuzz-harness';

/**
 * Issue 8 item 3, names: SPIFFE IDs (SPIFFE ID spec §2) and DNS names (RFC 1123, RFC 5890 A-labels,
 * RFC 6125 §6.4.3 wildcards) through POST /v1/admin/entries. Table rows for the known edge cases,
 * then generated names checked against an oracle written here from the specifications (not from
 * the server's code): the server accepts exactly what the oracle accepts.
 */
const TD = 'test.example.org';
const ID = `spiffe://${TD}`;

/** SPIFFE ID spec §2.1–2.2, plus Baton's reserved paths (an entry may not mint a node or admin ID). */
function isValidWorkloadId(id: string): boolean {
  if (Buffer.byteLength(id, 'utf8') > 2048) return false;
  if (!id.startsWith(`${ID}/`)) return false;
  const segments = id.slice(ID.length + 1).split('/');
  if (segments.some((s) => !/^[A-Za-z0-9._-]+$/.test(s) || s === '.' || s === '..')) return false;
  return !['node', 'admin', 'baton'].includes(segments[0]!);
}

/** RFC 1123 LDH labels, lowercase, ≥ 2 labels, ≤ 253; no IP; no all-numeric TLD; "*" only leftmost. */
function isValidDnsName(name: string, allowWildcard: boolean): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  if (labels.length < 2) return false;
  for (const [i, l] of labels.entries()) {
    if (l === '*') {
      if (i !== 0 || !allowWildcard || labels.length < 3) return false;
      continue;
    }
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(l)) return false;
    // RFC 5891 §4.2.3.1: "--" in positions 3–4 only as an A-label prefix (generated names never use xn--).
    if (l.slice(2, 4) === '--') return false;
  }
  return !/^[0-9]+$/.test(labels[labels.length - 1]!);
}

describe('fuzz: SPIFFE ID and DNS name edge cases through the entries API', () => {
  let n = 0;
  const acceptedIds = new Set<string>();

  const f = useFuzzServer('SPIFFE ID and DNS names', { node: true, admin: 'names' });

  const createEntry = (fields: Record<string, unknown>): Promise<Answer> =>
    f.c.send({
      method: 'POST',
      path: '/v1/admin/entries',
      body: JSON.stringify({
        name: `e${n++}`,
        spiffe_id: `${ID}/names/${n}`,
        parent: f.node.body.node_id!,
        ...fields,
      }),
      as: f.admin,
    });

  /** Valid: 201 (or 409 for a SPIFFE ID this parent already has). Invalid: 400 ERR_BAD_REQUEST. */
  const expectDecision = (a: Answer, valid: boolean, what: string, spiffeId?: string) => {
    if (valid) {
      const dup = spiffeId !== undefined && acceptedIds.has(spiffeId);
      assertRefused(a, what, [201, 409]);
      if (a.status !== (dup ? 409 : 201))
        throw new Error(`${what}: expected ${dup ? 409 : 201}, got ${a.status} ${a.body}`);
      if (spiffeId) acceptedIds.add(spiffeId);
    } else {
      assertRefused(a, what);
      const code = a.json<{ error: { code: string } }>().error.code;
      if (a.status !== 400 || code !== 'ERR_BAD_REQUEST')
        throw new Error(`${what}: expected 400, got ${a.status} ${code}`);
    }
  };

  const long = (bytes: number) => `${ID}/${'a'.repeat(bytes - ID.length - 1)}`;

  it.each<[string, string]>([
    ['ok/one segment', `${ID}/w`],
    ['ok/several segments', `${ID}/ns/prod/sa/web`],
    ['ok/every allowed character', `${ID}/AZaz09._-`],
    ['ok/three dots is a name, not a traversal', `${ID}/...`],
    ['ok/a path that merely starts like a reserved one', `${ID}/nodes/x`],
    ['ok/exactly 2048 bytes', long(2048)],
    ['fail/2049 bytes', long(2049)],
    ['fail/no path', ID],
    ['fail/root path', `${ID}/`],
    ['fail/trailing slash', `${ID}/a/`],
    ['fail/empty segment', `${ID}//a`],
    ['fail/dot segment', `${ID}/./a`],
    ['fail/dot-dot segment', `${ID}/a/..`],
    ['fail/percent-encoding', `${ID}/a%2Fb`],
    ['fail/query', `${ID}/a?x=1`],
    ['fail/fragment', `${ID}/a#x`],
    ['fail/userinfo', `spiffe://user@${TD}/a`],
    ['fail/port', `spiffe://${TD}:443/a`],
    ['fail/uppercase scheme', `SPIFFE://${TD}/a`],
    ['fail/uppercase trust domain', `spiffe://TEST.example.org/a`],
    ['fail/trailing dot trust domain', `spiffe://${TD}./a`],
    ['fail/another trust domain', 'spiffe://other.example.org/a'],
    ['fail/reserved node path', `${ID}/node/abc`],
    ['fail/reserved node path itself', `${ID}/node`],
    ['fail/reserved admin path', `${ID}/admin/root`],
    ['fail/reserved baton path', `${ID}/baton/server`],
    ['fail/space', `${ID}/a b`],
    ['fail/non-ASCII', `${ID}/bücher`],
    ['fail/NUL', `${ID}/a\u0000`],
    ['fail/right-to-left override', `${ID}/\u202eevil`],
    ['fail/newline', `${ID}/a\n`],
    ['fail/leading space', ` ${ID}/a`],
    ['fail/another scheme', `https://${TD}/a`],
    ['fail/one slash', `spiffe:/${TD}/a`],
    ['fail/backslash', `spiffe:\\\\${TD}\\a`],
  ])('SPIFFE ID %s', async (row, id) => {
    expectDecision(
      await createEntry({ spiffe_id: id }),
      row.startsWith('ok/'),
      `${row} ${id.slice(0, 80)}`,
      id,
    );
  });

  const label63 = 'a'.repeat(63);
  const name253 = `${'a'.repeat(61)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`;
  it.each<[string, string, boolean]>([
    ['ok/two labels', 'example.org', false],
    ['ok/hyphen inside', 'a-b.example.org', false],
    ['ok/63-character label', `${label63}.example.org`, false],
    ['ok/253 characters', name253, false],
    ['ok/valid A-label', 'xn--bcher-kva.example', false],
    ['ok/wildcard when allowed', '*.svc.example.org', true],
    ['ok/numeric labels but a letter TLD', '1.2.example.org', false],
    ['fail/wildcard when not allowed', '*.svc.example.org', false],
    ['fail/wildcard over a TLD', '*.org', true],
    ['fail/wildcard not leftmost', 'a.*.example.org', true],
    ['fail/partial-label wildcard', 'a*.example.org', true],
    ['fail/one label', 'localhost', false],
    ['fail/trailing dot', 'example.org.', false],
    ['fail/uppercase', 'Example.org', false],
    ['fail/Unicode instead of an A-label', 'bücher.example', false],
    ['fail/invalid A-label', 'xn--a.example', false],
    ['fail/reserved label form', 'ab--cd.example.org', false],
    ['fail/IPv4 literal', '127.0.0.1', false],
    ['fail/IPv6 literal', '::1', false],
    ['fail/bracketed IPv6', '[::1]', false],
    ['fail/empty label', 'a..example.org', false],
    ['fail/leading dot', '.example.org', false],
    ['fail/leading hyphen', '-a.example.org', false],
    ['fail/trailing hyphen', 'a-.example.org', false],
    ['fail/64-character label', `${label63}a.example.org`, false],
    ['fail/254 characters', `${'a'.repeat(62)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`, false],
    ['fail/underscore', 'a_b.example.org', false],
    ['fail/all-numeric TLD', 'a.123', false],
    ['fail/space', 'a b.example.org', false],
    ['fail/NUL', 'a.example.org\u0000', false],
    ['fail/empty', '', false],
  ])('DNS name %s', async (row, dns, allowWildcard) => {
    const a = await createEntry({ dns_names: [dns], allow_wildcard_dns: allowWildcard });
    expectDecision(a, row.startsWith('ok/'), `${row} ${dns.slice(0, 80)}`);
    if (a.status === 201) expect(a.json<{ dns_names: string[] }>().dns_names).toEqual([dns]);
  });

  it.each<[string, unknown]>([
    ['ok/uid 0', 'unix:uid:0'],
    ['ok/largest uid', 'unix:uid:2147483647'],
    ['ok/gid', 'unix:gid:100'],
    ['fail/uid past 2^31 - 1', 'unix:uid:2147483648'],
    ['fail/leading zero', 'unix:uid:01'],
    ['fail/negative', 'unix:uid:-1'],
    ['fail/uppercase key', 'unix:UID:1'],
    ['fail/unknown type', 'k8s:ns:default'],
    ['fail/trailing text', 'unix:uid:1 '],
    ['fail/number instead of text', 1000],
  ])('selector %s', async (row, selector) => {
    expectDecision(
      await createEntry({ selectors: [selector] }),
      row.startsWith('ok/'),
      `${row} ${String(selector)}`,
    );
  });

  const segment = fc.stringMatching(/^[A-Za-z0-9._\-%?#@:/ \u00e9]{0,12}$/);
  const validSegment = fc.oneof(
    fc.stringMatching(/^[A-Za-z0-9._-]{1,10}$/),
    fc.constantFrom('node', 'admin', 'baton', '.', '..'),
  );
  const spiffeIds = fc.oneof(
    fc.array(validSegment, { minLength: 1, maxLength: 4 }).map((s) => `${ID}/${s.join('/')}`),
    fc.array(segment, { minLength: 0, maxLength: 4 }).map((s) => `${ID}/${s.join('/')}`),
    fc
      .tuple(
        fc.constantFrom('spiffe://', 'SPIFFE://', 'spiffe:/', 'https://', ''),
        fc.constantFrom(TD, `${TD}.`, 'TEST.example.org', `u@${TD}`, `${TD}:1`, 'other.org'),
        segment,
      )
      .map(([s, td, p]) => `${s}${td}/${p}`),
    fc.string({ unit: 'binary', maxLength: 60 }),
  );

  it('accepts exactly the SPIFFE IDs the specification allows (generated)', async () => {
    await fc.assert(
      fc.asyncProperty(spiffeIds, async (id) => {
        expectDecision(
          await createEntry({ spiffe_id: id }),
          isValidWorkloadId(id),
          `generated ${JSON.stringify(id)}`,
          id,
        );
      }),
      { numRuns: 300 },
    );
  });

  const dnsLabel = fc.oneof(
    fc.stringMatching(/^[a-z0-9-]{1,8}$/),
    fc.stringMatching(/^[a-zA-Z0-9_*-]{0,6}$/),
    fc.constantFrom('*', 'a'.repeat(63), 'a'.repeat(64), '123', 'xx--y'),
  );
  const dnsNames = fc.oneof(
    fc
      .array(fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,6}[a-z0-9]$/), { minLength: 1, maxLength: 4 })
      .map((l) => l.join('.')),
    fc.array(dnsLabel, { minLength: 1, maxLength: 5 }).map((l) => l.join('.')),
    fc.array(dnsLabel, { minLength: 1, maxLength: 5 }).map((l) => `${l.join('.')}.`),
    fc.string({ unit: 'binary-ascii', maxLength: 30 }),
  );

  it('accepts exactly the DNS names the RFCs allow (generated)', async () => {
    await fc.assert(
      fc.asyncProperty(dnsNames, fc.boolean(), async (dns, allowWildcard) => {
        // The oracle does not decode A-labels; generated names never start a label with xn--.
        fc.pre(!/(^|\.)xn--/.test(dns));
        const a = await createEntry({ dns_names: [dns], allow_wildcard_dns: allowWildcard });
        expectDecision(
          a,
          isValidDnsName(dns, allowWildcard),
          `generated ${JSON.stringify(dns)} wildcard=${allowWildcard}`,
        );
      }),
      { numRuns: 300 },
    );
  });
});
