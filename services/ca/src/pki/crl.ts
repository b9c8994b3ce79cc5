import { BatonError } from '../ground/errors';
import type { Signer } from '../ground/signer';
import { bitString, ctx, enumerated, int, seq, time, toPem } from '../../../../common/src/der';
import { authorityKeyIdentifier, extension } from './extensions';
import { OID } from './oids';

/**
 * RFC 5280 §5.3.1 CRLReason codes, keyed by the names the CLI and the API accept
 * (`--reason key-compromise`). Value 7 is unused by the RFC.
 */
export const REVOCATION_REASONS = {
  unspecified: 0,
  'key-compromise': 1,
  'ca-compromise': 2,
  'affiliation-changed': 3,
  superseded: 4,
  'cessation-of-operation': 5,
  'certificate-hold': 6,
  'remove-from-crl': 8,
  'privilege-withdrawn': 9,
  'aa-compromise': 10,
} as const;

export type RevocationReasonName = keyof typeof REVOCATION_REASONS;

const NAME_BY_CODE = new Map<number, RevocationReasonName>(
  Object.entries(REVOCATION_REASONS).map(([name, code]) => [code, name as RevocationReasonName]),
);

/** True for a code that may appear on a revocation: removeFromCRL (8) is for delta CRLs only (§5.3.1). */
export function isRevocationReason(code: number): boolean {
  return NAME_BY_CODE.has(code) && code !== REVOCATION_REASONS['remove-from-crl'];
}

export function revocationReasonName(code: number): RevocationReasonName | undefined {
  return NAME_BY_CODE.get(code);
}

/**
 * Parses a reason given by a user. The kebab-case names are canonical; the RFC's camelCase
 * spelling (`keyCompromise`) is accepted too, since that is what operators copy from RFC 5280.
 * Baton publishes no delta CRLs, so `remove-from-crl` is refused.
 */
export function parseRevocationReason(name: string): number {
  const wanted = name.toLowerCase().replace(/[-_]/g, '');
  for (const [key, code] of Object.entries(REVOCATION_REASONS)) {
    if (key.replace(/-/g, '') === wanted && isRevocationReason(code)) return code;
  }
  const allowed = Object.keys(REVOCATION_REASONS).filter((k) => k !== 'remove-from-crl');
  throw new BatonError(
    'ERR_BAD_REQUEST',
    // The input is not echoed: error messages never carry what the client sent.
    `reason: unknown revocation reason, use one of ${allowed.join(', ')}`,
  );
}

export interface CrlEntry {
  /** The certificate serial: its magnitude bytes, or the same as hex. */
  serial: Buffer | string;
  revokedAt: Date;
  /** An RFC 5280 §5.3.1 code; unspecified (0) or absent writes no reasonCode. */
  reason?: number;
}

export interface BuildCrlParams {
  issuer: { name: Buffer; keyId: Buffer; signer: Signer };
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: Iterable<CrlEntry>;
}

/** RFC 5280 §5.2.3: a cRLNumber is at most 20 octets; §4.1.2.2 bounds serials the same way. */
const MAX_INTEGER_OCTETS = 20;

/**
 * crlEntryExtensions with a non-critical reasonCode (§5.3.1), encoded once per code: with 100,000
 * entries, re-encoding the same 14 bytes per entry would cost more than the rest of the entry.
 */
const REASON_EXTENSIONS = new Map<number, Buffer>(
  [...NAME_BY_CODE.keys()]
    .filter((c) => c !== 0)
    .map((c) => [c, seq(extension(OID.reasonCode, false, enumerated(c)))]),
);

/** Nibble value of an ASCII hex digit, -1 for anything else. */
const NIBBLE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  NIBBLE[i.toString(16).charCodeAt(0)] = i;
  NIBBLE[i.toString(16).toUpperCase().charCodeAt(0)] = i;
}

/**
 * Where a serial's magnitude starts and how many octets it has. DER INTEGERs are minimal
 * (X.690 §8.3.2): leading zero octets are dropped and one 0x00 goes first when the high bit of the
 * magnitude is set, so the value stays positive. Entries are written in two passes (size, then
 * bytes) straight from the caller's hex or bytes; the per-entry layout lives in typed arrays, so a
 * large CRL allocates no per-entry object or Buffer.
 */
class Layouts {
  count = 0;
  /** First significant nibble (hex) or octet (bytes). */
  start = new Int32Array(1024);
  /** INTEGER content octets, sign octet included. */
  intLen = new Uint8Array(1024);
  /** Whether that content starts with a 0x00 sign octet. */
  pad = new Uint8Array(1024);
  /** Content octets of the entry SEQUENCE. */
  entryLen = new Uint8Array(1024);

