import { randomBytes } from 'node:crypto';
import { readListPage } from '../../services/ca/src/domain/admin-lists';
import type {
  AuditEvent,
  CertificateRecord,
  EntryRecord,
  NodeRecord,
} from '../../services/ca/src/domain/ports';
import { knexStorage } from '../../services/ca/src/storage/knex/knex-storage';
import { describeEachBackend } from '../support/database';
import { callAs, type HttpsResult } from '../support/https';
import { startTestServer, type TestServer } from '../support/test-server';

/**
 * Issue 20 items 1–4 and 7 (CONTRACT "Fleet scale"): the four admin lists page over HTTPS with
 * `limit` and `after`, answer `next`, filter, and refuse a bad limit, a bad filter and every cursor
 * they did not make for that list and those filters. The order of each list is the storage
 * contract's (test/contract/storage.contract.test.ts "paging"); here the pages of a list together
 * must be the list.
 */

const MIN = 60_000;
type Cred = { cert: string; key: string };
type ErrorBody = { error: { code: string; message: string } };
type Row = Record<string, unknown>;

/** The four lists: route, member, and how a row is named in the assertions. */
const LISTS = {
  nodes: { path: '/v1/admin/nodes', member: 'nodes', idOf: (r: Row) => r.id },
  certificates: { path: '/v1/admin/certificates', member: 'certificates', idOf: (r: Row) => r.serial },
  entries: { path: '/v1/admin/entries', member: 'entries', idOf: (r: Row) => r.name },
  audit: { path: '/v1/admin/audit', member: 'events', idOf: (r: Row) => r.id },
} as const;
type ListName = keyof typeof LISTS;
const LIST_NAMES = Object.keys(LISTS) as ListName[];

