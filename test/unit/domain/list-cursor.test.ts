import { createHmac, randomBytes } from 'node:crypto';
import { readListPage } from '../../../services/ca/src/domain/admin-lists';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import {
  type AdminList,
  type ListFilters,
  openCursor,
  sealCursor,
} from '../../../services/ca/src/domain/list-cursor';
import type { NodeRecord, PageKey } from '../../../services/ca/src/domain/ports';
import { errorOf } from '../../support/errors';
import { createMemoryStorage } from '../../support/memory-storage';

/**
 * Issue 20 item 3: a cursor opens only with the key that sealed it, for the list and the filters it
 * was sealed for, with a page key of that list's shape; every other cursor is ERR_CURSOR_INVALID,
 * whatever is wrong with it.
 */

const KEY = randomBytes(32);
const TIME = '2026-12-08T12:00:00.123456Z';
const POSITIONS: [AdminList, PageKey][] = [
  ['nodes', ['n-1']],
  ['entries', ['web']],
  ['certificates', [TIME, '7a01ff']],
  ['audit', [TIME, 42]],
];

/** What opening a cursor throws, or 'opened'. */
function refusal(list: AdminList, filters: ListFilters, cursor: string, key = KEY): string {
  try {
    openCursor(key, list, filters, cursor);
    return 'opened';
  } catch (e) {
    const err = e as { code?: string; message?: string };
    expect(err.message).toBe('after: not a cursor of this list with these filters');
    return err.code ?? String(e);
  }
}

const b64 = (text: string) => Buffer.from(text).toString('base64url');

describe('list cursors', () => {
  it.each(POSITIONS)('ok/%s: a sealed position opens to itself', (list, position) => {
    const cursor = sealCursor(KEY, list, { status: 'active' }, position);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
    expect(openCursor(KEY, list, { status: 'active' }, cursor)).toEqual(position);
  });

  it('ok/filters are one set: their order does not matter, and an absent one is undefined', () => {
    const cursor = sealCursor(KEY, 'certificates', { node: 'n-1', status: 'valid' }, [TIME, '7a']);
    const same = { status: 'valid', node: 'n-1', other: undefined };
    expect(openCursor(KEY, 'certificates', same, cursor)).toEqual([TIME, '7a']);
  });

  const nodes = sealCursor(KEY, 'nodes', { status: 'active' }, ['n-1']);
  const [payload, mac] = nodes.split('.') as [string, string];

  it.each([
    ['another list (same position shape)', 'entries' as AdminList, { status: 'active' }],
    ['the same list without its filter', 'nodes' as AdminList, {}],
    ['the same list with another value of the filter', 'nodes' as AdminList, { status: 'revoked' }],
    ['the same list with one more filter', 'nodes' as AdminList, { status: 'active', role: 'worker' }],
  ] as [string, AdminList, ListFilters][])('fail/%s', (_name, list, filters) => {
    expect(refusal(list, filters, nodes)).toBe('ERR_CURSOR_INVALID');
  });

  it('fail/another key (another installation)', () => {
    expect(refusal('nodes', { status: 'active' }, nodes, randomBytes(32))).toBe('ERR_CURSOR_INVALID');
  });

  const flip = (s: string, i: number) => `${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`;
  it.each([
    ['an edited position, the MAC kept', `${b64(JSON.stringify(['n-9']))}.${mac}`],
    ['an edited position that looks like a page key of the list', `${b64('["n-2"]')}.${mac}`],
    ['one character of the MAC changed', `${payload}.${flip(mac, 10)}`],
    [
      'the MAC of another position',
      `${payload}.${sealCursor(KEY, 'nodes', { status: 'active' }, ['n-2']).split('.')[1]}`,
    ],
    ['a forged MAC (random)', `${payload}.${randomBytes(32).toString('base64url')}`],
    ['a MAC made with another key', sealCursor(randomBytes(32), 'nodes', { status: 'active' }, ['n-1'])],
    ['truncated', nodes.slice(0, -1)],
    ['one character more', `${nodes}A`],
    ['no MAC', payload],
    ['the MAC alone', mac],
    ['base64 padding', `${payload}=.${mac}`],
    ['standard base64 characters', `${payload}+/.${mac}`],
    ['garbage', 'not a cursor'],
    ['garbage base64', `${b64('\u0000\u00ff{[')}.${mac}`],
    ['empty', ''],
    ['a very long one', `${'A'.repeat(5000)}.${mac}`],
  ])('fail/%s', (_name, cursor) => {
    expect(refusal('nodes', { status: 'active' }, cursor)).toBe('ERR_CURSOR_INVALID');
  });

  it('fail/another spelling of the same MAC bits (base64url allows it in the last character)', () => {
    // 32 bytes are 43 characters with 2 bits to spare: the last character has siblings that decode
    // to the same bytes. Only the spelling the server wrote is accepted.
    const last = mac.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const i = alphabet.indexOf(last);
    const sibling = alphabet[i ^ 1]!;
    const other = `${payload}.${mac.slice(0, -1)}${sibling}`;
    expect(Buffer.from(other.split('.')[1]!, 'base64url')).toStrictEqual(Buffer.from(mac, 'base64url'));
    expect(refusal('nodes', { status: 'active' }, other)).toBe('ERR_CURSOR_INVALID');
  });

  /** A cursor with a good MAC over any payload text: what a bug, or an older version, could seal. */
  const macked = (list: AdminList, filters: ListFilters, text: string) => {
    const p = b64(text);
    const m = createHmac('sha256', KEY)
      .update(`baton list cursor v1\0${list}\0${JSON.stringify(Object.entries(filters))}\0${p}`)
      .digest('base64url');
    return `${p}.${m}`;
  };

  it('ok/the helper below makes cursors the codec opens (so the next cases test the shape only)', () => {
    expect(openCursor(KEY, 'nodes', {}, macked('nodes', {}, '["n-1"]'))).toEqual(['n-1']);
  });

  it.each([
    ['nodes', 'not JSON', '{'],
    ['nodes', 'not an array', '{"id":"n-1"}'],
    ['nodes', 'a number for an id', '[1]'],
    ['nodes', 'an empty id', '[""]'],
    ['nodes', 'two parts', '["n-1","n-2"]'],
    ['certificates', 'a time without microseconds', '["2026-12-08T12:00:00.123Z","7a"]'],
    ['certificates', 'a serial missing', `["${TIME}"]`],
    ['audit', 'an id as text', `["${TIME}","42"]`],
    ['audit', 'a fractional id', `["${TIME}",4.2]`],
    ['audit', 'a negative id', `["${TIME}",-1]`],
  ] as [AdminList, string, string][])('fail/%s: %s, even under a good MAC', (list, _name, text) => {
    expect(refusal(list, {}, macked(list, {}, text))).toBe('ERR_CURSOR_INVALID');
  });
});

