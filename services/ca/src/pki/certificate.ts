import { randomBytes } from 'node:crypto';
import type { Signer } from '../ground/signer';
import { bitString, ctx, int, seq, time, uintBytes } from '../../../../common/src/der';

/**
 * The parts of a certificate that depend only on the issuing CA, encoded once per CA
 * (issuer name, signature algorithm, AKI, CRL distribution point, AIA). Issuing a leaf then
 * concatenates a few per-certificate fields and signs.
 */
export interface IssuerTemplate {
  issuerName: Buffer;
  signer: Signer;
  /** Extensions appended to every leaf of this issuer (AKI, CRL DP, AIA), pre-encoded. */
  issuerExtensions: Buffer[];
}

export interface TbsParams {
  serial: Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectName: Buffer;
  spki: Buffer;
  extensions: Buffer[];
}

const V3 = ctx(0, true, int(2));

/** RFC 5280 §4.1: Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }. */
export function buildCertificate(issuer: IssuerTemplate, p: TbsParams): Buffer {
  const tbs = seq(
    V3,
    uintBytes(p.serial),
    issuer.signer.algorithmIdentifier,
    issuer.issuerName,
    seq(time(p.notBefore), time(p.notAfter)),
    p.subjectName,
    p.spki,
    ctx(3, true, seq(...p.extensions, ...issuer.issuerExtensions)),
  );
  return seq(tbs, issuer.signer.algorithmIdentifier, bitString(issuer.signer.sign(tbs)));
}

/**
 * RFC 5280 §4.1.2.2 and CA/B BR §7.1: a positive serial of at most 20 octets with at least 64 bits
 * of CSPRNG output. Baton uses 128 random bits with the top bit cleared (so the INTEGER needs no
 * leading zero) and never zero.
 */
const SERIAL_BYTES = 16;
/** CSPRNG output drawn 4 KiB at a time: one call per 256 serials instead of one per serial. */
let pool = Buffer.alloc(0);
let poolOffset = 0;

export function randomSerial(): Buffer {
  if (poolOffset + SERIAL_BYTES > pool.length) {
    pool = randomBytes(4096);
    poolOffset = 0;
  }
  // A copy: the pool's bytes are never handed out twice nor shared with the caller.
  const s = Buffer.from(pool.subarray(poolOffset, poolOffset + SERIAL_BYTES));
  pool.fill(0, poolOffset, poolOffset + SERIAL_BYTES);
  poolOffset += SERIAL_BYTES;
  s[0] = (s[0]! & 0x7f) | 0x01;
  return s;
}
