import { BatonError } from '../ground/errors';

/**
 * A strict, bounds-checked DER reader for the few structures Baton parses from untrusted input
 * (CSRs, OCSP requests). It only walks TLVs: every length is checked against its parent, indefinite
 * lengths and non-minimal lengths are refused (X.690 §10.1), nesting depth is bounded.
 */
export interface Tlv {
  tag: number;
  /** The whole element, header included (for signature checks over the exact bytes). */
  raw: Buffer;
  /** The content octets. */
  value: Buffer;
}

const MAX_DEPTH = 32;

export function readTlv(buf: Buffer, offset = 0, what = 'DER'): Tlv {
  const fail = (why: string): never => {
    throw new BatonError('ERR_BAD_REQUEST', `malformed ${what}: ${why}`);
  };
  if (offset + 2 > buf.length) fail('truncated header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) fail('multi-byte tags are not used here');
  let len = buf[offset + 1]!;
  let head = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) fail('indefinite length');
    if (n > 4) fail('length too large');
    if (offset + 2 + n > buf.length) fail('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[offset + 2 + i]!;
    if (len < 0x80 || (n > 1 && buf[offset + 2] === 0)) fail('non-minimal length');
    head += n;
  }
  const end = offset + head + len;
  if (end > buf.length) fail('length exceeds input');
  return { tag, raw: buf.subarray(offset, end), value: buf.subarray(offset + head, end) };
}

/** The children of a constructed element, in order. */
export function children(el: Tlv, what = 'DER', depth = 0): Tlv[] {
  if (depth > MAX_DEPTH) throw new BatonError('ERR_BAD_REQUEST', `malformed ${what}: nesting too deep`);
  if ((el.tag & 0x20) === 0)
    throw new BatonError('ERR_BAD_REQUEST', `malformed ${what}: expected a constructed element`);
  const out: Tlv[] = [];
  let off = 0;
  while (off < el.value.length) {
    const c = readTlv(el.value, off, what);
    out.push(c);
    off += c.raw.length;
  }
  return out;
}

/** Reads exactly one element spanning the whole buffer. */
export function readWhole(buf: Buffer, what = 'DER'): Tlv {
  const el = readTlv(buf, 0, what);
  if (el.raw.length !== buf.length)
    throw new BatonError('ERR_BAD_REQUEST', `malformed ${what}: trailing data`);
  return el;
}

export function decodeOid(value: Buffer): string {
  if (value.length === 0 || value.length > 64) throw new BatonError('ERR_BAD_REQUEST', 'malformed OID');
  return decodeOidSmall(value) ?? decodeOidBig(value);
}

/** Arcs below 2^46 in plain numbers (every OID Baton meets); undefined when one is larger. */
function decodeOidSmall(value: Buffer): string | undefined {
  const arcs: number[] = [];
  let v = 0;
  for (let i = 0; i < value.length; i++) {
    const b = value[i]!;
    if (v === 0 && b === 0x80) throw new BatonError('ERR_BAD_REQUEST', 'malformed OID');
    if (v >= 2 ** 46) return undefined;
    v = v * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(v);
      v = 0;
    } else if (i === value.length - 1) {
      throw new BatonError('ERR_BAD_REQUEST', 'malformed OID');
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
    if (v === 0n && b === 0x80) throw new BatonError('ERR_BAD_REQUEST', 'malformed OID');
    v = (v << 7n) | BigInt(b & 0x7f);
    if ((b & 0x80) === 0) {
      arcs.push(v);
      v = 0n;
    } else if (i === value.length - 1) {
      throw new BatonError('ERR_BAD_REQUEST', 'malformed OID');
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
  if (!m) throw new BatonError('ERR_BAD_REQUEST', `expected a PEM ${label}`);
  // The pattern admits only base64 and whitespace, and Node's base64 decoder skips whitespace.
  return Buffer.from(m[1]!, 'base64');
}

export function allPem(pem: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`, 'g');
  return [...pem.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}
