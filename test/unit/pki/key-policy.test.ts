import { createPublicKey, generateKeyPairSync, type KeyObject, verify } from 'node:crypto';
import { BatonError, type BatonErrorCode } from '../../../services/ca/src/ground/errors';
import { parseCsr, readCsr } from '../../../services/ca/src/pki/csr';
import { checkKeyPolicy, type KeyCandidate } from '../../../services/ca/src/pki/key-policy';
import { describePublicKey } from '../../../services/ca/src/pki/keys';
import { nativeEc } from '../../../services/ca/src/pki/native-ec';
import { exponentOneCsr, rsaSpki, signedRsaCsr } from '../../support/rsa-csr';

/**
 * Issue 14, finding 3: a CSR with the RSA public exponent 1 was certified, and a 3070-bit exponent
 * cost 13.5 ms per unauthenticated request. The key policy (pki/key-policy.ts, CA/Browser Forum
 * BR §6.1.5 and §6.1.6) on its own, then through the decoder and the CSR parser that every route uses.
 */

const spkiOf = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
const modulusOf = (k: KeyObject): bigint =>
  BigInt(`0x${Buffer.from(k.export({ format: 'jwk' }).n!, 'base64url').toString('hex')}`);
const bitLength = (n: bigint): number => n.toString(2).length;

const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsa3072 = generateKeyPairSync('rsa', { modulusLength: 3072 });
const rsa4096 = generateKeyPairSync('rsa', { modulusLength: 4096 });
const rsaE3 = generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 });
const n2048 = modulusOf(rsa2048.publicKey);
const n4096 = modulusOf(rsa4096.publicKey);

/** A 2048-bit modulus 757·p·q (757 is the first prime the policy allows as a factor). */
function modulusWithFactor757(): bigint {
  // 757·n is 2048 bits for about a third of the 2039-bit moduli n.
  for (;;) {
    const n = 757n * modulusOf(generateKeyPairSync('rsa', { modulusLength: 2039 }).publicKey);
    if (bitLength(n) === 2048) return n;
  }
}

/** The smallest odd 2048-bit number divisible by `p` at or above n2048 (so: a modulus with that factor). */
function withFactor(p: bigint): bigint {
  let n = n2048 + ((p - (n2048 % p)) % p);
  if (n % 2n === 0n) n += p;
  expect(bitLength(n)).toBe(2048);
  return n;
}

function refusal(fn: () => unknown): { code: BatonErrorCode; message: string } | 'accepted' {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    if (!(e instanceof BatonError)) throw e;
    // Messages are short, lower-case, and never echo the key.
    expect(e.message).toMatch(/^[a-z]/);
    expect(e.message.length).toBeLessThan(120);
    return { code: e.code, message: e.message };
  }
}

const EXPONENT = /^unsupported RSA public exponent: use an odd one from 65537 to 2\^256-1/;
const SIZE = (bits: number) => new RegExp(`^unsupported RSA key size ${bits}: use 2048 to 4096 bits`);
const FACTOR = /^unsupported RSA modulus: it has a factor smaller than 752$/;
const CURVE = /^unsupported EC curve: use P-256 or P-384$/;

