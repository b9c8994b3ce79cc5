import { randomBytes } from 'node:crypto';
import type { Signer } from '../domain/ports';
import { bitString, ctx, int, seq, time, uintBytes } from './der';

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
export function randomSerial(): Buffer {
  const s = randomBytes(16);
  s[0] = (s[0]! & 0x7f) | 0x01;
  return s;
}
