import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import type { BatonError, BatonErrorCode } from '../../../services/ca/src/ground/errors';
import { parseCsr, MAX_CSR_BYTES } from '../../../services/ca/src/pki/csr';
import { bitString, ctx, int, nullValue, oid, seq, tlv, toPem } from '../../../common/src/der';
import { encodeName } from '../../../services/ca/src/pki/names';
import { OID } from '../../../services/ca/src/pki/oids';
import { errorOf } from '../../support/errors';
import { tempDir } from '../../support/tools';

const dir = tempDir('baton-csr-');
afterAll(() => dir.cleanup());

const openssl = (args: string[]): Buffer =>
  execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });

/** Keys made once per file by `openssl genpkey`, by name. */
const KEYS: Record<string, string[]> = {
  'ec-p256': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  'ec-p384': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  'rsa-2048': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  'rsa-4096': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:4096'],
  'rsa-1024': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
  'ec-secp256k1': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
  ed25519: ['-algorithm', 'ED25519'],
  'rsa-pss-key': ['-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048'],
};
const keyPaths = new Map<string, string>();
function keyFile(name: string): string {
  let path = keyPaths.get(name);
  if (!path) {
    path = join(dir.path, `${name}.key.pem`);
    if (name === 'ec-p256-compressed') {
      openssl(['ec', '-in', keyFile('ec-p256'), '-conv_form', 'compressed', '-out', path]);
    } else {
      openssl(['genpkey', ...KEYS[name]!, '-out', path]);
    }
    keyPaths.set(name, path);
  }
  return path;
}

let csrCount = 0;
/** A CSR from `openssl req -new`, as a file path. */
function opensslCsr(key: string, extra: string[] = []): string {
  const path = join(dir.path, `req-${csrCount++}.csr.pem`);
  openssl(['req', '-new', '-key', keyFile(key), '-subj', '/O=example/CN=node-1', ...extra, '-out', path]);
  return path;
}

