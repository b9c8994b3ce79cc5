import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { BatonError } from '../../../services/ca/src/ground/errors';
import { decodeTime } from '../../../services/ca/src/pki/certificate-reader';
import { TAG, int, namedBits, oid, seq, time, tlv } from '../../../common/src/der';
import { type Tlv, children, decodeOid, readTlv, readWhole } from '../../../services/ca/src/pki/der-reader';
import { describeWithTool, itWithTool, run, tempDir } from '../../support/tools';

/** The code of the BatonError `fn` throws; anything else (including no throw) is reported as such. */
function errorCodeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof BatonError ? e.code : `not a BatonError: ${String(e)}`;
  }
  return 'no error';
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (...b: number[]): Buffer => Buffer.from(b);

const dir = tempDir('baton-der-');
afterAll(() => dir.cleanup());

/** openssl's own DER for an ASN1_generate_nconf string: an encoder Baton shares no code with. */
function opensslDer(genstr: string): string {
  const out = join(dir.path, 'genstr.der');
  const r = run('openssl', ['asn1parse', '-genstr', genstr, '-out', out]);
  if (r.status !== 0) throw new Error(`openssl asn1parse -genstr ${genstr}: ${r.out}`);
  return readFileSync(out).toString('hex');
}

describe('DER lengths (X.690 §8.1.3, §10.1)', () => {
  it.each([
    ['ok/0 short form', 0, '0400'],
    ['ok/127 last short form', 127, '047f'],
    ['ok/128 first long form', 128, '048180'],
    ['ok/255 last one-octet long form', 255, '0481ff'],
    ['ok/256 first two-octet long form', 256, '04820100'],
    ['ok/65535 last two-octet long form', 65535, '0482ffff'],
    ['ok/65536 first three-octet long form', 65536, '0483010000'],
  ])('%s: header and readTlv round-trip', (_name, len, header) => {
    const content = Buffer.alloc(len, 0xab);
    const encoded = tlv(TAG.OCTET_STRING, content);
    expect(hex(encoded.subarray(0, header.length / 2))).toBe(header);
    expect(encoded.length).toBe(header.length / 2 + len);
    const el = readTlv(encoded);
    expect(el.tag).toBe(TAG.OCTET_STRING);
    expect(el.value.equals(content)).toBe(true);
    expect(el.raw.equals(encoded)).toBe(true);
    expect(readWhole(encoded).value.length).toBe(len);
  });

  it('reads a TLV at an offset, bounded by its own length', () => {
    const buf = Buffer.concat([bytes(0x05, 0x00), tlv(TAG.OCTET_STRING, bytes(1, 2, 3)), bytes(0xff)]);
    const el = readTlv(buf, 2);
    expect(hex(el.raw)).toBe('0403010203');
    expect(hex(el.value)).toBe('010203');
  });

  it('splits a constructed element into its children in order', () => {
    const encoded = seq(int(1), oid('2.5.4.3'), seq(), tlv(TAG.OCTET_STRING, Buffer.alloc(300)));
    const kids = children(readWhole(encoded));
    expect(kids.map((k) => k.tag)).toEqual([TAG.INTEGER, TAG.OID, TAG.SEQUENCE, TAG.OCTET_STRING]);
    expect(kids.map((k) => k.value.length)).toEqual([1, 3, 0, 300]);
  });
});

