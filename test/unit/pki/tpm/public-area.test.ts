import { randomBytes } from 'node:crypto';
import { BatonError } from '../../../../services/ca/src/ground/errors';
import {
  checkAttestationKey,
  checkEndorsementKey,
  EK_TEMPLATE_ATTRIBUTES,
  readPublicArea,
  TPM_ALG,
  TPMA_OBJECT,
  tpm2b,
} from '../../../../services/ca/src/pki/tpm';
import { hex, SWTPM } from '../../../fixtures/tpm-swtpm';
import { akSpec, ekSpec, type PublicSpec, tpm2bPublic, tpmtPublic } from '../../../support/tpm-structures';

/** The refusal of a synchronous call, as "CODE message". */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof BatonError) return `${e.code} ${e.message}`;
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('TPM2_PUBLIC reader (pki/tpm/public-area.ts)', () => {
  it('ok/the RSA EK swtpm made (template L-1)', () => {
    const ek = readPublicArea(hex(SWTPM.ekRsaPublic));
    expect(ek).toMatchObject({
      type: 'rsa',
      nameAlg: TPM_ALG.SHA256,
      attributes: 0x000300b2,
      symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
      scheme: null,
      keyBits: 2048,
      exponent: 0,
    });
    if (ek.type !== 'rsa') throw new Error('rsa');
    expect(ek.modulus).toHaveLength(256);
    expect(ek.area.equals(hex(SWTPM.ekRsaPublic).subarray(2))).toBe(true);
    expect(() => checkEndorsementKey(ek)).not.toThrow();
  });

  it('ok/the ECC EK (template L-2) and the ECDSA AK swtpm made', () => {
    const ek = readPublicArea(hex(SWTPM.ekEccPublic));
    expect(ek).toMatchObject({ type: 'ecc', curve: 0x0003, kdf: null, scheme: null, attributes: 0x000300b2 });
    expect(() => checkEndorsementKey(ek)).not.toThrow();
    const ak = readPublicArea(hex(SWTPM.akPublic));
    expect(ak).toMatchObject({
      type: 'ecc',
      attributes: 0x00050072,
      symmetric: null,
      scheme: { alg: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 },
      curve: 0x0003,
      kdf: null,
    });
    expect(ak.authPolicy).toHaveLength(0);
    expect(() => checkAttestationKey(ak)).not.toThrow();
  });

  it('ok/every structure the builder makes reads back (RSA and ECC, EK and AK, ECDAA with its count)', () => {
    for (const spec of [
      ekSpec('rsa'),
      ekSpec('ecc'),
      akSpec('rsa'),
      akSpec('ecc'),
      { ...akSpec('ecc'), scheme: { alg: TPM_ALG.ECDAA, hashAlg: TPM_ALG.SHA256, count: 7 } },
      { ...ekSpec('rsa'), scheme: { alg: TPM_ALG.RSAES } },
      { ...ekSpec('ecc'), kdf: { alg: TPM_ALG.KDF1_SP800_56A, hashAlg: TPM_ALG.SHA256 } },
    ] as PublicSpec[]) {
      const bytes = tpm2bPublic(spec);
      expect(readPublicArea(bytes).area.equals(tpmtPublic(spec))).toBe(true);
    }
  });

  const real = [
    ['the RSA EK', hex(SWTPM.ekRsaPublic)],
    ['the ECC EK', hex(SWTPM.ekEccPublic)],
    ['the AK', hex(SWTPM.akPublic)],
  ] as const;

  it.each(real)('fail/%s cut short at every length: 400 ERR_BAD_REQUEST', (_name, bytes) => {
    for (let n = 0; n < bytes.length; n++) {
      expect(refusal(() => readPublicArea(bytes.subarray(0, n)))).toMatch(
        /^ERR_BAD_REQUEST malformed TPM2B_PUBLIC: /,
      );
    }
  });

  it.each(real)('fail/%s cut short inside, its size field agreeing: truncated', (_name, bytes) => {
    const inner = bytes.subarray(2, bytes.length - 1);
    expect(refusal(() => readPublicArea(tpm2b(inner)))).toBe(
      'ERR_BAD_REQUEST malformed TPM2B_PUBLIC: truncated',
    );
  });

  it.each(real)('fail/%s with a byte after it', (_name, bytes) => {
    const longer = Buffer.concat([bytes, Buffer.from([0])]);
    expect(refusal(() => readPublicArea(longer))).toBe(
      `ERR_BAD_REQUEST malformed TPM2B_PUBLIC: its size field says ${bytes.length - 2} bytes, ${bytes.length - 1} follow`,
    );
    // The size field agreeing: the bytes after the unique field are trailing.
    expect(refusal(() => readPublicArea(tpm2b(longer.subarray(2))))).toBe(
      'ERR_BAD_REQUEST malformed TPM2B_PUBLIC: trailing bytes',
    );
  });

  it.each([
    ['fail/KEYEDHASH (an HMAC key or sealed data, no public key)', TPM_ALG.KEYEDHASH],
    ['fail/SYMCIPHER (a symmetric key)', TPM_ALG.SYMCIPHER],
    ['fail/an unknown type', 0x7777],
  ])('%s: not an RSA or ECC key', (_name, type) => {
    const bytes = hex(SWTPM.ekEccPublic);
    bytes.writeUInt16BE(type, 2);
    expect(refusal(() => readPublicArea(bytes))).toBe(
      'ERR_BAD_REQUEST malformed TPM2B_PUBLIC: the object is not an RSA or ECC key (type must be TPM_ALG_RSA or TPM_ALG_ECC)',
    );
  });

  it.each([
    [
      'an unknown symmetric algorithm',
      { ...ekSpec('ecc'), symmetric: { alg: 0x0099, keyBits: 128, mode: 0x43 } },
      'unsupported symmetric algorithm',
    ],
    [
      'an unknown RSA scheme',
      { ...ekSpec('rsa'), scheme: { alg: TPM_ALG.ECDSA, hashAlg: 0x0b } },
      'unsupported RSA scheme',
    ],
    [
      'an unknown ECC scheme',
      { ...ekSpec('ecc'), scheme: { alg: TPM_ALG.RSASSA, hashAlg: 0x0b } },
      'unsupported ECC scheme',
    ],
    [
      'an unknown KDF',
      { ...ekSpec('ecc'), kdf: { alg: TPM_ALG.AES, hashAlg: 0x0b } },
      'unsupported KDF scheme',
    ],
    [
      'a modulus of 513 bytes',
      { ...ekSpec('rsa'), modulus: Buffer.alloc(513, 1) },
      'the RSA modulus is 513 bytes, more than 512',
    ],
    [
      'an x of 67 bytes',
      { ...ekSpec('ecc'), x: Buffer.alloc(67, 1) },
      'the ECC point x is 67 bytes, more than 66',
    ],
    [
      'a policy of 65 bytes',
      { ...ekSpec('ecc'), authPolicy: Buffer.alloc(65, 1) },
      'authPolicy is 65 bytes, more than 64',
    ],
  ] as [string, PublicSpec, string][])('fail/%s', (_name, spec, why) => {
    expect(refusal(() => readPublicArea(tpm2bPublic(spec)))).toBe(
      `ERR_BAD_REQUEST malformed TPM2B_PUBLIC: ${why}`,
    );
  });

  it('fail/an empty buffer, a lone size field, a size field promising more than follows', () => {
    expect(refusal(() => readPublicArea(Buffer.alloc(0)))).toBe(
      'ERR_BAD_REQUEST malformed TPM2B_PUBLIC: truncated',
    );
    expect(refusal(() => readPublicArea(Buffer.from([0, 0])))).toBe(
      'ERR_BAD_REQUEST malformed TPM2B_PUBLIC: truncated',
    );
    expect(refusal(() => readPublicArea(Buffer.from([0xff, 0xff, 0])))).toBe(
      'ERR_BAD_REQUEST malformed TPM2B_PUBLIC: its size field says 65535 bytes, 1 follow',
    );
  });

  it('fuzz/bit flips and random bytes: a public area or ERR_BAD_REQUEST, never anything else', () => {
    for (const [, bytes] of real) {
      for (let i = 0; i < bytes.length * 8; i += 3) {
        const b = Buffer.from(bytes);
        b[i >> 3]! ^= 1 << (i & 7);
        try {
          readPublicArea(b);
        } catch (e) {
          expect(e).toBeInstanceOf(BatonError);
          expect((e as BatonError).code).toBe('ERR_BAD_REQUEST');
        }
      }
    }
    for (let i = 0; i < 500; i++) {
      const b = randomBytes(1 + (i % 400));
      try {
        readPublicArea(b);
      } catch (e) {
        expect((e as BatonError).code).toBe('ERR_BAD_REQUEST');
      }
    }
  });
});