describe('readListPage', () => {
  const clock = new FakeClock('2026-12-08T12:00:00.000Z');
  const node = (id: string): NodeRecord => ({
    id,
    role: 'worker',
    status: 'active',
    attestationMethod: 'join_token',
    certTtlMs: null,
    createdAt: clock.now(),
    lastAttestedAt: clock.now(),
    lastSeenAt: null,
    revokedAt: null,
    revocationReason: null,
  });

  it('ok/pages through a list with the key the storage keeps, the same key on every call', async () => {
    const storage = createMemoryStorage();
    for (const id of ['a', 'b', 'c', 'd', 'e']) await storage.nodes.insert(node(id));
    const deps = { clock, keys: storage.listCursorKey };
    const read = (after?: string) =>
      readListPage(deps, 'nodes', { limit: 2, after, filters: {} }, (p) => storage.nodes.page({}, p));
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await read(after);
      seen.push(...page.items.map((n) => n.id));
      if (page.next === null) break;
      after = page.next;
    }
    expect(seen).toEqual(['a', 'b', 'c', 'd', 'e']);
    // The key was stored at the first call; a cursor of this storage opens with it.
    const key = await storage.listCursorKey.getOrCreate(randomBytes(32), clock.now());
    const first = await read();
    expect(openCursor(key, 'nodes', {}, first.next!)).toEqual(['b']);
  });

  it('fail/a cursor of another storage (another installation) is ERR_CURSOR_INVALID, nothing read', async () => {
    const [mine, theirs] = [createMemoryStorage(), createMemoryStorage()];
    for (const s of [mine, theirs]) for (const id of ['a', 'b', 'c']) await s.nodes.insert(node(id));
    const page = (s: typeof mine, after?: string) =>
      readListPage({ clock, keys: s.listCursorKey }, 'nodes', { limit: 1, after, filters: {} }, (p) => {
        reads += 1;
        return s.nodes.page({}, p);
      });
    let reads = 0;
    const { next } = await page(theirs);
    expect((await errorOf(page(mine, next!))).code).toBe('ERR_CURSOR_INVALID');
    expect(reads).toBe(1);
  });
});