const pemBody = (pem: string): Buffer =>
  Buffer.from(pem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');

function expectRefused(input: string | Buffer, code: BatonErrorCode, message?: RegExp): BatonError {
  const err = errorOf(() => parseCsr(input));
  expect(err.code).toBe(code);
  if (message) expect(err.message).toMatch(message);
  // Messages are short, lower-case, and never echo the request.
  expect(err.message).toMatch(/^[a-z]/);
  expect(err.message.length).toBeLessThan(120);
  expect(err.message).not.toContain('MII');
  return err;
}

describe('parseCsr with CSRs from openssl req', () => {
  it.each([
    ['ok/ec-p256', 'ec-p256', [], 'ec-p256', 256],
    ['ok/ec-p384', 'ec-p384', [], 'ec-p384', 384],
    ['ok/ec-p256-signed-with-sha384', 'ec-p256', ['-sha384'], 'ec-p256', 256],
    ['ok/ec-p384-signed-with-sha384', 'ec-p384', ['-sha384'], 'ec-p384', 384],
    ['ok/rsa-2048', 'rsa-2048', [], 'rsa', 2048],
    ['ok/rsa-2048-sha384', 'rsa-2048', ['-sha384'], 'rsa', 2048],
    ['ok/rsa-2048-sha512', 'rsa-2048', ['-sha512'], 'rsa', 2048],
    ['ok/rsa-4096', 'rsa-4096', [], 'rsa', 4096],
  ] as const)('%s parses, and its spki is what openssl req -pubkey prints', (_n, key, extra, kind, bits) => {
    const path = opensslCsr(key, [...extra]);
    const pem = readFileSync(path, 'utf8');
    const parsed = parseCsr(pem);
    expect(parsed.key.kind).toBe(kind);
    expect(parsed.key.bits).toBe(bits);
    const pubkeyPem = openssl(['req', '-in', path, '-pubkey', '-noout']).toString('utf8');
    expect(pubkeyPem).toContain('-----BEGIN PUBLIC KEY-----');
    expect(parsed.key.spki.equals(pemBody(pubkeyPem))).toBe(true);
    expect(parsed.der.equals(pemBody(pem))).toBe(true);
    // The subject is returned as the raw Name; here it is O=example, CN=node-1 as openssl wrote it.
    expect(parsed.subjectRaw[0]).toBe(0x30);
    expect(parsed.subjectRaw.includes(Buffer.from('node-1'))).toBe(true);
  });

  it.each([
    ['fail/rsa-1024', 'rsa-1024', [], 'ERR_CSR_KEY_UNSUPPORTED', /rsa key size 1024/i],
    ['fail/ec-secp256k1', 'ec-secp256k1', [], 'ERR_CSR_KEY_UNSUPPORTED', /curve/],
    ['fail/ed25519', 'ed25519', [], 'ERR_CSR_KEY_UNSUPPORTED', /key type/],
    ['fail/rsa-pss-key', 'rsa-pss-key', [], 'ERR_CSR_KEY_UNSUPPORTED', /key type/],
    ['fail/ec-p256-compressed-point', 'ec-p256-compressed', [], 'ERR_CSR_KEY_UNSUPPORTED', /compressed/],
    [
      'fail/rsa-pss-signature',
      'rsa-2048',
      ['-sigopt', 'rsa_padding_mode:pss'],
      'ERR_CSR_INVALID',
      /algorithm/,
    ],
    ['fail/rsa-sha1-signature', 'rsa-2048', ['-sha1'], 'ERR_CSR_INVALID', /algorithm/],
  ] as const)('%s is refused', (_n, key, extra, code, message) => {
    expectRefused(readFileSync(opensslCsr(key, [...extra]), 'utf8'), code, message);
  });
});

describe('parseCsr input forms and limits', () => {
  const pem = readFileSync(opensslCsr('ec-p256'), 'utf8');
  const der = pemBody(pem);

  it.each([
    ['ok/pem-string', () => pem],
    ['ok/pem-buffer', () => Buffer.from(pem)],
    ['ok/der-buffer', () => der],
    [
      'ok/new-certificate-request-label',
      () => pem.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST'),
    ],
    ['ok/crlf-line-endings', () => pem.replace(/\n/g, '\r\n')],
    ['ok/text-around-the-pem-block', () => `Certificate request for node-1\n${pem}trailer\n`],
    ['ok/exactly-16-kib', () => `${pem}${' '.repeat(MAX_CSR_BYTES - Buffer.byteLength(pem))}`],
  ])('%s parses', (_n, input) => {
    expect(parseCsr(input()).der.equals(der)).toBe(true);
  });

  it.each([
    ['fail/wrong-pem-label', () => pem.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE'), /expected a pem/],
    ['fail/mismatched-pem-labels', () => pem.replace('END CERTIFICATE REQUEST', 'END CERTIFICATE'), /pem/],
    [
      'fail/pem-without-body',
      () => '-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n',
      /pem/,
    ],
    ['fail/empty-string', () => '', /empty/],
    ['fail/empty-buffer', () => Buffer.alloc(0), /empty/],
    ['fail/17-kib', () => `${pem}${' '.repeat(17 * 1024 - Buffer.byteLength(pem))}`, /larger than 16384/],
    [
      'fail/16-kib-plus-one',
      () => `${pem}${' '.repeat(MAX_CSR_BYTES + 1 - Buffer.byteLength(pem))}`,
      /larger/,
    ],
    ['fail/multibyte-text-over-16-kib', () => `${pem}${'€'.repeat(6000)}`, /larger/],
    ['fail/truncated-der', () => der.subarray(0, der.length - 1), /length exceeds input/],
    ['fail/truncated-pem', () => toPem('CERTIFICATE REQUEST', der.subarray(0, 100)), /length exceeds input/],
    ['fail/trailing-garbage-der', () => Buffer.concat([der, Buffer.from([0])]), /trailing data/],
    [
      'fail/trailing-garbage-in-pem',
      () => toPem('CERTIFICATE REQUEST', Buffer.concat([der, der])),
      /trailing/,
    ],
    ['fail/flipped-signature-byte', () => flip(der, der.length - 1), /^csr signature does not verify$/],
    ['fail/flipped-subject-byte', () => flip(der, der.indexOf('node-1')), /^csr signature does not verify$/],
    ['fail/not-a-csr', () => Buffer.from('hello'), /expected a pem/],
    ['fail/not-a-string', () => 42 as unknown as string, /string or a buffer/],
  ])('%s is refused with ERR_CSR_INVALID', (_n, input, message) => {
    expectRefused(input(), 'ERR_CSR_INVALID', message);
  });

  it('fail/every-truncation: each proper prefix of the DER is refused', () => {
    for (let n = 0; n < der.length; n++) expectRefused(der.subarray(0, n), 'ERR_CSR_INVALID');
  });
});

function flip(buf: Buffer, at: number, mask = 0x01): Buffer {
  const out = Buffer.from(buf);
  out[at]! ^= mask;
  return out;
}

describe('parseCsr structure checks on hand-built, correctly signed requests', () => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spkiOf = (k: KeyObject) => k.export({ type: 'spki', format: 'der' });

  interface Parts {
    key?: 'ec' | 'rsa';
    spki?: Buffer;
    version?: number;
    subject?: Buffer;
    attributes?: Buffer | null;
    infoExtra?: Buffer[];
    sigAlg?: Buffer;
    hash?: string;
    wrapSignature?: (sig: Buffer) => Buffer;
    outerExtra?: Buffer[];
  }
  function build(p: Parts = {}): Buffer {
    const pair = p.key === 'rsa' ? rsa : ec;
    const info = seq(
      int(p.version ?? 0),
      p.subject ?? encodeName({ CN: 'node-1' }),
      p.spki ?? spkiOf(pair.publicKey),
      ...(p.attributes === null ? [] : [p.attributes ?? ctx(0, true)]),
      ...(p.infoExtra ?? []),
    );
    const sig = sign(p.hash ?? 'sha256', info, pair.privateKey);
    const defaultAlg =
      p.key === 'rsa' ? seq(oid(OID.sha256WithRSAEncryption), nullValue()) : seq(oid(OID.ecdsaWithSHA256));
    return seq(info, p.sigAlg ?? defaultAlg, (p.wrapSignature ?? bitString)(sig), ...(p.outerExtra ?? []));
  }
  // RFC 8017 §A.1.1 RSAPublicKey parts, to build SPKIs that decode but are not canonical DER.
  const jwk = rsa.publicKey.export({ format: 'jwk' });
  const modulus = Buffer.from(jwk.n!, 'base64url');
  const exponent = Buffer.from(jwk.e!, 'base64url');
  const rsaSpki = (algorithm: Buffer, n: Buffer) =>
    seq(algorithm, bitString(seq(tlv(0x02, n), tlv(0x02, exponent))));
  const rsaAlgorithm = seq(oid(OID.rsaEncryption), nullValue());
  const extensionRequest = seq(oid(OID.extensionRequest), tlv(0x31, seq()));

  it.each([
    ['ok/baseline', {}],
    ['ok/empty-subject', { subject: seq() }],
    ['ok/rsa-parameters-null', { key: 'rsa' }],
    ['ok/rsa-parameters-absent (RFC 4055 §5)', { key: 'rsa', sigAlg: seq(oid(OID.sha256WithRSAEncryption)) }],
    ['ok/attribute-present-but-ignored', { attributes: ctx(0, true, extensionRequest) }],
    [
      'ok/rsa-spki-built-by-hand',
      { key: 'rsa', spki: rsaSpki(rsaAlgorithm, Buffer.concat([Buffer.from([0]), modulus])) },
    ],
  ] as [string, Parts][])('%s parses', (_n, parts) => {
    const der = build(parts);
    const parsed = parseCsr(der);
    expect(parsed.der.equals(der)).toBe(true);
    expect(parsed.key.spki.equals(spkiOf(parts.key === 'rsa' ? rsa.publicKey : ec.publicKey))).toBe(true);
  });

  it.each([
    ['fail/version-1', { version: 1 }, /version/],
    ['fail/attributes-missing (RFC 2986 §4.1)', { attributes: null }, /expected version, subject/],
    ['fail/attributes-primitive-tag', { attributes: tlv(0x80) }, /unexpected tag for attributes/],
    [
      'fail/attribute-without-values',
      { attributes: ctx(0, true, seq(oid(OID.extensionRequest), tlv(0x31))) },
      /without values/,
    ],
    ['fail/extra-field-in-info', { infoExtra: [int(1)] }, /expected version, subject/],
    ['fail/extra-element-after-signature', { outerExtra: [int(1)] }, /expected request info/],
    ['fail/subject-not-a-sequence', { subject: tlv(0x31) }, /subject/],
    ['fail/subject-rdn-empty', { subject: seq(tlv(0x31)) }, /empty relative distinguished name/],
    [
      'fail/ecdsa-parameters-null (RFC 5758 §3.2)',
      { sigAlg: seq(oid(OID.ecdsaWithSHA256), nullValue()) },
      /parameters/,
    ],
    [
      'fail/rsa-parameters-not-null',
      { key: 'rsa', sigAlg: seq(oid(OID.sha256WithRSAEncryption), int(0)) },
      /parameters/,
    ],
    [
      'fail/algorithm-does-not-match-key',
      { sigAlg: seq(oid(OID.sha256WithRSAEncryption), nullValue()) },
      /does not match/,
    ],
    ['fail/hash-does-not-match-algorithm', { hash: 'sha384' }, /^csr signature does not verify$/],
    ['fail/unknown-algorithm', { sigAlg: seq(oid('1.2.3.4')) }, /unsupported csr signature algorithm/],
    [
      'fail/signature-unused-bits',
      { wrapSignature: (s: Buffer) => tlv(0x03, Buffer.from([1]), s) },
      /bit string/,
    ],
    [
      'fail/signature-not-a-bit-string',
      { wrapSignature: (s: Buffer) => tlv(0x04, s) },
      /unexpected tag for signature/,
    ],
    [
      'fail/rsa-spki-without-null-parameters',
      { key: 'rsa', spki: rsaSpki(seq(oid(OID.rsaEncryption)), Buffer.concat([Buffer.from([0]), modulus])) },
      /public key/,
    ],
    [
      'fail/rsa-modulus-with-redundant-zero',
      { key: 'rsa', spki: rsaSpki(rsaAlgorithm, Buffer.concat([Buffer.from([0, 0]), modulus])) },
      /public key/,
    ],
    ['fail/signature-empty', { wrapSignature: () => tlv(0x03, Buffer.from([0])) }, /bit string/],
  ] as [string, Parts, RegExp][])('%s is refused with ERR_CSR_INVALID', (_n, parts, message) => {
    expectRefused(build(parts), 'ERR_CSR_INVALID', message);
  });

  it.each([
    [
      'fail/non-minimal-length',
      (d: Buffer) => Buffer.concat([Buffer.from([0x30, 0x82, 0x00, d[2]!]), d.subarray(3)]),
      /non-minimal/,
    ],
    [
      'fail/indefinite-length',
      (d: Buffer) => Buffer.concat([Buffer.from([0x30, 0x80]), d.subarray(3), Buffer.from([0, 0])]),
      /indefinite/,
    ],
  ])('%s is refused with ERR_CSR_INVALID', (_n, mangle, message) => {
    const der = build();
    expect(der.subarray(0, 2)).toEqual(Buffer.from([0x30, 0x81]));
    expectRefused(mangle(der), 'ERR_CSR_INVALID', message);
  });
});

describe('parseCsr never throws anything but BatonError (fast-check)', () => {
  const der = pemBody(readFileSync(opensslCsr('ec-p256'), 'utf8'));
  const codeOf = (input: string | Buffer): string => {
    // errorOf fails the property on anything but a BatonError.
    return errorOf(() => parseCsr(input)).code;
  };

  it('fail/random-bytes', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2048 }),
        (bytes) => codeOf(Buffer.from(bytes)) === 'ERR_CSR_INVALID',
      ),
      { numRuns: 500 },
    );
  });

  it('fail/random-bytes-behind-a-sequence-tag', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2048 }),
        (bytes) => codeOf(Buffer.from([0x30, ...bytes])) === 'ERR_CSR_INVALID',
      ),
      { numRuns: 500 },
    );
  });

  it('fail/random-strings', () => {
    fc.assert(fc.property(fc.string({ maxLength: 2048 }), (s) => codeOf(s) === 'ERR_CSR_INVALID'));
  });

  it('fail/random-bytes-in-a-pem-block', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2048 }),
        (bytes) => codeOf(toPem('CERTIFICATE REQUEST', bytes)) === 'ERR_CSR_INVALID',
      ),
    );
  });

  it('fail/any-single-byte-change-of-a-valid-csr', () => {
    fc.assert(
      fc.property(fc.nat({ max: der.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, mask) =>
        ['ERR_CSR_INVALID', 'ERR_CSR_KEY_UNSUPPORTED'].includes(codeOf(flip(der, at, mask))),
      ),
      { numRuns: 1000 },
    );
  });
});