describe('DER reader refuses malformed input with ERR_BAD_REQUEST', () => {
  it.each([
    ['fail/empty input', bytes()],
    ['fail/tag without length', bytes(0x30)],
    ['fail/truncated long-form length', bytes(0x04, 0x82, 0x01)],
    ['fail/indefinite length', bytes(0x30, 0x80, 0x05, 0x00, 0x00, 0x00)],
    ['fail/non-minimal: long form for a short length', bytes(0x04, 0x81, 0x05, 1, 2, 3, 4, 5)],
    [
      'fail/non-minimal: leading zero length octet',
      Buffer.concat([bytes(0x04, 0x82, 0x00, 0x80), Buffer.alloc(0x80)]),
    ],
    ['fail/length of five octets', bytes(0x04, 0x85, 0, 0, 0, 0, 1, 0)],
    ['fail/short length exceeds input', bytes(0x04, 0x05, 1, 2)],
    ['fail/long length exceeds input', Buffer.concat([bytes(0x04, 0x81, 0x80), Buffer.alloc(0x7f)])],
    ['fail/huge length exceeds input', bytes(0x04, 0x84, 0xff, 0xff, 0xff, 0xff, 0)],
    ['fail/multi-byte tag', bytes(0x1f, 0x81, 0x01, 0x00)],
    ['fail/trailing data', bytes(0x05, 0x00, 0x00)],
  ])('%s', (_name, input) => {
    expect(errorCodeOf(() => readWhole(input))).toBe('ERR_BAD_REQUEST');
  });

  it('names what was being read in the message', () => {
    expect(() => readWhole(bytes(0x30), 'CSR')).toThrow(/^malformed CSR: truncated header$/);
  });

  it.each([
    ['fail/children of a primitive element', bytes(0x04, 0x01, 0x00)],
    ['fail/child longer than its parent', bytes(0x30, 0x03, 0x04, 0x05, 0x01)],
    ['fail/child with indefinite length', bytes(0x30, 0x04, 0x30, 0x80, 0x00, 0x00)],
    ['fail/child with a truncated header', bytes(0x30, 0x01, 0x04)],
  ])('%s', (_name, input) => {
    expect(errorCodeOf(() => children(readWhole(input)))).toBe('ERR_BAD_REQUEST');
  });

  it('fail/nesting deeper than the limit', () => {
    let el: Buffer = seq();
    for (let i = 0; i < 40; i++) el = seq(el);
    const walk = (t: Tlv, depth: number): void => {
      for (const c of children(t, 'DER', depth)) walk(c, depth + 1);
    };
    expect(errorCodeOf(() => walk(readWhole(el), 0))).toBe('ERR_BAD_REQUEST');
  });
});

describe('INTEGER', () => {
  it.each([
    ['ok/0', 0, '020100'],
    ['ok/127 fits one octet', 127, '02017f'],
    ['ok/128 needs a leading zero', 128, '02020080'],
    ['ok/256', 256, '02020100'],
    ['ok/2^64', 2n ** 64n, '0209010000000000000000'],
  ] as const)('%s encodes to known bytes', (_name, n, expected) => {
    expect(hex(int(n))).toBe(expected);
  });

  describeWithTool('openssl', 'against openssl asn1parse -genstr', () => {
    it.each([
      ['ok/0', 0n],
      ['ok/127', 127n],
      ['ok/128', 128n],
      ['ok/2^64', 2n ** 64n],
      ['ok/2^159 (a 20-octet serial with the high bit set)', 2n ** 159n],
    ])('%s matches openssl', (_name, n) => {
      expect(hex(int(n))).toBe(opensslDer(`INTEGER:0x${n.toString(16)}`));
    });
  });

  it('fail/negative integers are refused', () => {
    expect(() => int(-1)).toThrow(RangeError);
  });
});

describe('OBJECT IDENTIFIER', () => {
  it('ok/ecdsa-with-SHA256 encodes to the bytes of RFC 5758 §3.2', () => {
    expect(hex(oid('1.2.840.10045.4.3.2'))).toBe('06082a8648ce3d040302');
  });

  const oids = [
    ['ok/ecdsa-with-SHA256', '1.2.840.10045.4.3.2'],
    ['ok/commonName', '2.5.4.3'],
    ['ok/zero arcs', '0.0'],
    ['ok/first arc 1, second arc 39', '1.39.0'],
    ['ok/joint-iso-itu-t with a second arc above 39', '2.999.3'],
    ['ok/arc of exactly 2^7', '1.2.128'],
    ['ok/arc above 2^32', '1.3.6.1.4.1.4294967296.1'],
    ['ok/UUID arc of 128 bits (X.667)', '2.25.329800735698586629295641978511506172918'],
  ];

  it.each(oids)('%s round-trips through decodeOid', (_name, dotted) => {
    const el = readWhole(oid(dotted));
    expect(el.tag).toBe(TAG.OID);
    expect(decodeOid(el.value)).toBe(dotted);
  });

  describeWithTool('openssl', 'against openssl asn1parse -genstr', () => {
    it.each(oids)('%s matches openssl', (_name, dotted) => {
      expect(hex(oid(dotted))).toBe(opensslDer(`OID:${dotted}`));
    });
  });

  it.each([
    ['fail/empty', bytes()],
    ['fail/ends inside a subidentifier', bytes(0x2a, 0x86)],
    ['fail/non-minimal subidentifier (leading 0x80)', bytes(0x2a, 0x80, 0x01)],
    ['fail/longer than 64 octets', Buffer.alloc(65, 0x01)],
  ])('%s', (_name, value) => {
    expect(errorCodeOf(() => decodeOid(value))).toBe('ERR_BAD_REQUEST');
  });
});