describe('checkKeyPolicy (BR §6.1.5, §6.1.6)', () => {
  const rsa = (modulus: bigint, exponent = 65537n): KeyCandidate => ({ type: 'rsa', modulus, exponent });
  const ec = (curve: string | undefined, onCurve = true): KeyCandidate => ({ type: 'ec', curve, onCurve });

  it.each([
    ['ok/rsa-2048 e=65537', rsa(n2048), 'rsa', 2048],
    ['ok/rsa-3072 e=65537', rsa(modulusOf(rsa3072.publicKey)), 'rsa', 3072],
    ['ok/rsa-4096 e=65537', rsa(n4096), 'rsa', 4096],
    ['ok/e=2^16+3 (odd, in range)', rsa(n2048, 2n ** 16n + 3n), 'rsa', 2048],
    ['ok/e=2^256-1 (the largest)', rsa(n2048, 2n ** 256n - 1n), 'rsa', 2048],
    ['ok/modulus with the factor 757 (the first allowed)', rsa(modulusWithFactor757()), 'rsa', 2048],
    ['ok/ec P-256', ec('prime256v1'), 'ec-p256', 256],
    ['ok/ec P-384', ec('secp384r1'), 'ec-p384', 384],
  ] as const)('%s', (_n, key, kind, bits) => {
    expect(checkKeyPolicy(key)).toEqual({ kind, bits });
  });

  it.each([
    ['fail/e=1 (the signature is the padded digest)', rsa(n2048, 1n), EXPONENT],
    ['fail/e=3', rsa(n2048, 3n), EXPONENT],
    ['fail/e=65535 (odd, below 2^16+1)', rsa(n2048, 65535n), EXPONENT],
    ['fail/e=65536 (even)', rsa(n2048, 65536n), EXPONENT],
    ['fail/e=65538 (even, in range)', rsa(n2048, 65538n), EXPONENT],
    ['fail/e=2^256+1 (odd, above 2^256-1)', rsa(n2048, 2n ** 256n + 1n), EXPONENT],
    ['fail/e=2^3070+1 (huge: 13.5 ms per verification)', rsa(n2048, 2n ** 3070n + 1n), EXPONENT],
    ['fail/modulus of 1024 bits', rsa((n2048 >> 1024n) | 1n), SIZE(1024)],
    ['fail/modulus of 2047 bits', rsa((n2048 >> 1n) | 1n), SIZE(2047)],
    ['fail/modulus of 4097 bits', rsa((n4096 << 1n) | 1n), SIZE(4097)],
    ['fail/modulus of 3001 bits (not a multiple of 8, BR §6.1.5)', rsa((n4096 >> 1095n) | 1n), SIZE(3001)],
    ['fail/modulus 0', rsa(0n), SIZE(0)],
    ['fail/modulus even', rsa(n2048 ^ 1n), FACTOR],
    ['fail/modulus with the factor 3', rsa(withFactor(3n)), FACTOR],
    ['fail/modulus with the factor 751 (the last refused)', rsa(withFactor(751n)), FACTOR],
    ['fail/ec P-521', ec('secp521r1'), CURVE],
    ['fail/ec secp256k1', ec('secp256k1'), CURVE],
    ['fail/ec explicit parameters (no named curve)', ec(undefined), CURVE],
    ['fail/another key type', { type: 'other' } as KeyCandidate, /^unsupported key type/],
  ] as const)('%s: ERR_CSR_KEY_UNSUPPORTED', (_n, key, message) => {
    const r = refusal(() => checkKeyPolicy(key));
    expect(r).toEqual({ code: 'ERR_CSR_KEY_UNSUPPORTED', message: expect.stringMatching(message) });
  });

  it('fail/ec point not on the curve: ERR_CSR_INVALID, as every undecodable key', () => {
    expect(refusal(() => checkKeyPolicy(ec('prime256v1', false)))).toEqual({
      code: 'ERR_CSR_INVALID',
      message: 'the public key cannot be decoded',
    });
  });

  it('a size refusal wins over an exponent refusal, which wins over a factor refusal', () => {
    expect(refusal(() => checkKeyPolicy(rsa((n2048 >> 1024n) ^ 1n, 1n)))).toMatchObject({
      message: expect.stringMatching(SIZE(1024)),
    });
    expect(refusal(() => checkKeyPolicy(rsa(n2048 ^ 1n, 1n)))).toMatchObject({
      message: expect.stringMatching(EXPONENT),
    });
  });
});