  /** Records the serial's layout; returns its INTEGER content length. */
  push(serial: Buffer | string): number {
    if (this.count === this.start.length) this.grow();
    const i = this.count++;
    let start = 0;
    let octets: number;
    let pad: boolean;
    if (serial.length === 0) throw new RangeError('a CRL entry serial must not be empty');
    if (typeof serial === 'string') {
      // Only the leading zeros are read here; writeSerial checks every digit as it decodes it.
      while (start < serial.length - 1 && serial.charCodeAt(start) === 0x30) start++;
      const nibbles = serial.length - start;
      octets = (nibbles + 1) >> 1;
      const first = serial.charCodeAt(start);
      // An odd nibble count puts a lone nibble (< 8) in the first octet: never a sign problem.
      pad = nibbles % 2 === 0 && first < 128 && NIBBLE[first]! >= 8;
    } else {
      while (start < serial.length - 1 && serial[start] === 0) start++;
      octets = serial.length - start;
      pad = (serial[start]! & 0x80) !== 0;
    }
    if (octets > MAX_INTEGER_OCTETS)
      throw new RangeError(`a CRL entry serial must not exceed ${MAX_INTEGER_OCTETS} octets`);
    this.start[i] = start;
    this.pad[i] = pad ? 1 : 0;
    this.intLen[i] = octets + (pad ? 1 : 0);
    return this.intLen[i]!;
  }

  private grow(): void {
    this.start = widen(this.start);
    this.intLen = widen(this.intLen);
    this.pad = widen(this.pad);
    this.entryLen = widen(this.entryLen);
  }
}

function widen<A extends Int32Array | Uint8Array>(a: A): A {
  const b = new (a.constructor as new (n: number) => A)(a.length * 2);
  b.set(a);
  return b;
}

function writeSerial(out: Buffer, off: number, serial: Buffer | string, l: Layouts, idx: number): number {
  out[off++] = 0x02;
  out[off++] = l.intLen[idx]!;
  if (l.pad[idx]) out[off++] = 0;
  const start = l.start[idx]!;
  if (typeof serial !== 'string') {
    for (let i = start; i < serial.length; i++) out[off++] = serial[i]!;
    return off;
  }
  // A non-hex character decodes to -1 (codes past 127 read undefined, hence `?? -1`): OR-ing every
  // nibble into `bad` makes it negative if there was any.
  let bad = 0;
  let i = start;
  if ((serial.length - i) % 2 === 1) {
    const v = NIBBLE[serial.charCodeAt(i++)] ?? -1;
    bad |= v;
    out[off++] = v;
  }
  for (; i < serial.length; i += 2) {
    const hi = NIBBLE[serial.charCodeAt(i)] ?? -1;
    const lo = NIBBLE[serial.charCodeAt(i + 1)] ?? -1;
    bad |= hi | lo;
    out[off++] = (hi << 4) | lo;
  }
  if (bad < 0) throw new RangeError('a CRL entry serial must be hex');
  return off;
}

/** Validates a date and returns its UTC year. */
function checkedYear(d: Date, what: string): number {
  const y = d instanceof Date ? d.getUTCFullYear() : Number.NaN;
  if (!(y >= 0 && y <= 9999)) throw new RangeError(`${what} must be a valid date within years 0000-9999`);
  return y;
}

/** §5.1.2.4 via §5.1.2.6: UTCTime (13 octets) for 1950–2049, GeneralizedTime (15) otherwise. */
const isUtcYear = (y: number): boolean => y >= 1950 && y < 2050;

const digit2 = (out: Buffer, off: number, v: number): void => {
  out[off] = 0x30 + ((v / 10) | 0);
  out[off + 1] = 0x30 + (v % 10);
};

/**
 * Writes revocationDate exactly as der.time() would (seconds, Zulu, no fraction), directly into the
 * output: formatting strings per entry was the single largest cost of a 100,000-entry CRL.
 */
function writeTime(out: Buffer, off: number, d: Date): number {
  const y = d.getUTCFullYear();
  if (isUtcYear(y)) {
    out[off++] = 0x17;
    out[off++] = 13;
  } else {
    out[off++] = 0x18;
    out[off++] = 15;
    digit2(out, off, (y / 100) | 0);
    off += 2;
  }
  digit2(out, off, y % 100);
  digit2(out, off + 2, d.getUTCMonth() + 1);
  digit2(out, off + 4, d.getUTCDate());
  digit2(out, off + 6, d.getUTCHours());
  digit2(out, off + 8, d.getUTCMinutes());
  digit2(out, off + 10, d.getUTCSeconds());
  out[off + 12] = 0x5a; // 'Z'
  return off + 13;
}

function headerSize(len: number): number {
  if (len < 0x80) return 2;
  let n = 0;
  for (let v = len; v > 0; v = Math.floor(v / 256)) n++;
  return 2 + n;
}