describe('Time (RFC 5280 §4.1.2.5)', () => {
  it.each([
    ['ok/1950 is the first UTCTime year', '1950-01-01T00:00:00Z', TAG.UTC_TIME, '500101000000Z'],
    ['ok/2026 is UTCTime', '2026-11-26T15:04:05Z', TAG.UTC_TIME, '261126150405Z'],
    ['ok/last second of 2049 is UTCTime', '2049-12-31T23:59:59Z', TAG.UTC_TIME, '491231235959Z'],
    ['ok/2050 is GeneralizedTime', '2050-01-01T00:00:00Z', TAG.GENERALIZED_TIME, '20500101000000Z'],
    ['ok/9999 is GeneralizedTime', '9999-12-31T23:59:59Z', TAG.GENERALIZED_TIME, '99991231235959Z'],
    ['ok/1949 is GeneralizedTime', '1949-12-31T23:59:59Z', TAG.GENERALIZED_TIME, '19491231235959Z'],
  ])('%s', (_name, iso, tag, text) => {
    const el = readWhole(time(new Date(iso)));
    expect(el.tag).toBe(tag);
    expect(el.value.toString('latin1')).toBe(text);
    expect(decodeTime(el).toISOString()).toBe(new Date(iso).toISOString());
  });

  it('ok/drops milliseconds (DER times have whole seconds)', () => {
    const el = readWhole(time(new Date('2030-06-15T12:30:45.999Z')));
    expect(el.value.toString('latin1')).toBe('300615123045Z');
  });

  itWithTool('openssl', 'ok/matches openssl for UTCTime', () => {
    expect(hex(time(new Date('2049-12-31T23:59:59Z')))).toBe(opensslDer('UTCTIME:491231235959Z'));
  });
});

describe('decodeTime', () => {
  const t = (tag: number, s: string): Tlv => readWhole(tlv(tag, Buffer.from(s, 'latin1')));

  it.each([
    ['ok/UTCTime 50 is 1950', t(TAG.UTC_TIME, '500101000000Z'), '1950-01-01T00:00:00.000Z'],
    ['ok/UTCTime 49 is 2049', t(TAG.UTC_TIME, '491231235959Z'), '2049-12-31T23:59:59.000Z'],
    ['ok/UTCTime 00 is 2000', t(TAG.UTC_TIME, '000229120000Z'), '2000-02-29T12:00:00.000Z'],
    ['ok/GeneralizedTime 2050', t(TAG.GENERALIZED_TIME, '20500101000000Z'), '2050-01-01T00:00:00.000Z'],
    ['ok/GeneralizedTime 9999', t(TAG.GENERALIZED_TIME, '99991231235959Z'), '9999-12-31T23:59:59.000Z'],
  ])('%s', (_name, el, iso) => {
    expect(decodeTime(el).toISOString()).toBe(iso);
  });

  it.each([
    ['fail/not a time tag', t(TAG.OCTET_STRING, '20500101000000Z')],
    ['fail/UTCTime without seconds', t(TAG.UTC_TIME, '4912312359Z')],
    ['fail/UTCTime without Z', t(TAG.UTC_TIME, '491231235959')],
    ['fail/UTCTime with an offset', t(TAG.UTC_TIME, '491231235959+0100')],
    ['fail/UTCTime with a four-digit year', t(TAG.UTC_TIME, '20491231235959Z')],
    ['fail/GeneralizedTime with fractional seconds', t(TAG.GENERALIZED_TIME, '20500101000000.5Z')],
    ['fail/GeneralizedTime with a two-digit year', t(TAG.GENERALIZED_TIME, '500101000000Z')],
    ['fail/month 13', t(TAG.UTC_TIME, '491301000000Z')],
    ['fail/month 00', t(TAG.GENERALIZED_TIME, '20500001000000Z')],
    ['fail/February 30', t(TAG.UTC_TIME, '300230000000Z')],
    ['fail/February 29 in a common year', t(TAG.GENERALIZED_TIME, '21000229000000Z')],
    ['fail/hour 24', t(TAG.UTC_TIME, '301231240000Z')],
    ['fail/minute 60', t(TAG.UTC_TIME, '301231236000Z')],
    ['fail/second 60', t(TAG.UTC_TIME, '301231235960Z')],
  ])('%s', (_name, el) => {
    expect(errorCodeOf(() => decodeTime(el))).toBe('ERR_BAD_REQUEST');
  });
});

