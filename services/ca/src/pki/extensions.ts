import { isIP } from 'node:net';
import { bool, ctx, ia5, int, namedBits, octets, oid, seq } from '../../../../common/src/der';
import { OID } from './oids';

/** RFC 5280 §4.1: Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
export function extension(id: string, critical: boolean, value: Uint8Array): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

/**
 * Extensions whose value depends only on their arguments (basicConstraints, keyUsage,
 * extKeyUsage) are encoded once per distinct argument list: every leaf carries the same three.
 * Callers only concatenate the result, never write into it.
 */
const CONSTANT_EXTENSIONS = new Map<string, Buffer>();

function memo(key: string, encode: () => Buffer): Buffer {
  let der = CONSTANT_EXTENSIONS.get(key);
  if (!der) {
    der = encode();
    if (CONSTANT_EXTENSIONS.size < 64) CONSTANT_EXTENSIONS.set(key, der);
  }
  return der;
}

/** RFC 5280 §4.2.1.9. For an end entity cA is FALSE, which DER encodes as an empty SEQUENCE. */
export function basicConstraints(ca: boolean, pathLen?: number): Buffer {
  return memo(`bc:${ca}:${pathLen}`, () => encodeBasicConstraints(ca, pathLen));
}

function encodeBasicConstraints(ca: boolean, pathLen?: number): Buffer {
  const parts: Buffer[] = [];
  if (ca) parts.push(bool(true));
  if (ca && pathLen !== undefined) parts.push(int(pathLen));
  return extension(OID.basicConstraints, true, seq(...parts));
}

export const KeyUsageBit = {
  digitalSignature: 0,
  keyEncipherment: 2,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

/** RFC 5280 §4.2.1.3: conforming CAs mark keyUsage critical. */
export function keyUsage(bits: number[]): Buffer {
  return memo(`ku:${bits.join(',')}`, () => extension(OID.keyUsage, true, namedBits(bits)));
}

export function extKeyUsage(purposes: string[]): Buffer {
  return memo(`eku:${purposes.join(',')}`, () =>
    extension(OID.extKeyUsage, false, seq(...purposes.map(oid))),
  );
}

export function subjectKeyIdentifier(keyId: Uint8Array): Buffer {
  return extension(OID.subjectKeyIdentifier, false, octets(keyId));
}

/** RFC 5280 §4.2.1.1: keyIdentifier [0] IMPLICIT OCTET STRING. */
export function authorityKeyIdentifier(keyId: Uint8Array): Buffer {
  return extension(OID.authorityKeyIdentifier, false, seq(ctx(0, false, keyId)));
}

export interface AltNames {
  uris?: string[];
  dns?: string[];
  ips?: string[];
}

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  // IPv6: expand "::" and write 8 groups of 16 bits.
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return out;
}

/**
 * RFC 5280 §4.2.1.6 GeneralNames: uniformResourceIdentifier [6], dNSName [2], iPAddress [7].
 * The SPIFFE X.509-SVID spec (§4.3) puts exactly one URI first. The extension is critical only when
 * the subject is empty; Baton subjects never are.
 */
export function subjectAltName(names: AltNames): Buffer {
  const items: Buffer[] = [];
  for (const u of names.uris ?? []) items.push(ctx(6, false, Buffer.from(u, 'latin1')));
  for (const d of names.dns ?? []) items.push(ctx(2, false, Buffer.from(d, 'latin1')));
  for (const ip of names.ips ?? []) items.push(ctx(7, false, ipBytes(ip)));
  return extension(OID.subjectAltName, false, seq(...items));
}

/** RFC 5280 §4.2.1.13: one DistributionPoint whose fullName is the CRL URL. */
export function crlDistributionPoints(url: string): Buffer {
  return extension(
    OID.cRLDistributionPoints,
    false,
    seq(seq(ctx(0, true, ctx(0, true, ctx(6, false, Buffer.from(url, 'latin1')))))),
  );
}

/** RFC 5280 §4.2.2.1: the OCSP responder (and where to fetch the issuer). */
export function authorityInfoAccess(ocspUrl: string, caIssuersUrl?: string): Buffer {
  const items = [seq(oid(OID.adOcsp), ctx(6, false, Buffer.from(ocspUrl, 'latin1')))];
  if (caIssuersUrl) items.push(seq(oid(OID.adCaIssuers), ctx(6, false, Buffer.from(caIssuersUrl, 'latin1'))));
  return extension(OID.authorityInfoAccess, false, seq(...items));
}

export { ia5 };
