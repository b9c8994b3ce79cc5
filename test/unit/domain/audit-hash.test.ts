import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { auditContent, auditHash, canonicalJson } from '../../../services/ca/src/domain/audit';
import type { AuditRecord } from '../../../services/ca/src/domain/ports';

/**
 * The audit chain's hash input. The sealer writes the top level out in a fixed order instead of
 * sorting it per row; it must stay byte-for-byte what canonicalJson gives (and what chains sealed
 * by earlier versions were hashed over), or existing logs would no longer verify.
 */
type Content = Omit<AuditRecord, 'prevHash' | 'hash'>;

/** canonicalJson as chains were first sealed with (Object.entries, filter, comparator sort). */
function reference(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v ?? null);
  if (Array.isArray(v)) return `[${v.map(reference).join(',')}]`;
  const entries = Object.entries(v as Record<string, unknown>)
    .filter(([, x]) => x !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([key, x]) => `${JSON.stringify(key)}:${reference(x)}`).join(',')}}`;
}

const asObject = (r: Content) => ({
  id: r.id,
  seal_seq: r.sealSeq,
  at: r.at.toISOString(),
  event: r.event,
  actor: r.actor,
  source: r.source,
  subject: r.subject,
  outcome: r.outcome,
  details: r.details,
});

const json = fc.jsonValue({ maxDepth: 3 });
const content: fc.Arbitrary<Content> = fc.record({
  id: fc.nat(),
  sealSeq: fc.option(fc.nat(), { nil: null }),
  at: fc.date({ min: new Date(0), max: new Date(4102444800000), noInvalidDate: true }),
  event: fc.string(),
  actor: fc.string(),
  source: fc.option(fc.string(), { nil: null }),
  subject: fc.option(fc.string({ unit: 'grapheme' }), { nil: null }),
  outcome: fc.constantFrom('success' as const, 'failure' as const),
  details: fc.dictionary(fc.string({ unit: 'grapheme' }), json) as fc.Arbitrary<Record<string, unknown>>,
});

it('auditContent is canonicalJson of the row, and canonicalJson what it always was, for any row', () => {
  fc.assert(
    fc.property(content, (r) => {
      expect(auditContent(r)).toBe(canonicalJson(asObject(r)));
      expect(canonicalJson(asObject(r))).toBe(reference(asObject(r)));
    }),
    { numRuns: 500 },
  );
});

it('drops fields that are undefined, as canonicalJson does', () => {
  const r = { id: 7, sealSeq: 1, at: new Date(0), event: 'e', actor: 'a', outcome: 'success', details: {} };
  const row = { ...r, source: undefined, subject: null } as unknown as Content;
  expect(auditContent(row)).toBe(canonicalJson(asObject(row)));
  expect(auditContent(row)).not.toContain('"source"');
  expect(auditContent(row)).toContain('"subject":null');
});

it('hashes SHA-256(previous hash, or 32 zero bytes, || content)', () => {
  const row: Content = {
    id: 42,
    sealSeq: 3,
    at: new Date('2026-11-26T12:00:00.000Z'),
    event: 'certificate.issued',
    actor: 'spiffe://baton.local/node/n1',
    source: '127.0.0.1',
    subject: 'spiffe://baton.local/web',
    outcome: 'success',
    details: { serial: 'ab12', kind: 'workload', nested: { z: 1, a: [2, { y: null, b: 'x' }] } },
  };
  const text =
    '{"actor":"spiffe://baton.local/node/n1","at":"2026-11-26T12:00:00.000Z",' +
    '"details":{"kind":"workload","nested":{"a":[2,{"b":"x","y":null}],"z":1},"serial":"ab12"},' +
    '"event":"certificate.issued","id":42,"outcome":"success","seal_seq":3,"source":"127.0.0.1",' +
    '"subject":"spiffe://baton.local/web"}';
  expect(auditContent(row)).toBe(text);
  const sha = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();
  expect(auditHash(row, null).equals(sha(Buffer.alloc(32), Buffer.from(text)))).toBe(true);
  const prev = Buffer.alloc(32, 0xab);
  expect(auditHash(row, prev).equals(sha(prev, Buffer.from(text)))).toBe(true);
});
