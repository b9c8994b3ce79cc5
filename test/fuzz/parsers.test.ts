import fc from 'fast-check';
import { parseJoinToken } from '../../services/ca/src/domain/join-token';
import { validateDnsName } from '../../services/ca/src/domain/dns-name';
import { BatonError } from '../../services/ca/src/ground/errors';
import { validateSpiffeId } from '../../services/ca/src/domain/spiffe-id';
import { readJoinTokenEvidence } from '../../services/ca/src/http/attestation-evidence';
import { readCreateEntryParams } from '../../services/ca/src/http/params/entries';
import { parseCsr } from '../../services/ca/src/pki/csr';
import { toPem } from '../../common/src/der';
import { children, decodeOid, fromPem, readTlv, readWhole } from '../../services/ca/src/pki/der-reader';
import { parseOcspRequest } from '../../services/ca/src/pki/ocsp';
import { keyAndCsr } from '../support/node-client';
import { startTestServer } from '../support/test-server';
import { nested, ocspRequest } from './support/der-mutations';

/**
 * Issue 8 item 3, the parsers themselves, in process and at volume: every hostile input to the DER
 * reader, the CSR and OCSP parsers, the join-token parser and the name validators ends in a
 * BatonError (never a TypeError, RangeError or stack overflow, which the HTTP layer would answer
 * with a 500), and no single call takes long enough to stall the event loop.
 */
const CALL_BOUND_MS = 250;

/**
 * The slowest call per parser. The parsers are pure, so a call that looks slow is run twice more
 * and its fastest run counts: a GC pause or a busy CI machine is not an input that is slow to parse.
 */
class CallTimes {
  calls = 0;
  maxMs = 0;
  time<T>(fn: () => T): T {
    const once = (): number => {
      const t0 = performance.now();
      try {
        fn();
      } catch {
        // the outcome is checked by the first run below
      }
      return performance.now() - t0;
    };
    const t0 = performance.now();
    try {
      return fn();
    } finally {
      let ms = performance.now() - t0;
      for (let i = 0; i < 2 && ms > CALL_BOUND_MS / 10; i++) ms = Math.min(ms, once());
      this.calls += 1;
      this.maxMs = Math.max(this.maxMs, ms);
    }
  }
}

const times = new Map<string, CallTimes>();
const timer = (name: string) => {
  const t = times.get(name) ?? new CallTimes();
  times.set(name, t);
  return t;
};

