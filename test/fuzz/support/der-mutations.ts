import { bitString, ctx, int, octets, oid, seq, tlv, uintBytes } from '../../../common/src/der';
import { children, readWhole, type Tlv } from '../../../services/ca/src/pki/der-reader';
import { OCSP_OID, issuerHashes } from '../../../services/ca/src/pki/ocsp';

/**
 * Hostile variants of real DER (X.690): the mutations a fuzzer of an ASN.1 reader is expected to
 * try. Each is named, so a failure says which input broke what.
 */
export interface Mutant {
  name: string;
  der: Buffer;
}

/** Every TLV of a DER value with its absolute offset (a walk of constructed elements). */
export function tlvOffsets(der: Buffer): { offset: number; el: Tlv }[] {
  const out: { offset: number; el: Tlv }[] = [];
  const walk = (el: Tlv, offset: number) => {
    out.push({ offset, el });
    if ((el.tag & 0x20) === 0) return;
    const headerLength = el.raw.length - el.value.length;
    let inner = offset + headerLength;
    for (const c of children(el)) {
      walk(c, inner);
      inner += c.raw.length;
    }
  };
  walk(readWhole(der), 0);
  return out;
}

/** The input cut at every length from 0 to length − 1. */
export function truncations(der: Buffer): Mutant[] {
  return Array.from({ length: der.length }, (_, n) => ({
    name: `truncated at ${n}`,
    der: der.subarray(0, n),
  }));
}

/** Rewrites the header of the TLV at `offset` with another length encoding, keeping its content. */
function withHeader(der: Buffer, offset: number, el: Tlv, header: Buffer, tail = Buffer.alloc(0)): Buffer {
  const headerLength = el.raw.length - el.value.length;
  return Buffer.concat([
    der.subarray(0, offset),
    header,
    el.value,
    tail,
    der.subarray(offset + headerLength + el.value.length),
  ]);
}

/**
 * For each TLV: lengths one too long and one too short, indefinite (X.690 §8.1.3.6, refused by DER),
 * non-minimal long form, a 4 GiB length, a 5-octet length, a multi-byte tag and a flipped
 * constructed bit.
 */
export function headerMutations(der: Buffer): Mutant[] {
  const out: Mutant[] = [];
  for (const [i, { offset, el }] of tlvOffsets(der).entries()) {
    const len = el.value.length;
    const short = (n: number) =>
      n < 0x80 ? Buffer.from([el.tag, n]) : Buffer.from([el.tag, 0x82, (n >> 8) & 0xff, n & 0xff]);
    const at = `tlv ${i} (tag 0x${el.tag.toString(16)} at ${offset})`;
    out.push(
      { name: `${at}: length + 1`, der: withHeader(der, offset, el, short(len + 1)) },
      ...(len > 0 ? [{ name: `${at}: length - 1`, der: withHeader(der, offset, el, short(len - 1)) }] : []),
      {
        name: `${at}: indefinite length`,
        der: withHeader(der, offset, el, Buffer.from([el.tag, 0x80]), Buffer.from([0, 0])),
      },
      {
        name: `${at}: non-minimal length`,
        der: withHeader(der, offset, el, Buffer.from([el.tag, 0x84, 0, 0, (len >> 8) & 0xff, len & 0xff])),
      },
      {
        name: `${at}: 4 GiB length`,
        der: withHeader(der, offset, el, Buffer.from([el.tag, 0x84, 0xff, 0xff, 0xff, 0xff])),
      },
      {
        name: `${at}: 5-octet length`,
        der: withHeader(der, offset, el, Buffer.from([el.tag, 0x85, 0, 0, 0, 0, len & 0xff])),
      },
      {
        name: `${at}: multi-byte tag`,
        der: withHeader(der, offset, el, Buffer.from([0x1f, 0x81, 0x01, len])),
      },
      {
        name: `${at}: constructed bit flipped`,
        der: withHeader(der, offset, el, short(len).fill(el.tag ^ 0x20, 0, 1)),
      },
    );
  }
  return out;
}

/** `levels` SEQUENCEs (or `tag`s) inside each other around `inner`, with correct definite lengths. */
export function nested(levels: number, inner: Buffer = Buffer.from([0x05, 0x00]), tag = 0x30): Buffer {
  let v = inner;
  for (let i = 0; i < levels; i++) v = tlv(tag, v);
  return v;
}

/** An OID value of `octets` octets (each arc huge), wrapped as an OBJECT IDENTIFIER TLV. */
export function hugeOid(octetCount: number): Buffer {
  const body = Buffer.alloc(octetCount, 0xff);
  body[0] = 0x2a;
  body[octetCount - 1] = 0x7f;
  return tlv(0x06, body);
}