describeEachBackend('admin lists: paging, filters, cursors (issue 20)', (backend) => {
  let t: TestServer;
  let admin: Cred;
  let auditor: Cred;
  let operator: Cred;
  /** Now, whole seconds: TLS checks certificates against the real clock, so the server's starts there. */
  const t0 = Math.floor(Date.now() / 1000) * 1000;

  const get = (cred: Cred, path: string): Promise<HttpsResult> => callAs(t, cred, 'GET', path);
  const errorOf = (r: HttpsResult) => ({ status: r.status, ...r.json<ErrorBody>().error });
  /** One page, checked for the shape every list answers. */
  const page = async (list: ListName, query: Record<string, string> = {}, cred = admin) => {
    const { path, member } = LISTS[list];
    const q = new URLSearchParams(query);
    const r = await get(cred, `${path}${q.size ? `?${q}` : ''}`);
    expect({ status: r.status, body: r.status === 200 ? 'ok' : r.body.toString() }).toEqual({
      status: 200,
      body: 'ok',
    });
    const body = r.json<Record<string, unknown>>();
    expect(Object.keys(body).sort()).toEqual([member, 'next'].sort());
    return { items: body[member] as Row[], next: body.next as string | null };
  };
  /** Every page of a list, following `next`. */
  const pages = async (list: ListName, query: Record<string, string> = {}, cred = admin) => {
    const out: Row[][] = [];
    let after: string | null = null;
    for (let i = 0; i < 500; i++) {
      const p = await page(list, { ...query, ...(after === null ? {} : { after }) }, cred);
      out.push(p.items);
      if (p.next === null) return out;
      after = p.next;
    }
    throw new Error('the list does not end');
  };
  const ids = (list: ListName, rows: Row[]) => rows.map(LISTS[list].idOf);

  const node = (i: number): NodeRecord => ({
    id: `n${String(i).padStart(3, '0')}`,
    role: i % 5 === 0 ? 'manager' : 'worker',
    status: i % 7 === 0 ? 'revoked' : 'active',
    attestationMethod: 'join_token',
    certTtlMs: null,
    createdAt: new Date(t0 - i * MIN),
    lastAttestedAt: new Date(t0),
    lastSeenAt: null,
    revokedAt: i % 7 === 0 ? new Date(t0) : null,
    revocationReason: i % 7 === 0 ? 1 : null,
  });
  const NODES = Array.from({ length: 105 }, (_, i) => node(i));

  const certificate = (i: number, over: Partial<CertificateRecord> = {}): CertificateRecord => ({
    serial: `7c${randomBytes(8).toString('hex')}`,
    caId: t.ca.keyring.signing.record.id,
    kind: 'workload',
    spiffeId: `spiffe://test.example.org/w${i}`,
    nodeId: null,
    issuedVia: `n00${i % 3}`,
    notBefore: new Date(t0 - HOUR),
    notAfter: new Date(t0 + (i % 4 === 0 ? -MIN : HOUR)),
    keyFingerprint: randomBytes(32).toString('hex'),
    der: randomBytes(64),
    status: i % 6 === 0 ? 'revoked' : 'valid',
    createdAt: new Date(t0 - 3 * HOUR + i * MIN),
    revokedAt: i % 6 === 0 ? new Date(t0) : null,
    revocationReason: i % 6 === 0 ? 1 : null,
    ...over,
  });
  const HOUR = 60 * MIN;

  const entry = (i: number): EntryRecord => ({
    name: `e${String(i).padStart(2, '0')}`,
    spiffeId: `spiffe://test.example.org/e${i}`,
    parentNodeId: 'n001',
    selectors: [],
    dnsNames: [],
    allowWildcardDns: false,
    ttlMs: null,
    createdBy: 'cli:root',
    createdAt: new Date(t0),
  });

  const auditRow = (i: number): AuditEvent => ({
    at: new Date(t0 - 60 * MIN + i * MIN),
    event: i % 3 === 0 ? 'node.revoked' : 'token.created',
    actor: i % 2 ? 'spiffe://test.example.org/admin/alice' : 'spiffe://test.example.org/admin/bob',
    source: null,
    subject: `s${i % 4}`,
    outcome: 'success',
    details: { i },
  });

  beforeAll(async () => {
    t = await startTestServer({ backend, now: new Date(t0).toISOString() });
    admin = await t.issueAdmin('admin', 'root');
    auditor = await t.issueAdmin('auditor', 'aud');
    operator = await t.issueAdmin('operator', 'op');
    const s = t.ca.storage;
    await s.transaction(async (tx) => {
      for (const n of NODES) await tx.nodes.insert(n);
      for (let i = 0; i < 40; i++) await tx.certificates.insert(certificate(i));
      for (let i = 0; i < 12; i++) await tx.entries.insert(entry(i));
      for (let i = 0; i < 30; i++) await tx.audit.append(auditRow(i));
    });
  }, 120_000);
  afterAll(() => t?.close());

  it('ok/GET /v1/admin/nodes without limit: the first 100 nodes by id and a cursor; the cursor gives the rest', async () => {
    const first = await page('nodes');
    expect(ids('nodes', first.items)).toEqual(NODES.slice(0, 100).map((n) => n.id));
    expect(first.next).toEqual(expect.any(String));
    const rest = await page('nodes', { after: first.next! });
    expect(ids('nodes', rest.items)).toEqual(NODES.slice(100).map((n) => n.id));
    expect(rest.next).toBeNull();
  });

  it.each(LIST_NAMES)('ok/%s: pages of 7 are, together, the list that one page of 1000 is', async (list) => {
    const whole = await page(list, { limit: '1000' });
    expect(whole.next).toBeNull();
    expect(whole.items.length).toBeGreaterThan(7);
    const paged = await pages(list, { limit: '7' });
    expect(paged.flat()).toEqual(whole.items);
    expect(paged.map((p) => p.length)).toEqual(
      Array.from({ length: Math.ceil(whole.items.length / 7) }, (_, i) =>
        Math.min(7, whole.items.length - 7 * i),
      ),
    );
    // The auditor reads every list too.
    expect((await pages(list, { limit: '500' }, auditor)).flat()).toEqual(whole.items);
  });

  it('ok/a list that ends at a page boundary has next null on its last full page', async () => {
    const rows = await pages('entries', { limit: '4' });
    expect(rows.map((p) => p.length)).toEqual([4, 4, 4]);
  });

  it.each([
    ['status=active', { status: 'active' }, (n: NodeRecord) => n.status === 'active'],
    ['status=revoked', { status: 'revoked' }, (n: NodeRecord) => n.status === 'revoked'],
    ['role=manager', { role: 'manager' }, (n: NodeRecord) => n.role === 'manager'],
    ['role=worker', { role: 'worker' }, (n: NodeRecord) => n.role === 'worker'],
    [
      'status=revoked&role=manager (AND)',
      { status: 'revoked', role: 'manager' },
      (n: NodeRecord) => n.status === 'revoked' && n.role === 'manager',
    ],
  ] as [string, Record<string, string>, (n: NodeRecord) => boolean][])(
    'ok/nodes?%s, paged by 9',
    async (_name, query, keep) => {
      const want = NODES.filter(keep).map((n) => n.id);
      expect(want.length).toBeGreaterThan(0);
      expect(ids('nodes', (await pages('nodes', { ...query, limit: '9' })).flat())).toEqual(want);
    },
  );

  it('ok/certificates?node= and status=, alone and together, paged by 4', async () => {
    const all = (await pages('certificates', { limit: '1000' })).flat();
    const pick = (keep: (c: Row) => boolean) => all.filter(keep).map((c) => c.serial);
    const cases: [Record<string, string>, (c: Row) => boolean][] = [
      [{ node: 'n001' }, (c) => c.issued_via === 'n001' || c.node_id === 'n001'],
      [{ status: 'revoked' }, (c) => c.status === 'revoked'],
      [{ status: 'expired' }, (c) => c.status === 'expired'],
      [{ status: 'valid' }, (c) => c.status === 'valid'],
      [{ node: 'n002', status: 'valid' }, (c) => c.issued_via === 'n002' && c.status === 'valid'],
    ];
    for (const [query, keep] of cases) {
      const want = pick(keep);
      expect({ query, n: want.length > 0 }).toEqual({ query, n: true });
      expect({
        query,
        got: ids('certificates', (await pages('certificates', { ...query, limit: '4' })).flat()),
      }).toEqual({
        query,
        got: want,
      });
    }
  });

  it('ok/audit?actor=&event=&since=&until=, paged by 4, newest first', async () => {
    const seeded = (
      await pages('audit', {
        limit: '1000',
        since: new Date(t0 - 60 * MIN).toISOString(),
        until: new Date(t0 - 30 * MIN).toISOString(),
      })
    ).flat();
    expect(seeded.map((e) => (e.details as { i: number }).i)).toEqual(
      Array.from({ length: 30 }, (_, i) => 29 - i),
    );
    const got = (q: Record<string, string>) =>
      pages('audit', { ...q, limit: '4' }).then((p) => p.flat().map((e) => (e.details as { i: number }).i));
    expect(await got({ actor: 'spiffe://test.example.org/admin/alice', event: 'node.revoked' })).toEqual([
      27, 21, 15, 9, 3,
    ]);
    expect(
      await got({
        since: new Date(t0 - 50 * MIN).toISOString(),
        until: new Date(t0 - 40 * MIN).toISOString(),
      }),
    ).toEqual([19, 18, 17, 16, 15, 14, 13, 12, 11, 10]);
  });

  it('ok/rows inserted while a client pages: none of the rows that were there is skipped or repeated', async () => {
    const first = await page('certificates', { limit: '10' });
    const before = (await pages('certificates', { limit: '1000' })).flat().map((c) => c.serial);
    const s = t.ca.storage;
    // Newer than every row, older than every row, and at the time of the cursor's row.
    const newer = certificate(100, { createdAt: new Date(t0 + HOUR) });
    const older = certificate(101, { createdAt: new Date(t0 - 10 * HOUR) });
    await s.certificates.insert(newer);
    await s.certificates.insert(older);
    const rest = (await pages('certificates', { limit: '10', after: first.next! }))
      .flat()
      .map((c) => c.serial);
    expect([...first.items.map((c) => c.serial), ...rest.filter((x) => x !== older.serial)]).toEqual(before);
    expect(rest).toContain(older.serial);
    expect(rest).not.toContain(newer.serial);
  });

  it.each([['0'], ['-1'], ['1001'], ['1000000'], ['1.5'], ['1e2'], ['0x10'], ['+5'], [' 5'], ['abc'], ['']])(
    'fail/limit=%p is a 400 on every list',
    async (limit) => {
      for (const list of LIST_NAMES) {
        const r = await get(admin, `${LISTS[list].path}?limit=${encodeURIComponent(limit)}`);
        expect({ list, ...errorOf(r) }).toEqual({
          list,
          status: 400,
          code: 'ERR_BAD_REQUEST',
          message: 'limit: an integer from 1 to 1000',
        });
      }
    },
  );

  it('ok/limit=1 and limit=1000 are within bounds', async () => {
    expect((await page('nodes', { limit: '1' })).items).toHaveLength(1);
    expect((await page('nodes', { limit: '1000' })).items).toHaveLength(105);
  });

  it.each([
    ['/v1/admin/nodes?status=gone', 'status: one of active, revoked'],
    ['/v1/admin/nodes?role=admin', 'role: one of worker, manager'],
    ['/v1/admin/nodes?status=Active', 'status: one of active, revoked'],
    ['/v1/admin/nodes?status=active&status=revoked', 'status: give it once'],
    ['/v1/admin/nodes?limit=5&limit=6', 'limit: give it once'],
    ['/v1/admin/certificates?status=bogus', 'status: one of valid, revoked, expired, superseded'],
    ['/v1/admin/certificates?node=<2049 characters>', 'node: at most 2048 characters'],
    ['/v1/admin/audit?since=yesterday', 'since: an ISO 8601 time'],
    ['/v1/admin/audit?sealed_after=1&after=x', 'after: not with sealed_after (the chain pages by seal_seq)'],
    ['/v1/admin/audit?sealed_after=0&limit=1001', 'limit: an integer from 1 to 1000'],
    ['/v1/admin/audit?sealed_after=-1', `sealed_after: an integer from 0 to ${Number.MAX_SAFE_INTEGER}`],
  ])('fail/%s is a 400 ERR_BAD_REQUEST', async (path, message) => {
    const long = path.replace('<2049 characters>', 'x'.repeat(2049));
    expect(errorOf(await get(admin, long))).toEqual({ status: 400, code: 'ERR_BAD_REQUEST', message });
  });

  describe('cursors', () => {
    /** A real cursor of `list` with `query`, from its first page of 2. */
    const cursorOf = async (list: ListName, query: Record<string, string> = {}) => {
      const next = (await page(list, { ...query, limit: '2' })).next;
      expect(next).toEqual(expect.any(String));
      return next!;
    };
    const refused = async (list: ListName, after: string, query: Record<string, string> = {}) => {
      const q = new URLSearchParams({ ...query, after });
      const r = await get(admin, `${LISTS[list].path}?${q}`);
      const e = errorOf(r);
      expect(e.message).toBe('after: not a cursor of this list with these filters');
      // The refusal does not echo the cursor.
      if (after.length >= 8) expect(r.body.toString()).not.toContain(after.slice(0, 20));
      return [e.status, e.code];
    };
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

    it.each(LIST_NAMES)('fail/%s: a forged MAC', async (list) => {
      const [payload] = (await cursorOf(list)).split('.');
      expect(await refused(list, `${payload}.${randomBytes(32).toString('base64url')}`)).toEqual([
        400,
        'ERR_CURSOR_INVALID',
      ]);
    });

    it.each(LIST_NAMES)('fail/%s: an edited position of the right shape, MAC kept', async (list) => {
      const cursor = await cursorOf(list);
      const [payload, mac] = cursor.split('.') as [string, string];
      const position = JSON.parse(Buffer.from(payload, 'base64url').toString()) as (string | number)[];
      // The last part moved by one: a position the list could have given, only not this one.
      const last = position.length - 1;
      const edited = position.map((p, i) =>
        i < last ? p : typeof p === 'number' ? p + 1 : `${p.slice(0, -1)}${p.endsWith('0') ? '1' : '0'}`,
      );
      expect(b64(edited)).not.toBe(payload);
      expect(await refused(list, `${b64(edited)}.${mac}`)).toEqual([400, 'ERR_CURSOR_INVALID']);
    });

    it.each(
      LIST_NAMES.flatMap((list) =>
        LIST_NAMES.filter((other) => other !== list).map((other) => [list, other] as const),
      ),
    )('fail/%s given a cursor of %s', async (list, other) => {
      expect(await refused(list, await cursorOf(other))).toEqual([400, 'ERR_CURSOR_INVALID']);
    });

    it.each([
      ['nodes', { status: 'active' }, { status: 'revoked' }],
      ['nodes', { status: 'active' }, {}],
      ['nodes', {}, { role: 'worker' }],
      ['nodes', { status: 'active', role: 'worker' }, { status: 'active' }],
      ['certificates', { status: 'valid' }, { status: 'expired' }],
      ['certificates', { node: 'n001' }, { node: 'n002' }],
      ['certificates', {}, { node: 'n001' }],
      ['audit', { event: 'token.created' }, { event: 'node.revoked' }],
      ['audit', { actor: 'spiffe://test.example.org/admin/bob' }, {}],
    ] as [ListName, Record<string, string>, Record<string, string>][])(
      'fail/%s: a cursor of %j given with %j',
      async (list, madeWith, usedWith) => {
        const cursor = await cursorOf(list, madeWith);
        expect(await refused(list, cursor, usedWith)).toEqual([400, 'ERR_CURSOR_INVALID']);
        // With the filters it was made for, the same cursor works.
        expect((await page(list, { ...madeWith, after: cursor })).items.length).toBeGreaterThan(0);
      },
    );

    it.each([
      ['garbage', 'not-a-cursor'],
      ['garbage base64', `${Buffer.from([0, 255, 1]).toString('base64url')}.${'A'.repeat(43)}`],
      ['standard base64 with padding', 'WyJuMDAxIl0=.AAAA'],
      ['empty', ''],
      ['a JSON position without a MAC', b64(['n001'])],
    ])('fail/nodes: %s', async (_name, after) => {
      expect(await refused('nodes', after)).toEqual([400, 'ERR_CURSOR_INVALID']);
    });

    it('fail/nodes: a truncated cursor, and one with a character more', async () => {
      const cursor = await cursorOf('nodes');
      expect(await refused('nodes', cursor.slice(0, -1))).toEqual([400, 'ERR_CURSOR_INVALID']);
      expect(await refused('nodes', cursor.slice(0, 10))).toEqual([400, 'ERR_CURSOR_INVALID']);
      expect(await refused('nodes', `${cursor}A`)).toEqual([400, 'ERR_CURSOR_INVALID']);
    });

    it('ok/the key is the database’s: another replica (another storage over the same database) opens the cursor', async () => {
      const cursor = await cursorOf('nodes', { role: 'manager' });
      const other = knexStorage(t.db.knex);
      const next = await readListPage(
        { clock: t.clock, keys: other.listCursorKey },
        'nodes',
        { limit: 2, after: cursor, filters: { role: 'manager', status: undefined } },
        (p) => other.nodes.page({ role: 'manager' }, p),
      );
      expect(next.items.map((n) => n.id)).toEqual(['n010', 'n015']);
    });

    it('ok/a new key (its row deleted) refuses older cursors and makes new ones that work', async () => {
      const old = await cursorOf('entries');
      await t.db.knex('list_cursor_key').delete();
      expect(await refused('entries', old)).toEqual([400, 'ERR_CURSOR_INVALID']);
      const fresh = await cursorOf('entries');
      expect((await page('entries', { after: fresh, limit: '2' })).items.map((e) => e.name)).toEqual([
        'e02',
        'e03',
      ]);
      const [row] = (await t.db.knex('list_cursor_key').count({ n: '*' })) as { n: string | number }[];
      expect(Number(row!.n)).toBe(1);
    });
  });

  it('ok/roles: the auditor reads all four lists; the operator every one but the audit log', async () => {
    for (const list of LIST_NAMES) expect((await page(list, { limit: '1' }, auditor)).items).toHaveLength(1);
    for (const list of ['nodes', 'certificates', 'entries'] as ListName[])
      expect((await page(list, { limit: '1' }, operator)).items).toHaveLength(1);
    expect(errorOf(await get(operator, '/v1/admin/audit?limit=1')).status).toBe(403);
  });

  it('ok/the chain mode (sealed_after) keeps its shape, pages by seal_seq, and reads 100 by default', async () => {
    await t.ca.storage.transaction(async (tx) => {
      for (let i = 30; i < 110; i++) await tx.audit.append(auditRow(i));
    });
    await t.running.jobs.runOnce();
    const r = await get(auditor, '/v1/admin/audit?sealed_after=0');
    expect(r.status).toBe(200);
    const body = r.json<{ events: Row[]; unsealed: number }>();
    expect(Object.keys(body).sort()).toEqual(['events', 'unsealed']);
    expect(body.events.map((e) => e.seal_seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    const next = (await get(auditor, '/v1/admin/audit?sealed_after=100&limit=1000')).json<{
      events: Row[];
    }>();
    expect(next.events[0]!.seal_seq).toBe(101);
  });
});
