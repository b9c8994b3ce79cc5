import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type {
  AuditEvent,
  CertificateRecord,
  EntryRecord,
  NodeRecord,
} from '../../services/ca/src/domain/ports';
import { batonAsync } from '../support/cli';
import { describeEachBackend } from '../support/database';
import { startTestServer, type TestServer } from '../support/test-server';
import { tempDir, writeFiles } from '../support/tools';

/**
 * Issue 20 item 5: `node list`, `cert list`, `entry list` and `audit list` page through the whole
 * list (the CLI asks for pages of 1000, so 2,345 nodes are three pages), `--limit N` stops after N
 * rows in all, `--json` prints one document in the API's shape with every page merged and
 * `"next": null`, and the table is printed page by page under one header. `audit verify` reads a
 * chain longer than a page. The built CLI against an in-process server.
 */

const CLI_TIMEOUT_MS = 180_000;
const NODES = 2345;
const AUDIT_ROWS = 2100;

describeEachBackend('admin list commands page through everything (issue 20)', (backend) => {
  let t: TestServer;
  const dir = tempDir('baton-admin-list-cli-');
  const adminDir = join(dir.path, 'admin');
  const now = Math.floor(Date.now() / 1000) * 1000;
  const cli = (args: string[]) => batonAsync([...args, '--server', t.url, '--admin-dir', adminDir]);
  /** A command that must succeed with nothing on stderr: its stdout. */
  const ok = async (args: string[]) => {
    const r = await cli(args);
    expect({ args, status: r.status, stderr: r.stderr }).toEqual({ args, status: 0, stderr: '' });
    return r.stdout;
  };
  /** `--json` output: exactly one JSON document on one line. */
  const json = async <T>(args: string[]): Promise<T> => {
    const out = await ok([...args, '--json']);
    expect(out.endsWith('\n')).toBe(true);
    expect(out.trimEnd().includes('\n')).toBe(false);
    return JSON.parse(out) as T;
  };

  const nodeId = (i: number) => `n${String(i).padStart(5, '0')}`;
  const node = (i: number): NodeRecord => ({
    id: nodeId(i),
    role: i % 10 === 0 ? 'manager' : 'worker',
    status: i % 100 === 7 ? 'revoked' : 'active',
    attestationMethod: 'join_token',
    certTtlMs: null,
    createdAt: new Date(now),
    lastAttestedAt: new Date(now),
    lastSeenAt: null,
    revokedAt: i % 100 === 7 ? new Date(now) : null,
    revocationReason: i % 100 === 7 ? 1 : null,
  });
  const certificate = (i: number): CertificateRecord => ({
    serial: `7d${String(i).padStart(6, '0')}`,
    caId: t.ca.keyring.signing.record.id,
    kind: 'workload',
    spiffeId: `spiffe://test.example.org/w${i}`,
    nodeId: null,
    issuedVia: nodeId(i % 3),
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    keyFingerprint: randomBytes(32).toString('hex'),
    der: randomBytes(32),
    status: 'valid',
    createdAt: new Date(now - 3_600_000 + i * 1000),
    revokedAt: null,
    revocationReason: null,
  });
  const entry = (i: number): EntryRecord => ({
    name: `e${String(i).padStart(4, '0')}`,
    spiffeId: `spiffe://test.example.org/e${i}`,
    parentNodeId: nodeId(1),
    selectors: [],
    dnsNames: [],
    allowWildcardDns: false,
    ttlMs: null,
    createdBy: 'cli:root',
    createdAt: new Date(now),
  });
  const audit = (i: number): AuditEvent => ({
    at: new Date(now - 86_400_000 + i * 1000),
    event: 'test.paging',
    actor: 'cli:root',
    source: null,
    subject: `row/${i}`,
    outcome: 'success',
    details: { i },
  });

  beforeAll(async () => {
    t = await startTestServer({ backend });
    const root = await t.issueAdmin('admin', 'root');
    mkdirSync(adminDir);
    writeFiles(adminDir, { 'cert.pem': root.cert, 'key.pem': root.key, 'bundle.pem': t.bundle });
    await t.ca.storage.transaction(async (tx) => {
      for (let i = 0; i < NODES; i++) await tx.nodes.insert(node(i));
      for (let i = 0; i < 1200; i++) await tx.certificates.insert(certificate(i));
      for (let i = 0; i < 1010; i++) await tx.entries.insert(entry(i));
      for (let i = 0; i < AUDIT_ROWS; i++) await tx.audit.append(audit(i));
    });
    await t.running.jobs.runOnce();
  }, CLI_TIMEOUT_MS);
  afterAll(async () => {
    await t?.close();
    dir.cleanup();
  });

  it(
    'node list --json: one document, every page merged, next null',
    async () => {
      const doc = await json<{ nodes: { id: string }[]; next: unknown }>(['node', 'list']);
      expect(Object.keys(doc)).toEqual(['nodes', 'next']);
      expect(doc.next).toBeNull();
      expect(doc.nodes.map((n) => n.id)).toEqual(Array.from({ length: NODES }, (_, i) => nodeId(i)));
    },
    CLI_TIMEOUT_MS,
  );

  it(
    'node list --limit N stops after N nodes in all, across pages or within one',
    async () => {
      const across = await json<{ nodes: { id: string }[]; next: unknown }>([
        'node',
        'list',
        '--limit',
        '1500',
      ]);
      expect(across.nodes.map((n) => n.id)).toEqual(Array.from({ length: 1500 }, (_, i) => nodeId(i)));
      expect(across.next).toBeNull();
      const few = await json<{ nodes: { id: string }[] }>(['node', 'list', '--limit', '3']);
      expect(few.nodes.map((n) => n.id)).toEqual([nodeId(0), nodeId(1), nodeId(2)]);
      const more = await json<{ nodes: unknown[] }>(['node', 'list', '--limit', '100000']);
      expect(more.nodes).toHaveLength(NODES);
    },
    CLI_TIMEOUT_MS,
  );

  it(
    'node list --status --role: filters that combine (AND)',
    async () => {
      const want = Array.from({ length: NODES }, (_, i) => node(i))
        .filter((n) => n.status === 'revoked' && n.role === 'worker')
        .map((n) => n.id);
      const doc = await json<{ nodes: { id: string; status: string; role: string }[] }>([
        'node',
        'list',
        '--status',
        'revoked',
        '--role',
        'worker',
      ]);
      expect(doc.nodes.map((n) => n.id)).toEqual(want);
      const managers = await json<{ nodes: { role: string }[] }>(['node', 'list', '--role', 'manager']);
      expect(managers.nodes).toHaveLength(Math.ceil(NODES / 10));
      expect(new Set(managers.nodes.map((n) => n.role))).toEqual(new Set(['manager']));
    },
    CLI_TIMEOUT_MS,
  );

  it(
    'node list (table): one header, then every row of every page',
    async () => {
      const lines = (await ok(['node', 'list'])).trimEnd().split('\n');
      expect(lines[0]).toMatch(/^ID\s+ROLE\s+STATUS\s+METHOD\s+LAST ATTESTED\s+LAST SEEN$/);
      expect(lines.filter((l) => l.startsWith('ID '))).toHaveLength(1);
      expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(
        Array.from({ length: NODES }, (_, i) => nodeId(i)),
      );
      // Columns line up across pages: the role starts under ROLE on every row.
      const column = lines[0]!.indexOf('ROLE');
      expect(new Set(lines.slice(1).map((l) => l.search(/ (worker|manager) /) + 1))).toEqual(
        new Set([column]),
      );
    },
    CLI_TIMEOUT_MS,
  );

  it.each([
    [['node', 'list', '--status', 'gone'], 'baton: --status must be active or revoked (ERR_USAGE)\n'],
    [['node', 'list', '--role', 'admin'], 'baton: --role must be worker or manager (ERR_USAGE)\n'],
    [['node', 'list', '--limit', '0'], 'baton: --limit must be a positive integer (ERR_USAGE)\n'],
    [['entry', 'list', '--limit', 'ten'], 'baton: --limit must be a positive integer (ERR_USAGE)\n'],
    [['audit', 'list', '--limit', '1.5'], 'baton: --limit must be a positive integer (ERR_USAGE)\n'],
    [
      ['cert', 'list', '--status', 'bogus'],
      'baton: --status must be valid, revoked, expired or superseded (ERR_USAGE)\n',
    ],
  ])(
    'fail/%j is a usage error (exit 2), one line, nothing on stdout',
    async (args, stderr) => {
      const r = await cli(args);
      expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
        status: 2,
        stdout: '',
        stderr,
      });
    },
    CLI_TIMEOUT_MS,
  );

  it(
    'cert list --json and --node: newest first, every page merged',
    async () => {
      const all = await json<{ certificates: { serial: string }[]; next: unknown }>(['cert', 'list']);
      expect(all.next).toBeNull();
      const seeded = all.certificates.filter((c) => c.serial.startsWith('7d')).map((c) => c.serial);
      expect(seeded).toEqual(
        Array.from({ length: 1200 }, (_, i) => `7d${String(1199 - i).padStart(6, '0')}`),
      );
      const ofNode = await json<{ certificates: { serial: string; issued_via: string }[] }>([
        'cert',
        'list',
        '--node',
        nodeId(2),
        '--limit',
        '1000',
      ]);
      expect(ofNode.certificates).toHaveLength(400);
      expect(new Set(ofNode.certificates.map((c) => c.issued_via))).toEqual(new Set([nodeId(2)]));
    },
    CLI_TIMEOUT_MS,
  );

  it(
    'entry list --json: 1010 entries by name, two pages merged; the table too',
    async () => {
      const doc = await json<{ entries: { name: string }[]; next: unknown }>(['entry', 'list']);
      expect(doc.entries.map((e) => e.name)).toEqual(
        Array.from({ length: 1010 }, (_, i) => `e${String(i).padStart(4, '0')}`),
      );
      expect(doc.next).toBeNull();
      const lines = (await ok(['entry', 'list'])).trimEnd().split('\n');
      expect(lines).toHaveLength(1011);
      expect(lines[0]).toMatch(/^NAME\s+SPIFFE ID\s+PARENT/);
    },
    CLI_TIMEOUT_MS,
  );

  it(
    'audit list --json --event: newest first, pages merged; --limit across a page boundary',
    async () => {
      const doc = await json<{ events: { subject: string }[]; next: unknown }>([
        'audit',
        'list',
        '--event',
        'test.paging',
      ]);
      expect(doc.events.map((e) => e.subject)).toEqual(
        Array.from({ length: AUDIT_ROWS }, (_, i) => `row/${AUDIT_ROWS - 1 - i}`),
      );
      expect(doc.next).toBeNull();
      const cut = await json<{ events: { subject: string }[] }>([
        'audit',
        'list',
        '--event',
        'test.paging',
        '--limit',
        '1001',
      ]);
      expect(cut.events.map((e) => e.subject)).toEqual(doc.events.slice(0, 1001).map((e) => e.subject));
    },
    CLI_TIMEOUT_MS,
  );

  it(
    'audit verify reads a chain longer than one page (pages of 1000 by seal_seq)',
    async () => {
      const v = await json<{ ok: boolean; rows: number; unsealed: number }>(['audit', 'verify']);
      expect(v).toEqual({ ok: true, rows: expect.any(Number), unsealed: 0, from: 1 });
      expect(v.rows).toBeGreaterThan(2000);
    },
    CLI_TIMEOUT_MS,
  );
});
