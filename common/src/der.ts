/**
 * A minimal DER encoder (X.690 §10), the one Baton has: the CA builds certificates, CRLs and OCSP
 * responses from pre-encoded parts with it (services/ca/src/pki), and the node builds its PKCS#10
 * requests with it (csr.ts). Pre-encoded parts instead of an object model: the generic ASN.1 layer
 * costs milliseconds per certificate and grows faster than linearly on large CRLs, while
 * concatenating buffers costs microseconds.
 *
 * common/ is shared by services/ and clients/ and imports neither (test/unit/architecture).
 */

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  TELETEX_STRING: 0x14,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  UNIVERSAL_STRING: 0x1c,
  BMP_STRING: 0x1e,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Octets of a DER length (X.690 §8.1.3: short form below 128, else 0x80|n then n octets). */
function lengthSize(len: number): number {
  if (len < 0x80) return 1;
  let n = 1;
  for (let v = len; v > 0xff; v = Math.floor(v / 256)) n++;
  return 1 + n;
}

/**
 * One TLV. `content` may be several buffers, concatenated without an intermediate copy. The header
 * is written straight into the output: a certificate is a few dozen TLVs, built per request.
 */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  let len = 0;
  for (const c of content) len += c.length;
  const head = lengthSize(len);
  const out = Buffer.allocUnsafe(1 + head + len);
  out[0] = tag;
  let off = 1;
  if (head === 1) out[off++] = len;
  else {
    out[off++] = 0x80 | (head - 1);
    for (let i = head - 2; i >= 0; i--) out[off++] = Math.floor(len / 256 ** i) & 0xff;
  }
  for (const c of content) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

export const seq = (...items: Uint8Array[]): Buffer => tlv(TAG.SEQUENCE, ...items);
export const set = (...items: Uint8Array[]): Buffer => tlv(TAG.SET, ...items);
export const octets = (b: Uint8Array): Buffer => tlv(TAG.OCTET_STRING, b);
export const nullValue = (): Buffer => Buffer.from([TAG.NULL, 0]);
export const bool = (v: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, v ? 0xff : 0]);
/** Context-specific tag [n]: constructed (explicit or constructed implicit) or primitive (implicit). */
export const ctx = (n: number, constructed: boolean, ...content: Uint8Array[]): Buffer =>
  tlv((constructed ? 0xa0 : 0x80) | n, ...content);

/** BIT STRING with no unused bits (keys, signatures). */
export const bitString = (b: Uint8Array): Buffer => tlv(TAG.BIT_STRING, Buffer.from([0]), b);

/**
 * A named-bit BIT STRING (keyUsage): DER requires trailing zero bits to be removed
 * (X.690 §11.2.2), so the unused-bits count depends on the highest bit set.
 */
export function namedBits(bits: number[]): Buffer {
  const max = Math.max(...bits);
  const nBytes = Math.floor(max / 8) + 1;
  const bytes = Buffer.alloc(nBytes);
  for (const b of bits) bytes[Math.floor(b / 8)]! |= 0x80 >> (b % 8);
  const unused = 7 - (max % 8);
  return tlv(TAG.BIT_STRING, Buffer.from([unused]), bytes);
}

const ZERO = Buffer.from([0]);

/**
 * A non-negative INTEGER from big-endian magnitude bytes. X.690 §8.3.2 wants the shortest two's
 * complement form: leading zero octets go, and a 0x00 comes back when the high bit is set; an empty
 * magnitude is 0 (an INTEGER has at least one content octet).
 */
export function uintBytes(magnitude: Uint8Array): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.length === 0 ? ZERO : magnitude.subarray(i);
  return m[0]! & 0x80 ? tlv(TAG.INTEGER, ZERO, m) : tlv(TAG.INTEGER, m);
}

export function int(n: number | bigint): Buffer {
  let v = BigInt(n);
  if (v < 0n) throw new RangeError('negative integers are not used by Baton');
  const bytes: number[] = [];
  do {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  return uintBytes(Buffer.from(bytes));
}

export function enumerated(n: number): Buffer {
  return tlv(TAG.ENUMERATED, int(n).subarray(2));
}

/**
 * OBJECT IDENTIFIERs are program constants (Baton never encodes one taken from input), so each is
 * encoded once: a leaf's extensions name about ten of them. The cache is bounded all the same.
 */
const OID_CACHE = new Map<string, Buffer>();
const OID_CACHE_MAX = 512;

export function oid(dotted: string): Buffer {
  const cached = OID_CACHE.get(dotted);
  if (cached) return cached;
  const encoded = encodeOid(dotted);
  if (OID_CACHE.size < OID_CACHE_MAX) OID_CACHE.set(dotted, encoded);
  return encoded;
}

function encodeOid(dotted: string): Buffer {
  const parts = dotted.split('.').map((p) => BigInt(p));
  if (parts.length < 2) throw new RangeError(`bad OID ${dotted}`);
  const body: number[] = [];
  const arcs = [parts[0]! * 40n + parts[1]!, ...parts.slice(2)];
  for (const arc of arcs) {
    const chunk: number[] = [];
    let v = arc;
    do {
      chunk.unshift(Number(v & 0x7fn));
      v >>= 7n;
    } while (v > 0n);
    for (let k = 0; k < chunk.length - 1; k++) chunk[k]! |= 0x80;
    body.push(...chunk);
  }
  return tlv(TAG.OID, Buffer.from(body));
}

export const utf8 = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
export const printable = (s: string): Buffer => tlv(TAG.PRINTABLE_STRING, Buffer.from(s, 'latin1'));
export const ia5 = (s: string): Buffer => tlv(TAG.IA5_STRING, Buffer.from(s, 'latin1'));

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/**
 * RFC 5280 §4.1.2.5: UTCTime for dates through 2049, GeneralizedTime from 2050 on, always in
 * Zulu time with seconds and no fractions.
 */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const rest = `${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${pad(y % 100)}${rest}`, 'latin1'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${pad(y, 4)}${rest}`, 'latin1'));
}

/** GeneralizedTime always (OCSP, RFC 6960 §4.2.2.1, and CRL entry fields from 2050). */
export function generalizedTime(d: Date): Buffer {
  const s = `${pad(d.getUTCFullYear(), 4)}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}Z`;
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(s, 'latin1'));
}

/** RFC 7468 §2: base64 in lines of 64 characters between the encapsulation boundaries. */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = (Buffer.isBuffer(der) ? der : Buffer.from(der.buffer, der.byteOffset, der.byteLength)).toString(
    'base64',
  );
  let body = b64.length === 0 ? '\n' : '';
  for (let i = 0; i < b64.length; i += 64) body += `${b64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}
