import * as common from '../../../common/src/der-reader';
import { TAG, int, oid, seq, tlv, uintBytes } from '../../../common/src/der';
import { BatonError } from '../../../services/ca/src/ground/errors';
import * as pki from '../../../services/ca/src/pki/der-reader';

/**
 * common/ has the one DER reader; it throws DerError (it may not import services/). The CA reads
 * through pki/der-reader.ts, which must answer exactly as before: BatonError ERR_BAD_REQUEST with the
 * reader's message. The reader's own cases are in test/unit/pki/der.test.ts.
 */

const bytes = (...b: number[]): Buffer => Buffer.from(b);

/** What `fn` throws: class name, code (if any) and message. */
function thrown(fn: () => unknown): { name: string; code?: string; message: string } {
  try {
    fn();
  } catch (e) {
    const err = e as Error & { code?: string };
    return { name: err.constructor.name, code: err.code, message: err.message };
  }
  throw new Error('no error');
}

describe('common DER reader errors, and the CA translation of them', () => {
  it.each([
    [
      'fail/readTlv truncated',
      (r: typeof common) => r.readTlv(bytes(0x30), 0, 'CSR'),
      'malformed CSR: truncated header',
    ],
    [
      'fail/readWhole trailing data',
      (r: typeof common) => r.readWhole(bytes(5, 0, 0), 'OCSP request'),
      'malformed OCSP request: trailing data',
    ],
    [
      'fail/readWhole non-minimal length',
      (r: typeof common) => r.readWhole(bytes(0x04, 0x81, 0x05, 1, 2, 3, 4, 5)),
      'malformed DER: non-minimal length',
    ],
    [
      'fail/children of a primitive',
      (r: typeof common) => r.children(r.readWhole(bytes(0x04, 0x01, 0x00)), 'CSR'),
      'malformed CSR: expected a constructed element',
    ],
    [
      'fail/children too deep',
      (r: typeof common) => r.children(r.readWhole(seq()), 'DER', 33),
      'malformed DER: nesting too deep',
    ],
    ['fail/decodeOid empty', (r: typeof common) => r.decodeOid(bytes()), 'malformed OID'],
    ['fail/decodeOid unterminated', (r: typeof common) => r.decodeOid(bytes(0x2a, 0x86)), 'malformed OID'],
    [
      'fail/fromPem without a block',
      (r: typeof common) => r.fromPem('nothing', 'CERTIFICATE'),
      'expected a PEM CERTIFICATE',
    ],
  ])('%s', (_name, call, message) => {
    expect(thrown(() => call(common))).toEqual({ name: 'DerError', code: undefined, message });
    expect(() => call(common)).toThrow(common.DerError);
    const translated = thrown(() => call(pki as unknown as typeof common));
    expect(translated).toEqual({ name: 'BatonError', code: 'ERR_BAD_REQUEST', message });
    expect(() => call(pki as unknown as typeof common)).toThrow(BatonError);
  });

  it('ok/the CA reader returns what the common reader returns', () => {
    const der = seq(int(5), oid('2.5.4.3'), tlv(TAG.OCTET_STRING, Buffer.alloc(200)));
    const a = common.children(common.readWhole(der));
    const b = pki.children(pki.readWhole(der));
    expect(b).toEqual(a);
    expect(pki.decodeOid(b[1]!.value)).toBe('2.5.4.3');
    const pem = `-----BEGIN X-----\n${der.toString('base64')}\n-----END X-----\n`;
    expect(pki.fromPem(pem, 'X').equals(der)).toBe(true);
    expect(pki.allPem(pem + pem, 'X')).toEqual([der, der]);
  });

  it('ok/an empty INTEGER magnitude encodes 0 (an INTEGER has one content octet at least)', () => {
    expect(uintBytes(bytes()).toString('hex')).toBe('020100');
    expect(uintBytes(bytes(0, 0, 0x80)).toString('hex')).toBe('02020080');
  });
});

describe('readConcatenated', () => {
  it('ok/splits elements written end to end, in order; an empty buffer is none', () => {
    const a = seq(int(1));
    const b = seq(int(2), int(3));
    expect(common.readConcatenated(Buffer.concat([a, b])).map((e) => e.raw)).toEqual([a, b]);
    expect(common.readConcatenated(Buffer.alloc(0))).toEqual([]);
  });

  it('fail/a truncated last element is a DerError', () => {
    const a = seq(int(1));
    expect(() => common.readConcatenated(Buffer.concat([a, a.subarray(0, a.length - 1)]), 'chain')).toThrow(
      common.DerError,
    );
  });
});
