/**
 * The few DER encoders (X.690 §10) a PKCS#10 request needs. The client keeps its own copy rather
 * than importing the CA's encoder: clients/ ship to nodes on their own and must not depend on
 * services/.
 */

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** X.690 §8.1.3: short form below 128, else the minimal long form. */
function lengthBytes(len: number): Uint8Array {
  if (len < 0x80) return Uint8Array.of(len);
  const bytes: number[] = [];
  for (let n = len; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const head = lengthBytes(content.reduce((n, c) => n + c.length, 0));
  return Buffer.concat([Uint8Array.of(tag), head, ...content]);
}

export const seq = (...items: Uint8Array[]): Buffer => tlv(TAG.SEQUENCE, ...items);
export const set = (...items: Uint8Array[]): Buffer => tlv(TAG.SET, ...items);
/** Context-specific [n], constructed: the IMPLICIT SET OF attributes of RFC 2986 §4.1. */
export const ctxConstructed = (n: number, ...content: Uint8Array[]): Buffer => tlv(0xa0 | n, ...content);
/** BIT STRING with no unused bits (X.690 §8.6.2.2): keys and signatures are whole octets. */
export const bitString = (b: Uint8Array): Buffer => tlv(TAG.BIT_STRING, Uint8Array.of(0), b);
export const utf8 = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));

/**
 * A non-negative INTEGER from big-endian magnitude bytes. X.690 §8.3.2 wants the shortest two's
 * complement form: leading zero octets go, and one comes back when the high bit is set.
 */
export function uint(magnitude: Uint8Array): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.length === 0 ? Uint8Array.of(0) : magnitude.subarray(i);
  return m[0]! & 0x80 ? tlv(TAG.INTEGER, Uint8Array.of(0), m) : tlv(TAG.INTEGER, m);
}

/** X.690 §8.19: base-128 arcs, the first two folded into one. */
export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map((p) => BigInt(p));
  if (parts.length < 2) throw new RangeError(`bad OID ${dotted}`);
  const body: number[] = [];
  for (const arc of [parts[0]! * 40n + parts[1]!, ...parts.slice(2)]) {
    const chunk: number[] = [];
    let v = arc;
    do {
      chunk.unshift(Number(v & 0x7fn));
      v >>= 7n;
    } while (v > 0n);
    for (let k = 0; k < chunk.length - 1; k++) chunk[k]! |= 0x80;
    body.push(...chunk);
  }
  return tlv(TAG.OID, Uint8Array.from(body));
}

/** RFC 7468 §2: base64 in 64-character lines between BEGIN and END lines. */
export function toPem(label: string, der: Uint8Array): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}