/** An INTEGER of `octetCount` octets (positive, minimal). */
export function hugeInteger(octetCount: number): Buffer {
  const m = Buffer.alloc(octetCount, 0xab);
  m[0] = 0x7f;
  return tlv(0x02, m);
}

/** Replaces the TLV at `offset` by `replacement`, fixing the lengths of its ancestors. */
export function replaceAt(der: Buffer, path: number[], replacement: Buffer): Buffer {
  const rebuild = (el: Tlv, rest: number[]): Buffer => {
    if (rest.length === 0) return replacement;
    const kids = children(el);
    const [i, ...more] = rest;
    const parts = kids.map((k, j) => (j === i ? rebuild(k, more) : k.raw));
    return tlv(el.tag, ...parts);
  };
  return rebuild(readWhole(der), path);
}

/**
 * Structural attacks on a PKCS#10 request (RFC 2986): paths are into
 * CertificationRequest { info { version, subject, spki, attributes }, sigAlg, signature }.
 */
export function csrStructuralMutations(der: Buffer): Mutant[] {
  const deep = nested(1000);
  const deepSets = nested(1000, Buffer.from([0x05, 0x00]), 0x31);
  return [
    { name: 'whole request: 1000 nested SEQUENCEs', der: deep },
    { name: 'subject: 1000 nested SEQUENCEs', der: replaceAt(der, [0, 1], deep) },
    { name: 'subject: 1000 nested SETs', der: replaceAt(der, [0, 1], seq(deepSets)) },
    { name: 'attributes: 1000 nested SEQUENCEs', der: replaceAt(der, [0, 3], ctx(0, true, deep)) },
    { name: 'signature algorithm: 1000 nested SEQUENCEs', der: replaceAt(der, [1], deep) },
    { name: 'version: 10 KiB INTEGER', der: replaceAt(der, [0, 0], hugeInteger(10 * 1024)) },
    {
      name: 'version: 17 KiB INTEGER (over the CSR size)',
      der: replaceAt(der, [0, 0], hugeInteger(17 * 1024)),
    },
    { name: 'version: negative', der: replaceAt(der, [0, 0], Buffer.from([0x02, 0x01, 0xff])) },
    {
      name: 'signature: r and s of 4 KiB each',
      der: replaceAt(der, [2], bitString(seq(hugeInteger(4096), hugeInteger(4096)))),
    },
    { name: 'signature: empty bit string', der: replaceAt(der, [2], Buffer.from([0x03, 0x00])) },
    { name: 'signature: unused bits 7', der: replaceAt(der, [2], Buffer.from([0x03, 0x02, 0x07, 0x80])) },
    {
      name: 'subject: 64-octet OID',
      der: replaceAt(der, [0, 1], seq(Buffer.from(subjectWithOid(hugeOid(64))))),
    },
    {
      name: 'subject: 65-octet OID',
      der: replaceAt(der, [0, 1], seq(Buffer.from(subjectWithOid(hugeOid(65))))),
    },
    {
      name: 'subject: 10 KiB OID',
      der: replaceAt(der, [0, 1], seq(Buffer.from(subjectWithOid(hugeOid(10 * 1024))))),
    },
    {
      name: 'subject: empty OID',
      der: replaceAt(der, [0, 1], seq(subjectWithOid(Buffer.from([0x06, 0x00])))),
    },
    {
      name: 'subject: OID with a leading 0x80 arc octet',
      der: replaceAt(der, [0, 1], seq(subjectWithOid(Buffer.from([0x06, 0x03, 0x2a, 0x80, 0x01])))),
    },
    {
      name: 'subject: OID ending mid-arc',
      der: replaceAt(der, [0, 1], seq(subjectWithOid(Buffer.from([0x06, 0x02, 0x2a, 0x81])))),
    },
    { name: 'signature algorithm: 10 KiB OID', der: replaceAt(der, [1], seq(hugeOid(10 * 1024))) },
    { name: 'signature algorithm: 64-octet OID', der: replaceAt(der, [1], seq(hugeOid(64))) },
    { name: 'public key: replaced by NULL', der: replaceAt(der, [0, 2], Buffer.from([0x05, 0x00])) },
    { name: 'public key: 1000 nested SEQUENCEs', der: replaceAt(der, [0, 2], deep) },
    {
      name: 'public key: RSA with a 4 KiB modulus and exponent',
      der: replaceAt(der, [0, 2], rsaSpki(hugeUint(4096), hugeUint(4096))),
    },
    {
      name: 'public key: RSA-3072 with a 3072-bit exponent',
      der: replaceAt(der, [0, 2], rsaSpki(hugeUint(384), hugeUint(384))),
    },
    {
      name: 'public key: RSA with a zero modulus',
      der: replaceAt(der, [0, 2], rsaSpki(Buffer.from([0]), Buffer.from([3]))),
    },
    { name: 'trailing garbage after the request', der: Buffer.concat([der, Buffer.from([0, 0])]) },
    { name: 'two requests back to back', der: Buffer.concat([der, der]) },
    {
      name: 'extra field in the request',
      der: tlv(0x30, ...children(readWhole(der)).map((c) => c.raw), int(1)),
    },
  ];
}

