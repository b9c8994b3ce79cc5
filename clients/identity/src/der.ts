/**
 * A minimal DER reader (X.690 §8.1): just enough to walk a certificate to its subject and its
 * extensions. node:crypto gives subjectAltName as one comma-joined string whose escaping has changed
 * between versions (CVE-2021-44532: a DNS name could carry ", URI:…"), so the SVID checks count
 * URI SANs in the DER instead. The
 * client keeps its own reader rather than importing the CA's: clients/ must not depend on services/.
 */

export interface Tlv {
  tag: number;
  /** The content octets. */
  value: Buffer;
}

/** X.690 §8.1.2–8.1.3: one tag/length/value at `offset`; single-octet tags and definite lengths only (DER). */
function readAt(buf: Buffer, offset: number): { tlv: Tlv; next: number } {
  if (offset + 2 > buf.length) throw new RangeError('truncated DER');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new RangeError('multi-octet DER tags are not supported');
  let len = buf[offset + 1]!;
  let start = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    // X.690 §10.1: DER forbids the indefinite form; four length octets cover any certificate.
    if (n === 0 || n > 4 || start + n > buf.length) throw new RangeError('bad DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  const end = start + len;
  if (end > buf.length) throw new RangeError('truncated DER');
  return { tlv: { tag, value: buf.subarray(start, end) }, next: end };
}

/** The single element that makes up `buf`; trailing octets are an error. */
export function readOne(buf: Buffer): Tlv {
  const { tlv, next } = readAt(buf, 0);
  if (next !== buf.length) throw new RangeError('trailing octets after DER element');
  return tlv;
}

/** The elements of a constructed value (SEQUENCE, SET, or a constructed context tag). */
export function children(value: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let offset = 0; offset < value.length; ) {
    const { tlv, next } = readAt(value, offset);
    out.push(tlv);
    offset = next;
  }
  return out;
}

/** X.690 §8.19: an OBJECT IDENTIFIER's content octets in dotted form. */
export function decodeOid(value: Buffer): string {
  if (value.length === 0) throw new RangeError('empty OID');
  const first = value[0]!;
  const arcs: number[] = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  let n = 0;
  for (let i = 1; i < value.length; i++) {
    n = n * 128 + (value[i]! & 0x7f);
    if (!(value[i]! & 0x80)) {
      arcs.push(n);
      n = 0;
    }
  }
  return arcs.join('.');
}

export const TAG = {
  BOOLEAN: 0x01,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** The text of a DirectoryString (RFC 5280 §4.1.2.4), or undefined for a type it does not name. */
export function decodeString(t: Tlv): string | undefined {
  switch (t.tag) {
    case TAG.UTF8_STRING:
    case TAG.PRINTABLE_STRING:
    case TAG.IA5_STRING:
      return t.value.toString('utf8');
    case TAG.TELETEX_STRING:
      return t.value.toString('latin1');
    case TAG.BMP_STRING:
      return Buffer.from(t.value).swap16().toString('utf16le');
    default:
      return undefined;
  }
}