/** Runs `fn`; it may return, or throw a BatonError with one of `codes`. Anything else fails. */
function expectOnlyBatonErrors(name: string, fn: () => unknown, codes: string[], input: () => string): void {
  try {
    timer(name).time(fn);
  } catch (e) {
    if (!(e instanceof BatonError)) throw new Error(`${name} threw ${String(e)} for ${input()}`);
    if (!codes.includes(e.code)) throw new Error(`${name} threw ${e.code} for ${input()}`);
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex').slice(0, 400);

/** Text for a failure message, whatever the value (String() itself throws on some objects). */
const show = (v: unknown): string => {
  try {
    return String(JSON.stringify(v)).slice(0, 200);
  } catch {
    return Object.prototype.toString.call(v);
  }
};

/** DNS-looking names: labels of LDH characters, wildcards, dots and a few hostile characters. */
const dnsLike = fc
  .array(fc.stringMatching(/^[a-zA-Z0-9*_\-.:[\]\u00fc]{0,10}$/), { minLength: 1, maxLength: 6 })
  .map((labels) => labels.join('.'));

describe('fuzz: parsers in process', () => {
  let csrDer: Buffer;
  let ocspDer: Buffer;

  beforeAll(async () => {
    csrDer = fromPem((await keyAndCsr('parsers')).csrPem, 'CERTIFICATE REQUEST');
    const t = await startTestServer();
    try {
      ocspDer = ocspRequest(t.ca.keyring.signing.record.certificateDer, '0102');
    } finally {
      await t.close();
    }
  });

  afterAll(() => {
    const lines = [...times.entries()].map(
      ([n, t]) => `  ${n}: ${t.calls} inputs, slowest ${t.maxMs.toFixed(2)} ms`,
    );
    console.log(['[fuzz] parsers in process', ...lines].join('\n'));
    for (const [n, t] of times) expect(`${n}: ${t.maxMs < CALL_BOUND_MS}`).toBe(`${n}: true`);
  });

  /** Random edits (flip, overwrite, delete, insert, truncate) of a valid encoding. */
  const edited = (base: () => Buffer) =>
    fc
      .array(
        fc.tuple(
          fc.constantFrom('flip', 'set', 'delete', 'insert', 'cut'),
          fc.nat(),
          fc.integer({ min: 0, max: 255 }),
        ),
        { minLength: 1, maxLength: 6 },
      )
      .map((edits) => {
        let b = Buffer.from(base());
        for (const [kind, at, v] of edits) {
          const i = b.length ? at % b.length : 0;
          if (kind === 'flip' && b.length) b[i]! ^= 1 << (v & 7);
          if (kind === 'set' && b.length) b[i] = v;
          if (kind === 'delete') b = Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
          if (kind === 'insert') b = Buffer.concat([b.subarray(0, i), Buffer.from([v]), b.subarray(i)]);
          if (kind === 'cut') b = b.subarray(0, i);
        }
        return b;
      });

  it('the DER reader refuses arbitrary bytes with ERR_BAD_REQUEST only', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const buf = Buffer.from(bytes);
        expectOnlyBatonErrors(
          'readWhole + children',
          () => {
            const el = readWhole(buf);
            if (el.tag & 0x20) for (const child of children(el)) if (child.tag & 0x20) children(child);
          },
          ['ERR_BAD_REQUEST'],
          () => hex(bytes),
        );
        expectOnlyBatonErrors(
          'readTlv at an offset',
          () => readTlv(buf, bytes.length >> 1),
          ['ERR_BAD_REQUEST'],
          () => hex(bytes),
        );
      }),
      { numRuns: 3000 },
    );
  });

  it('decodeOid agrees with a BigInt reference decoder on every input, and refuses with ERR_BAD_REQUEST only', () => {
    const reference = (v: Buffer): string | null => {
      if (v.length === 0 || v.length > 64 || (v[v.length - 1]! & 0x80) !== 0) return null;
      const arcs: bigint[] = [];
      let acc = 0n;
      let start = true;
      for (const b of v) {
        if (start && b === 0x80) return null;
        acc = (acc << 7n) | BigInt(b & 0x7f);
        start = false;
        if ((b & 0x80) === 0) {
          arcs.push(acc);
          acc = 0n;
          start = true;
        }
      }
      const first = arcs[0]!;
      const head = first < 80n ? [first / 40n, first % 40n] : [2n, first - 80n];
      return [...head, ...arcs.slice(1)].join('.');
    };
    const oidBytes = fc.oneof(
      fc.uint8Array({ maxLength: 70 }),
      fc
        .array(fc.oneof(fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0x80, max: 0xff })), {
          maxLength: 66,
        })
        .map((a) => Uint8Array.from(a)),
      fc.bigInt({ min: 0n, max: (1n << 200n) - 1n }).map((n) => {
        const out: number[] = [];
        let v = n;
        do {
          out.unshift(Number(v & 0x7fn));
          v >>= 7n;
        } while (v > 0n);
        for (let i = 0; i < out.length - 1; i++) out[i]! |= 0x80;
        return Uint8Array.from([0x2a, ...out]);
      }),
    );
    fc.assert(
      fc.property(oidBytes, (bytes) => {
        const buf = Buffer.from(bytes);
        const want = reference(buf);
        let got: string | null;
        try {
          got = timer('decodeOid').time(() => decodeOid(buf));
        } catch (e) {
          if (!(e instanceof BatonError) || e.code !== 'ERR_BAD_REQUEST') throw e;
          got = null;
        }
        expect({ hex: hex(bytes), oid: got }).toEqual({ hex: hex(bytes), oid: want });
      }),
      { numRuns: 3000 },
    );
  });

  it('parseCsr refuses edited real CSRs and arbitrary bytes with CSR codes only', () => {
    const codes = ['ERR_CSR_INVALID', 'ERR_CSR_KEY_UNSUPPORTED'];
    fc.assert(
      fc.property(
        edited(() => csrDer),
        fc.boolean(),
        (der, asPem) => {
          if (der.equals(csrDer)) return;
          const input = asPem ? toPem('CERTIFICATE REQUEST', der) : der;
          expectOnlyBatonErrors(
            'parseCsr (edited)',
            () => parseCsr(input),
            codes,
            () => der.toString('hex'),
          );
        },
      ),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.string({ unit: 'binary', maxLength: 600 })),
        (v) => {
          const input = typeof v === 'string' ? v : Buffer.from(v);
          expectOnlyBatonErrors(
            'parseCsr (arbitrary)',
            () => parseCsr(input),
            codes,
            () => JSON.stringify(v).slice(0, 300),
          );
        },
      ),
      { numRuns: 1500 },
    );
  });

  it('parseCsr bounds its work: 16 KiB of hostile PEM, deep nesting and pathological regex input', () => {
    const codes = ['ERR_CSR_INVALID', 'ERR_CSR_KEY_UNSUPPORTED'];
    const big = 16 * 1024 - 100;
    const cases: [string, string | Buffer][] = [
      ['header, then whitespace, no footer', `-----BEGIN CERTIFICATE REQUEST-----${' '.repeat(big)}`],
      ['header, then base64, no footer', `-----BEGIN CERTIFICATE REQUEST-----${'A'.repeat(big)}`],
      ['headers repeated', '-----BEGIN CERTIFICATE REQUEST-----'.repeat(big / 36)],
      ['footer repeated', '-----END CERTIFICATE REQUEST-----'.repeat(big / 34)],
      ['dashes', '-'.repeat(big)],
      ['1000 nested SEQUENCEs (DER)', nested(1000)],
      ['1000 nested SEQUENCEs (PEM)', toPem('CERTIFICATE REQUEST', nested(1000))],
      ['16 KiB + 1', 'A'.repeat(16 * 1024 + 1)],
      ['16 KiB of 4-byte UTF-8', '\u{1f600}'.repeat(4096)],
      ['a million characters', 'A'.repeat(1_000_000)],
    ];
    for (const [name, input] of cases)
      expectOnlyBatonErrors(
        'parseCsr (pathological)',
        () => parseCsr(input),
        codes,
        () => name,
      );
  });

  it('parseOcspRequest answers or refuses edited real requests and arbitrary bytes with ERR_BAD_REQUEST only', () => {
    fc.assert(
      fc.property(
        edited(() => ocspDer),
        (der) => {
          expectOnlyBatonErrors(
            'parseOcspRequest (edited)',
            () => parseOcspRequest(der),
            ['ERR_BAD_REQUEST'],
            () => der.toString('hex'),
          );
        },
      ),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        expectOnlyBatonErrors(
          'parseOcspRequest (arbitrary)',
          () => parseOcspRequest(Buffer.from(bytes)),
          ['ERR_BAD_REQUEST'],
          () => hex(bytes),
        );
      }),
      { numRuns: 1500 },
    );
  });

  it('parseJoinToken, and the edge reading any JSON value as a token, refuse everything but the exact grammar with ERR_TOKEN_INVALID', () => {
    const good = `BATON1-${'a'.repeat(52)}-${'0'.repeat(16)}.${'b'.repeat(52)}`;
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.string({ unit: 'binary', maxLength: 200 }),
          fc
            .tuple(fc.nat({ max: good.length }), fc.string({ maxLength: 3 }))
            .map(([i, s]) => good.slice(0, i) + s + good.slice(i + 1)),
        ),
        (token) => {
          let parsed = false;
          expectOnlyBatonErrors(
            'readJoinTokenEvidence',
            () => {
              readJoinTokenEvidence({ token });
              parsed = true;
            },
            ['ERR_TOKEN_INVALID'],
            () => show(token),
          );
          if (parsed) expect(token).toMatch(/^BATON1-[a-z2-7]{52}-[0-9a-f]{16}\.[a-z2-7]{52}$/);
          if (typeof token === 'string') {
            let parsedString = false;
            expectOnlyBatonErrors(
              'parseJoinToken',
              () => {
                parseJoinToken(token);
                parsedString = true;
              },
              ['ERR_TOKEN_INVALID'],
              () => show(token),
            );
            expect(parsedString).toBe(parsed);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('the SPIFFE ID and DNS name validators, and the edge reading any JSON value for them, refuse with ERR_BAD_REQUEST only', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.anything(), fc.string({ unit: 'binary', maxLength: 300 }), dnsLike),
        fc.boolean(),
        (v, wildcard) => {
          const what = () => show(v);
          const td = 'test.example.org';
          const entry = { name: 'e', parent: 'n1', spiffe_id: `spiffe://${td}/e` };
          expectOnlyBatonErrors(
            'readCreateEntryParams (spiffe_id)',
            () => readCreateEntryParams({ ...entry, spiffe_id: v }, td),
            ['ERR_BAD_REQUEST'],
            what,
          );
          expectOnlyBatonErrors(
            'readCreateEntryParams (dns_names)',
            () => readCreateEntryParams({ ...entry, dns_names: [v], allow_wildcard_dns: wildcard }, td),
            ['ERR_BAD_REQUEST'],
            what,
          );
          if (typeof v === 'string') {
            expectOnlyBatonErrors(
              'validateSpiffeId',
              () => validateSpiffeId(v, td),
              ['ERR_BAD_REQUEST'],
              what,
            );
            expectOnlyBatonErrors(
              'validateSpiffeId (prefixed)',
              () => validateSpiffeId(`spiffe://${td}/${v}`, td),
              ['ERR_BAD_REQUEST'],
              what,
            );
            expectOnlyBatonErrors(
              'validateDnsName',
              () => validateDnsName(v, { allowWildcard: wildcard }),
              ['ERR_BAD_REQUEST'],
              what,
            );
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});