describe('the EK and AK profiles (pki/tpm/profiles.ts)', () => {
  const ek = (over: Partial<PublicSpec>, type: 'rsa' | 'ecc' = 'ecc') =>
    readPublicArea(
      tpm2bPublic({
        ...ekSpec(type),
        x: randomBytes(32),
        y: randomBytes(32),
        modulus: Buffer.alloc(256, 0xc1),
        ...over,
      }),
    );
  const ak = (over: Partial<PublicSpec>, type: 'rsa' | 'ecc' = 'ecc') =>
    readPublicArea(tpm2bPublic({ ...akSpec(type), modulus: Buffer.alloc(256, 0xc1), ...over }));
  const NOT_EK = 'ERR_ATTESTATION_FAILED the endorsement key is not a TCG default EK: ';
  const NOT_AK = 'ERR_ATTESTATION_FAILED the attestation key is not a restricted signing key: ';

  it('ok/the default templates, RSA and ECC; an AK of either kind', () => {
    expect(() => checkEndorsementKey(ek({}, 'rsa'))).not.toThrow();
    expect(() => checkEndorsementKey(ek({}, 'ecc'))).not.toThrow();
    expect(() => checkAttestationKey(ak({}, 'rsa'))).not.toThrow();
    expect(() => checkAttestationKey(ak({}, 'ecc'))).not.toThrow();
    expect(() => checkAttestationKey(ak({ exponent: 0x10001 }, 'rsa'))).not.toThrow();
  });

  it.each([
    [
      'a signing key',
      { attributes: (EK_TEMPLATE_ATTRIBUTES & ~TPMA_OBJECT.decrypt) | TPMA_OBJECT.sign },
      'it is a signing key',
    ],
    [
      'a key that signs and decrypts',
      { attributes: EK_TEMPLATE_ATTRIBUTES | TPMA_OBJECT.sign },
      'it is a signing key',
    ],
    [
      'userWithAuth (anyone may use it)',
      { attributes: EK_TEMPLATE_ATTRIBUTES | TPMA_OBJECT.userWithAuth },
      'its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt',
    ],
    [
      'not restricted',
      { attributes: EK_TEMPLATE_ATTRIBUTES & ~TPMA_OBJECT.restricted },
      'its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt',
    ],
    [
      'not fixedTPM',
      { attributes: EK_TEMPLATE_ATTRIBUTES & ~TPMA_OBJECT.fixedTPM },
      'its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt',
    ],
    [
      'another policy',
      { authPolicy: Buffer.alloc(32, 1) },
      'its policy is not PolicySecret(TPM_RH_ENDORSEMENT)',
    ],
    ['no policy', { authPolicy: Buffer.alloc(0) }, 'its policy is not PolicySecret(TPM_RH_ENDORSEMENT)'],
    ['a SHA-1 name', { nameAlg: 0x0004 }, 'its name algorithm is not SHA-256'],
    [
      'AES-256',
      { symmetric: { alg: TPM_ALG.AES, keyBits: 256, mode: TPM_ALG.CFB } },
      'its symmetric algorithm is not AES-128-CFB',
    ],
    ['no symmetric algorithm', { symmetric: null }, 'its symmetric algorithm is not AES-128-CFB'],
    ['a scheme', { scheme: { alg: TPM_ALG.ECDH, hashAlg: TPM_ALG.SHA256 } }, 'it has a scheme'],
    ['a KDF', { kdf: { alg: TPM_ALG.KDF1_SP800_56A, hashAlg: TPM_ALG.SHA256 } }, 'it has a KDF scheme'],
    ['P-384', { curve: 0x0004 }, 'it is not an ECC NIST P-256 key'],
    ['a short x', { x: Buffer.alloc(31, 1) }, 'it is not an ECC NIST P-256 key'],
  ] as [string, Partial<PublicSpec>, string][])('fail/an ECC "EK" with %s', (_name, over, why) => {
    expect(refusal(() => checkEndorsementKey(ek(over)))).toBe(`${NOT_EK}${why}`);
  });

  it.each([
    ['RSA 3072', { keyBits: 3072, modulus: Buffer.alloc(384, 0xc1) }, 'it is not an RSA 2048 key'],
    ['a 2047-bit modulus', { modulus: Buffer.alloc(256, 0x41) }, 'it is not an RSA 2048 key'],
    ['exponent 3', { exponent: 3 }, 'its exponent is not the default'],
  ] as [string, Partial<PublicSpec>, string][])('fail/an RSA "EK" with %s', (_name, over, why) => {
    expect(refusal(() => checkEndorsementKey(ek(over, 'rsa')))).toBe(`${NOT_EK}${why}`);
  });

  it.each([
    ['that can decrypt', { attributes: akSpec('ecc').attributes | TPMA_OBJECT.decrypt }, 'it can decrypt'],
    ['that is an EK', { ...ekSpec('ecc') }, 'it can decrypt'],
    [
      'not restricted',
      { attributes: akSpec('ecc').attributes & ~TPMA_OBJECT.restricted },
      'its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|restricted|sign',
    ],
    [
      'not fixedTPM (duplicable)',
      { attributes: akSpec('ecc').attributes & ~TPMA_OBJECT.fixedTPM },
      'its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|restricted|sign',
    ],
    [
      'imported (no sensitiveDataOrigin)',
      { attributes: akSpec('ecc').attributes & ~TPMA_OBJECT.sensitiveDataOrigin },
      'its attributes are not fixedTPM|fixedParent|sensitiveDataOrigin|restricted|sign',
    ],
    [
      'with a symmetric algorithm',
      { symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } },
      'it has a symmetric algorithm',
    ],
    [
      'with ECDSA and SHA-384',
      { scheme: { alg: TPM_ALG.ECDSA, hashAlg: 0x000c } },
      'its scheme is not ECDSA with SHA-256',
    ],
    ['with no scheme', { scheme: null }, 'its scheme is not ECDSA with SHA-256'],
    ['on P-384', { curve: 0x0004 }, 'it is not an ECC NIST P-256 key'],
    ['with a SHA-1 name', { nameAlg: 0x0004 }, 'its name algorithm is not SHA-256'],
  ] as [string, Partial<PublicSpec>, string][])('fail/an ECC AK %s', (_name, over, why) => {
    expect(refusal(() => checkAttestationKey(ak(over)))).toBe(`${NOT_AK}${why}`);
  });

  it.each([
    [
      'RSAPSS',
      { scheme: { alg: TPM_ALG.RSAPSS, hashAlg: TPM_ALG.SHA256 } },
      'its scheme is not RSASSA with SHA-256',
    ],
    ['RSA 1024', { keyBits: 1024, modulus: Buffer.alloc(128, 0xc1) }, 'it is not an RSA 2048 key'],
    ['exponent 3', { exponent: 3 }, 'its exponent is not 65537'],
  ] as [string, Partial<PublicSpec>, string][])('fail/an RSA AK with %s', (_name, over, why) => {
    expect(refusal(() => checkAttestationKey(ak(over, 'rsa')))).toBe(`${NOT_AK}${why}`);
  });
});
