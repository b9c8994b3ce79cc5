/**
 * A strict, bounds-checked DER reader, the one Baton has: the CA parses untrusted input with it
 * (CSRs, OCSP requests, x509pop evidence; services/ca/src/pki/der-reader.ts), the identity library
 * reads the URI SANs and subject of a peer's certificate and the CRLs it is given
 * (clients/identity/src/svid.ts, crl.ts). It only walks TLVs: every length is checked against its
 * parent, indefinite lengths and non-minimal lengths are refused (X.690 §10.1), nesting depth is
 * bounded.
 *
 * Every refusal is a DerError. common/ imports neither services/ nor clients/, so it cannot throw
 * their errors: each side translates (the CA into BatonError ERR_BAD_REQUEST with the same message,
 * the identity library into IdentityError).
 */

/** Malformed DER or PEM; the message says what was being read and why it was refused. */
export class DerError extends Error {
  override readonly name = 'DerError';
}

function malformed(what: string, why: string): never {
  throw new DerError(`malformed ${what}: ${why}`);
}

export interface Tlv {
  tag: number;
  /** The whole element, header included (for signature checks over the exact bytes). */
  raw: Buffer;
  /** The content octets. */
  value: Buffer;
}

const MAX_DEPTH = 32;

export function readTlv(buf: Buffer, offset = 0, what = 'DER'): Tlv {
  if (offset + 2 > buf.length) malformed(what, 'truncated header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) malformed(what, 'multi-byte tags are not used here');
  let len = buf[offset + 1]!;
  let head = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) malformed(what, 'indefinite length');
    if (n > 4) malformed(what, 'length too large');
    if (offset + 2 + n > buf.length) malformed(what, 'truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[offset + 2 + i]!;
    if (len < 0x80 || (n > 1 && buf[offset + 2] === 0)) malformed(what, 'non-minimal length');
    head += n;
  }
  const end = offset + head + len;
  if (end > buf.length) malformed(what, 'length exceeds input');
  return { tag, raw: buf.subarray(offset, end), value: buf.subarray(offset + head, end) };
}

/** The children of a constructed element, in order. */
export function children(el: Tlv, what = 'DER', depth = 0): Tlv[] {
  if (depth > MAX_DEPTH) malformed(what, 'nesting too deep');
  if ((el.tag & 0x20) === 0) malformed(what, 'expected a constructed element');
  const out: Tlv[] = [];
  let off = 0;
  while (off < el.value.length) {
    const c = readTlv(el.value, off, what);
    out.push(c);
    off += c.raw.length;
  }
  return out;
}

/** The elements of a concatenation of DER elements (certificates end to end, as the Workload API sends them). */
export function readConcatenated(buf: Buffer, what = 'DER'): Tlv[] {
  const out: Tlv[] = [];
  for (let off = 0; off < buf.length; ) {
    const el = readTlv(buf, off, what);
    out.push(el);
    off += el.raw.length;
  }
  return out;
}

/** Reads exactly one element spanning the whole buffer. */
export function readWhole(buf: Buffer, what = 'DER'): Tlv {
  const el = readTlv(buf, 0, what);
  if (el.raw.length !== buf.length) malformed(what, 'trailing data');
  return el;
}

export function decodeOid(value: Buffer): string {
  if (value.length === 0 || value.length > 64) throw new DerError('malformed OID');
  return decodeOidSmall(value) ?? decodeOidBig(value);
}

/** Arcs below 2^46 in plain numbers (every OID Baton meets); undefined when one is larger. */
function decodeOidSmall(value: Buffer): string | undefined {
  const arcs: number[] = [];
  let v = 0;
  for (let i = 0; i < value.length; i++) {
    const b = value[i]!;
    if (v === 0 && b === 0x80) throw new DerError('malformed OID');
    if (v >= 2 ** 46) return undefined;
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(v);
      v = 0;
    } else if (i === value.length - 1) {
      throw new DerError('malformed OID');
    }
  }
  const first = arcs[0]!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

function decodeOidBig(value: Buffer): string {
  const arcs: bigint[] = [];
  let v = 0n;
  for (let i = 0; i < value.length; i++) {
    const b = value[i]!;
    if (v === 0n && b === 0x80) throw new DerError('malformed OID');
    v = (v << 7n) | BigInt(b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(v);
      v = 0n;
    } else if (i === value.length - 1) {
      throw new DerError('malformed OID');
    }
  }
  const first = arcs[0]!;
  const head = first < 80n ? [first / 40n, first % 40n] : [2n, first - 80n];
  return [...head, ...arcs.slice(1)].join('.');
}

/** One compiled pattern per label (labels are program constants, so the map stays tiny). */
const PEM_PATTERNS = new Map<string, RegExp>();

function pemPattern(label: string): RegExp {
  let re = PEM_PATTERNS.get(label);
  if (!re) {
    re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`);
    if (PEM_PATTERNS.size < 32) PEM_PATTERNS.set(label, re);
  }
  return re;
}

export function fromPem(pem: string, label: string): Buffer {
  const m = pemPattern(label).exec(pem);
  if (!m) throw new DerError(`expected a PEM ${label}`);
  // The pattern admits only base64 and whitespace, and Node's base64 decoder skips whitespace.
  return Buffer.from(m[1]!, 'base64');
}

export function allPem(pem: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`, 'g');
  return [...pem.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}