/** Writes tag and DER length (X.690 §8.1.3, definite form, minimal) and returns the new offset. */
function writeHeader(out: Buffer, off: number, tag: number, len: number): number {
  out[off++] = tag;
  if (len < 0x80) {
    out[off++] = len;
    return off;
  }
  const n = headerSize(len) - 2;
  out[off++] = 0x80 | n;
  for (let i = n - 1; i >= 0; i--) out[off++] = Math.floor(len / 256 ** i) & 0xff;
  return off;
}

/**
 * revokedCertificates ::= SEQUENCE OF SEQUENCE { userCertificate, revocationDate,
 * crlEntryExtensions OPTIONAL } (§5.1). A first pass validates and sizes every entry, a second
 * writes them into one pre-sized buffer: linear in the entry count, one allocation. Returns
 * undefined when there are no entries.
 */
function encodeRevoked(entries: Iterable<CrlEntry>): Buffer | undefined {
  // The fields are copied out, not the entry objects: an iterator may reuse one object per row.
  const serials: (Buffer | string)[] = [];
  const dates: Date[] = [];
  const reasons: number[] = [];
  const layouts = new Layouts();
  let total = 0;
  for (const e of entries) {
    const intLen = layouts.push(e.serial);
    const year = checkedYear(e.revokedAt, 'revocationDate');
    const reason = e.reason ?? 0;
    if (!isRevocationReason(reason)) throw new RangeError(`invalid CRL reason code ${reason}`);
    // At most 2+21 + 2+15 + 14 octets: an entry's length always fits its one length octet.
    const length = 2 + intLen + (isUtcYear(year) ? 15 : 17) + (REASON_EXTENSIONS.get(reason)?.length ?? 0);
    layouts.entryLen[layouts.count - 1] = length;
    serials.push(e.serial);
    dates.push(e.revokedAt);
    reasons.push(reason);
    total += 2 + length;
  }
  if (serials.length === 0) return undefined;
  const out = Buffer.allocUnsafe(headerSize(total) + total);
  let off = writeHeader(out, 0, 0x30, total);
  for (let i = 0; i < serials.length; i++) {
    out[off++] = 0x30;
    out[off++] = layouts.entryLen[i]!;
    off = writeSerial(out, off, serials[i]!, layouts, i);
    off = writeTime(out, off, dates[i]!);
    const ext = reasons[i] ? REASON_EXTENSIONS.get(reasons[i]!) : undefined;
    if (ext) for (let k = 0; k < ext.length; k++) out[off++] = ext[k]!;
  }
  if (off !== out.length) throw new Error(`CRL size mismatch: wrote ${off} of ${out.length} octets`);
  return out;
}

const V2 = int(1);

/**
 * Builds and signs an RFC 5280 §5 v2 CRL. Baton issues full CRLs only (no delta CRLs, no indirect
 * CRLs), one per signing CA, so the only CRL extensions are AKI (§5.2.1, MUST) and cRLNumber
 * (§5.2.3, MUST), both non-critical.
 */
export function buildCrl(p: BuildCrlParams): Buffer {
  checkedYear(p.thisUpdate, 'thisUpdate');
  checkedYear(p.nextUpdate, 'nextUpdate');
  // §5.1.2.5: nextUpdate is the date by which the next CRL will be issued; it cannot precede this one.
  if (p.nextUpdate.getTime() <= p.thisUpdate.getTime())
    throw new RangeError('nextUpdate must be after thisUpdate');
  if (p.crlNumber < 0n) throw new RangeError('crlNumber must not be negative');
  const crlNumber = int(p.crlNumber);
  if (crlNumber.length - 2 > MAX_INTEGER_OCTETS)
    throw new RangeError(`crlNumber must not exceed ${MAX_INTEGER_OCTETS} octets`);

  const revoked = encodeRevoked(p.entries);
  const parts: Buffer[] = [
    V2,
    p.issuer.signer.algorithmIdentifier,
    p.issuer.name,
    time(p.thisUpdate),
    time(p.nextUpdate),
  ];
  // §5.1.2.6: when there are no revoked certificates the list MUST be absent, not empty.
  if (revoked) parts.push(revoked);
  parts.push(
    ctx(0, true, seq(authorityKeyIdentifier(p.issuer.keyId), extension(OID.cRLNumber, false, crlNumber))),
  );
  const tbs = seq(...parts);
  // §5.1.1.2: the outer signatureAlgorithm repeats the TBSCertList signature field.
  return seq(tbs, p.issuer.signer.algorithmIdentifier, bitString(p.issuer.signer.sign(tbs)));
}

export function crlToPem(der: Uint8Array): string {
  return toPem('X509 CRL', der);
}