describe('describePublicKey applies the policy to encoded keys', () => {
  const ecKey = (namedCurve: string) => spkiOf(generateKeyPairSync('ec', { namedCurve }).publicKey);
  const p256 = ecKey('P-256');
  // The last octet of y: (x, y ^ 1) is not on the curve.
  const offCurve = Buffer.concat([p256.subarray(0, -1), Buffer.from([p256.at(-1)! ^ 1])]);

  const rows: [string, Buffer, { kind: string; bits: number } | { code: BatonErrorCode; message: RegExp }][] =
    [
      ['ok/ec P-256', p256, { kind: 'ec-p256', bits: 256 }],
      ['ok/ec P-384', ecKey('P-384'), { kind: 'ec-p384', bits: 384 }],
      ['ok/rsa-2048 e=65537', spkiOf(rsa2048.publicKey), { kind: 'rsa', bits: 2048 }],
      ['ok/rsa-2048 e=65537 built by hand', rsaSpki(n2048, 65537n), { kind: 'rsa', bits: 2048 }],
      ['fail/ec P-521', ecKey('P-521'), { code: 'ERR_CSR_KEY_UNSUPPORTED', message: CURVE }],
      ['fail/ec secp256k1', ecKey('secp256k1'), { code: 'ERR_CSR_KEY_UNSUPPORTED', message: CURVE }],
      [
        'fail/ec P-256 point off the curve',
        offCurve,
        { code: 'ERR_CSR_INVALID', message: /cannot be decoded/ },
      ],
      ['fail/rsa e=1', rsaSpki(n2048, 1n), { code: 'ERR_CSR_KEY_UNSUPPORTED', message: EXPONENT }],
      [
        'fail/rsa e=3 (a real key)',
        spkiOf(rsaE3.publicKey),
        { code: 'ERR_CSR_KEY_UNSUPPORTED', message: EXPONENT },
      ],
      ['fail/rsa e even', rsaSpki(n2048, 65538n), { code: 'ERR_CSR_KEY_UNSUPPORTED', message: EXPONENT }],
      [
        'fail/rsa e=2^3070+1',
        rsaSpki(n2048, 2n ** 3070n + 1n),
        { code: 'ERR_CSR_KEY_UNSUPPORTED', message: EXPONENT },
      ],
      [
        'fail/rsa modulus even',
        rsaSpki(n2048 ^ 1n, 65537n),
        { code: 'ERR_CSR_KEY_UNSUPPORTED', message: FACTOR },
      ],
      [
        'fail/rsa modulus with the factor 751',
        rsaSpki(withFactor(751n), 65537n),
        { code: 'ERR_CSR_KEY_UNSUPPORTED', message: FACTOR },
      ],
    ];

  it.each(
    rows.flatMap(([name, spki, want]) => [
      [`${name} (native verifier)`, spki, want, nativeEc] as const,
      [`${name} (node:crypto)`, spki, want, null] as const,
    ]),
  )('%s', (_n, spki, want, native) => {
    if ('kind' in want) {
      expect(describePublicKey(spki, native)).toMatchObject(want);
    } else {
      expect(refusal(() => describePublicKey(spki, native))).toEqual({
        code: want.code,
        message: expect.stringMatching(want.message),
      });
    }
  });
});

describe('parseCsr refuses the keys outside the policy before it verifies anything', () => {
  it("fail/the review's CSR: e=1, its signature the padded digest, which node:crypto verifies", () => {
    const csr = exponentOneCsr(n2048);
    const key = createPublicKey({ key: rsaSpki(n2048, 1n), format: 'der', type: 'spki' });
    // The forgery is a valid PKCS#1 v1.5 signature: only the key policy stands in its way.
    expect(verify('sha256', csr.info, key, csr.signature)).toBe(true);
    expect(refusal(() => parseCsr(csr.pem))).toEqual({
      code: 'ERR_CSR_KEY_UNSUPPORTED',
      message: expect.stringMatching(EXPONENT),
    });
    expect(refusal(() => readCsr(csr.pem))).toMatchObject({ code: 'ERR_CSR_KEY_UNSUPPORTED' });
  });

  it('fail/e=3, properly signed by its key', () => {
    expect(refusal(() => parseCsr(signedRsaCsr(rsaE3.privateKey, spkiOf(rsaE3.publicKey))))).toEqual({
      code: 'ERR_CSR_KEY_UNSUPPORTED',
      message: expect.stringMatching(EXPONENT),
    });
  });

  it('ok/e=65537, properly signed', () => {
    const parsed = parseCsr(signedRsaCsr(rsa2048.privateKey, spkiOf(rsa2048.publicKey)));
    expect(parsed.key).toMatchObject({ kind: 'rsa', bits: 2048 });
  });

  it('readCsr checks everything but the signature, which verify() checks', () => {
    // A policy-conforming key, but the request is signed by another one.
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forged = signedRsaCsr(other.privateKey, spkiOf(rsa2048.publicKey));
    const read = readCsr(forged);
    expect(refusal(() => read.verify())).toEqual({
      code: 'ERR_CSR_INVALID',
      message: 'csr signature does not verify',
    });
    expect(refusal(() => parseCsr(forged))).toEqual(refusal(() => read.verify()));
    const honest = readCsr(signedRsaCsr(rsa2048.privateKey, spkiOf(rsa2048.publicKey)));
    expect(honest.verify().der.equals(honest.der)).toBe(true);
  });
});
