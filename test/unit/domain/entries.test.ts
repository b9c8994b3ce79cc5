import type { AuditContext } from '../../../services/ca/src/domain/audit';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { type DnsName, validateDnsName } from '../../../services/ca/src/domain/dns-name';
import {
  checkListLength,
  createEntry,
  formatSelector,
  parseSelector,
  validateEntryName,
} from '../../../services/ca/src/domain/entries';
import type {
  AuditEvent,
  EntryRecord,
  NodeRecord,
  Repositories,
  RevocationEvent,
} from '../../../services/ca/src/domain/ports';
import { validateWorkloadSpiffeId } from '../../../services/ca/src/domain/spiffe-id';
import { errorOf } from '../../support/errors';

const TD = 'test.example.org';
const refusal = (f: () => unknown) => {
  const e = errorOf(f);
  return `${e.code} ${e.message}`;
};

describe('entry values (typed input, field-free refusals)', () => {
  it('validateEntryName: lowercase LDH, dots and underscores, 1 to 63', () => {
    for (const ok of ['a', 'web', 'web-1.api_2', 'a'.repeat(63)]) expect(validateEntryName(ok)).toBe(ok);
    for (const bad of ['', 'Web', '-web', 'web-', 'a'.repeat(64), 'we b', 'wéb']) {
      expect(refusal(() => validateEntryName(bad))).toBe(
        'ERR_BAD_REQUEST invalid entry name: lowercase letters, digits, ".", "-", "_" (at most 63)',
      );
    }
  });

  it('parseSelector: unix:uid:N and unix:gid:N, N from 0 to 2^31-1, no leading zero', () => {
    expect(parseSelector('unix:uid:0')).toEqual({ type: 'unix', key: 'uid', value: 0 });
    expect(parseSelector('unix:gid:2147483647')).toEqual({ type: 'unix', key: 'gid', value: 2 ** 31 - 1 });
    expect(formatSelector(parseSelector('unix:uid:1000'))).toBe('unix:uid:1000');
    for (const bad of [
      '',
      'unix:uid:',
      'unix:uid:01',
      'unix:uid:2147483648',
      'unix:pid:1',
      'UNIX:uid:1',
      'unix:uid:1 ',
    ]) {
      expect(refusal(() => parseSelector(bad))).toBe(
        'ERR_BAD_REQUEST invalid selector: use unix:uid:N, unix:gid:N or unix:path:/absolute/path',
      );
    }
  });

  it('parseSelector: unix:path takes a canonical absolute path, kept as written', () => {
    expect(parseSelector('unix:path:/usr/bin/python3.11')).toEqual({
      type: 'unix',
      key: 'path',
      value: '/usr/bin/python3.11',
    });
    expect(parseSelector('unix:path:/opt/my app/bin:x')).toEqual({
      type: 'unix',
      key: 'path',
      value: '/opt/my app/bin:x',
    });
    for (const bad of [
      'unix:path:',
      'unix:path:usr/bin/x',
      'unix:path:/',
      'unix:path:/usr//bin',
      'unix:path:/usr/bin/',
      'unix:path:/usr/./bin',
      'unix:path:/usr/../bin',
      'unix:path:/usr/bin/x\n',
      `unix:path:/${'a'.repeat(4095)}`,
    ]) {
      expect(refusal(() => parseSelector(bad))).toMatch(/^ERR_BAD_REQUEST invalid selector: /);
    }
  });

  it('checkListLength: at most max items, the refusal without a field name', () => {
    expect(checkListLength([1, 2], 2)).toEqual([1, 2]);
    expect(checkListLength([], 0)).toEqual([]);
    expect(refusal(() => checkListLength([1, 2, 3], 2))).toBe('ERR_BAD_REQUEST a list of at most 2');
  });
});

describe('createEntry with checked values', () => {
  const audit: AuditContext = { actor: 'spiffe://test.example.org/admin/a', source: '127.0.0.1' };
  const node = (status: 'active' | 'revoked'): NodeRecord =>
    ({ id: 'n1', role: 'worker', status }) as NodeRecord;

  function fakeRepos(parent: NodeRecord | null) {
    const entries: EntryRecord[] = [];
    const events: AuditEvent[] = [];
    const feed: Omit<RevocationEvent, 'id'>[] = [];
    const repos = {
      nodes: { findById: async (id: string) => (parent && parent.id === id ? parent : null) },
      entries: { insert: async (e: EntryRecord) => void entries.push(e) },
      audit: { append: async (e: AuditEvent) => void events.push(e) },
      revocations: { appendEvent: async (e: Omit<RevocationEvent, 'id'>) => void feed.push(e) },
    } as unknown as Repositories;
    return { repos, entries, events, feed };
  }

  const params = (over: Partial<Parameters<typeof createEntry>[1]> = {}) => ({
    name: validateEntryName('web'),
    spiffeId: validateWorkloadSpiffeId(`spiffe://${TD}/web`, TD),
    parentNodeId: 'n1',
    selectors: [parseSelector('unix:uid:1000')],
    dnsNames: ['web.example.org', 'web.example.org'].map((d) => validateDnsName(d, { allowWildcard: false })),
    allowWildcardDns: false,
    ttlMs: null,
    createdBy: audit.actor,
    audit,
    ...over,
  });

  it('records the entry (DNS names without duplicates) and its audit row', async () => {
    const clock = new FakeClock('2026-01-01T00:00:00Z');
    const f = fakeRepos(node('active'));
    const e = await createEntry({ clock, repos: f.repos, defaultTtlMs: 3_600_000 }, params());
    expect(e).toMatchObject({ name: 'web', spiffeId: `spiffe://${TD}/web`, dnsNames: ['web.example.org'] });
    expect(f.entries).toEqual([e]);
    expect(f.events).toHaveLength(1);
    // The feed tells the parent's agent, in the same transaction (CONTRACT: within 1 s on the socket).
    expect(f.feed).toEqual([
      { kind: 'entry', nodeId: 'n1', serials: [], reason: 0, actor: audit.actor, createdAt: clock.now() },
    ]);
  });

  it('refuses a missing or revoked parent, and a lifetime out of range (without a field name)', async () => {
    const clock = new FakeClock('2026-01-01T00:00:00Z');
    const deps = (parent: NodeRecord | null) => ({ clock, repos: fakeRepos(parent).repos, defaultTtlMs: 1 });
    const code = async (p: Promise<unknown>) => {
      const e = await errorOf(p);
      return `${e.code} ${e.message}`;
    };
    expect(await code(createEntry(deps(null), params()))).toBe('ERR_NOT_FOUND no such parent node');
    expect(await code(createEntry(deps(node('revoked')), params()))).toBe(
      'ERR_NODE_REVOKED the parent node has been revoked',
    );
    expect(await code(createEntry(deps(node('active')), params({ ttlMs: 59_000 })))).toBe(
      'ERR_BAD_REQUEST an entry lifetime must be between 1m and 7d',
    );
    const dns: DnsName[] = [];
    expect((await createEntry(deps(node('active')), params({ dnsNames: dns }))).dnsNames).toEqual([]);
  });
});