const subjectWithOid = (oidTlv: Buffer): Buffer => tlv(0x31, seq(oidTlv, tlv(0x0c, Buffer.from('x'))));

const hugeUint = (octetCount: number): Buffer => {
  const m = Buffer.alloc(octetCount, 0xc5);
  m[octetCount - 1] = 0x01;
  return m;
};

/** RFC 3279 §2.3.1 rsaEncryption SPKI with arbitrary modulus and exponent magnitudes. */
function rsaSpki(modulus: Buffer, exponent: Buffer): Buffer {
  const algorithm = Buffer.from('300d06092a864886f70d0101010500', 'hex');
  return seq(algorithm, bitString(seq(uintBytes(modulus), uintBytes(exponent))));
}

/**
 * A well-formed RFC 6960 OCSPRequest for `serialHex` under the CA certificate `issuerDer`, with a
 * nonce, as openssl sends it.
 */
export function ocspRequest(issuerDer: Buffer, serialHex: string, nonce = Buffer.alloc(16, 7)): Buffer {
  const h = issuerHashes(issuerDer).sha1;
  const certId = seq(
    seq(oid(OCSP_OID.sha1), Buffer.from([0x05, 0x00])),
    octets(h.nameHash),
    octets(h.keyHash),
    uintBytes(Buffer.from(serialHex, 'hex')),
  );
  const nonceExt = seq(oid(OCSP_OID.nonce), octets(octets(nonce)));
  return seq(seq(seq(seq(certId)), ctx(2, true, seq(nonceExt))));
}

export function ocspStructuralMutations(der: Buffer): Mutant[] {
  const certIdOf = (serial: Buffer) =>
    seq(seq(oid(OCSP_OID.sha1)), octets(Buffer.alloc(20)), octets(Buffer.alloc(20)), serial);
  return [
    { name: 'whole request: 1000 nested SEQUENCEs', der: nested(1000) },
    { name: 'request list: 1000 nested SEQUENCEs', der: seq(seq(nested(1000))) },
    { name: 'serial: 4 KiB INTEGER', der: seq(seq(seq(seq(certIdOf(hugeInteger(4096)))))) },
    { name: 'serial: negative', der: seq(seq(seq(seq(certIdOf(Buffer.from([0x02, 0x01, 0xfb])))))) },
    { name: 'serial: empty INTEGER', der: seq(seq(seq(seq(certIdOf(Buffer.from([0x02, 0x00])))))) },
    { name: 'hash algorithm: 10 KiB OID', der: seq(seq(seq(seq(seq(seq(hugeOid(10 * 1024))))))) },
    { name: 'hash algorithm: 64-octet OID', der: seq(seq(seq(seq(seq(seq(hugeOid(64))))))) },
    {
      name: 'eleven certificates asked about',
      der: seq(seq(seq(...Array.from({ length: 11 }, () => seq(certIdOf(int(1))))))),
    },
    { name: 'empty request list', der: seq(seq(seq())) },
    { name: 'nonce of 129 octets', der: withNonce(der, Buffer.alloc(129, 1)) },
    { name: 'nonce of 0 octets', der: withNonce(der, Buffer.alloc(0)) },
    { name: 'trailing garbage', der: Buffer.concat([der, Buffer.from([0])]) },
    {
      name: 'version 5',
      der: seq(seq(ctx(0, true, int(5)), ...children(children(readWhole(der))[0]!).map((c) => c.raw))),
    },
  ];
}

function withNonce(der: Buffer, nonce: Buffer): Buffer {
  const [tbs] = children(readWhole(der));
  const [list] = children(tbs!);
  return seq(seq(list!.raw, ctx(2, true, seq(seq(oid(OCSP_OID.nonce), octets(octets(nonce)))))));
}