describe('named-bit BIT STRING (X.690 §11.2.2)', () => {
  it.each([
    ['ok/digitalSignature', [0], '03020780'],
    ['ok/digitalSignature + keyEncipherment', [0, 2], '030205a0'],
    ['ok/keyCertSign + cRLSign', [5, 6], '03020106'],
    ['ok/bit 7 leaves no unused bits', [7], '03020001'],
    ['ok/decipherOnly needs a second octet', [8], '0303070080'],
    ['ok/order does not matter', [6, 5], '03020106'],
  ])('%s drops trailing zero bits', (_name, bits, expected) => {
    expect(hex(namedBits(bits))).toBe(expected);
  });

  describeWithTool('openssl', 'against openssl asn1parse -genstr', () => {
    it.each([
      ['ok/digitalSignature', [0]],
      ['ok/digitalSignature + keyEncipherment', [0, 2]],
      ['ok/keyCertSign + cRLSign', [5, 6]],
      ['ok/decipherOnly', [8]],
    ])('%s matches openssl', (_name, bits) => {
      expect(hex(namedBits(bits))).toBe(opensslDer(`FORMAT:BITLIST,BITSTRING:${bits.join(',')}`));
    });
  });
});

describe('DER reader on arbitrary input (property)', () => {
  /** Walks every element as Baton's parsers would: children of constructed ones, OIDs, times. */
  function walk(el: Tlv, depth = 0): void {
    if (el.tag & 0x20) {
      for (const c of children(el, 'DER', depth)) walk(c, depth + 1);
    } else if (el.tag === TAG.OID) {
      decodeOid(el.value);
    } else if (el.tag === TAG.UTC_TIME || el.tag === TAG.GENERALIZED_TIME) {
      decodeTime(el);
    }
  }

  const onlyBatonErrors = (input: Uint8Array): void => {
    try {
      walk(readWhole(Buffer.from(input)));
    } catch (e) {
      if (!(e instanceof BatonError) || e.code !== 'ERR_BAD_REQUEST') throw e;
    }
  };

  it('random bytes never throw anything but ERR_BAD_REQUEST', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), onlyBatonErrors), { numRuns: 2000 });
  });

  /** Well-formed DER trees: SEQUENCE/SET/[n] of OCTET STRING/INTEGER/OID leaves. */
  const tree = fc.letrec<{ node: Buffer }>((tie) => ({
    node: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.uint8Array({ maxLength: 300 }).map((b) => tlv(TAG.OCTET_STRING, b)),
      fc.bigInt({ min: 0n, max: 2n ** 160n }).map((n) => int(n)),
      fc
        .tuple(
          fc.integer({ min: 0, max: 2 }),
          fc.array(fc.bigInt({ min: 0n, max: 2n ** 70n }), { maxLength: 6 }),
        )
        .map(([a, rest]) => oid([a, 39, ...rest].join('.'))),
      fc
        .tuple(fc.constantFrom(TAG.SEQUENCE, TAG.SET, 0xa0, 0xa3), fc.array(tie('node'), { maxLength: 5 }))
        .map(([tag, kids]) => tlv(tag, ...kids)),
    ),
  })).node;

  it('well-formed trees are read back exactly', () => {
    const rebuild = (el: Tlv): Buffer => (el.tag & 0x20 ? tlv(el.tag, ...children(el).map(rebuild)) : el.raw);
    fc.assert(
      fc.property(tree, (der) => {
        expect(rebuild(readWhole(der)).equals(der)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('truncated, extended or corrupted well-formed trees never throw anything but ERR_BAD_REQUEST', () => {
    const mutated = fc
      .tuple(tree, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('truncate', 'flip', 'append'))
      .map(([der, at, byte, how]) => {
        const i = at % der.length;
        if (how === 'truncate') return der.subarray(0, i);
        if (how === 'append') return Buffer.concat([der, Buffer.from([byte])]);
        const copy = Buffer.from(der);
        copy[i] = byte;
        return copy;
      });
    fc.assert(fc.property(mutated, onlyBatonErrors), { numRuns: 1000 });
  });
});
