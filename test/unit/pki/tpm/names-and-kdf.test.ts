import { createHash, createPublicKey } from 'node:crypto';
import {
  ekIdentifier,
  kdfa,
  kdfe,
  objectName,
  publicKeyOf,
  qualifiedNameUnderEk,
  readPublicArea,
  tpmNodeId,
} from '../../../../services/ca/src/pki/tpm';
import { hex, SWTPM } from '../../../fixtures/tpm-swtpm';
import { ekSpec, tpm2bPublic } from '../../../support/tpm-structures';

describe('names (pki/tpm/names.ts), against what tpm2-tools printed for swtpm', () => {
  const ekRsa = readPublicArea(hex(SWTPM.ekRsaPublic));
  const ak = readPublicArea(hex(SWTPM.akPublic));

  it('ok/Name = nameAlg || SHA-256(TPMT_PUBLIC): the EK (tpm2_readpublic -n) and the AK (tpm2_createak -n)', () => {
    expect(objectName(ekRsa).toString('hex')).toBe(SWTPM.ekRsaName);
    expect(objectName(ak).toString('hex')).toBe(SWTPM.akName);
  });

  it('ok/the AK qualified name under the EK (tpm2_createak -q; the quote qualifiedSigner)', () => {
    expect(qualifiedNameUnderEk(ekRsa, ak).toString('hex')).toBe(SWTPM.akQualifiedName);
  });

  it('ok/EK identifier: SHA-256 of the SPKI DER openssl gives for tpm2_readpublic -f pem; node id tpm-<20 hex>', () => {
    const ek = publicKeyOf(ekRsa);
    expect(ekIdentifier(ek.spki)).toBe(SWTPM.ekRsaId);
    expect(tpmNodeId(SWTPM.ekRsaId)).toBe('tpm-f78f1910809f0a66d3ab');
    const ecc = publicKeyOf(readPublicArea(hex(SWTPM.ekEccPublic)));
    const fromPem = createPublicKey(SWTPM.ekEccPem).export({ type: 'spki', format: 'der' });
    expect(ecc.spki.equals(fromPem)).toBe(true);
    expect(ekIdentifier(ecc.spki)).toBe(createHash('sha256').update(fromPem).digest('hex'));
  });

  it('fail/a point off the curve, an RSA modulus that is zero: 400 ERR_BAD_REQUEST', () => {
    for (const spec of [
      { ...ekSpec('ecc'), x: Buffer.alloc(32, 1), y: Buffer.alloc(32, 2) },
      { ...ekSpec('rsa'), modulus: Buffer.alloc(256, 0) },
    ]) {
      expect(() => publicKeyOf(readPublicArea(tpm2bPublic(spec)))).toThrow(
        expect.objectContaining({ code: 'ERR_BAD_REQUEST' }),
      );
    }
  });

  it('fail/a name algorithm other than SHA-256 has no name here', () => {
    const sha1 = readPublicArea(tpm2bPublic({ ...ekSpec('ecc'), nameAlg: 0x0004 }));
    expect(() => objectName(sha1)).toThrow(expect.objectContaining({ code: 'ERR_ATTESTATION_FAILED' }));
  });
});

/**
 * Known answers computed with OpenSSL 3.0's own implementations, which the TPM's KDFs are instances
 * of (NIST SP 800-108 counter mode, SP 800-56A concatenation):
 *
 *   openssl kdf -keylen 16 -kdfopt mac:HMAC -kdfopt digest:SHA2-256 -kdfopt hexkey:$KEY \
 *     -kdfopt salt:STORAGE -kdfopt hexinfo:$CONTEXT KBKDF
 *   openssl kdf -keylen 32 -kdfopt digest:SHA2-256 -kdfopt hexkey:$Z \
 *     -kdfopt hexinfo:$(printf IDENTITY | xxd -p)00$U$V SSKDF
 *
 * OpenSSL's KBKDF puts the 0x00 separator after the label ("salt") and the output length in bits
 * after the context ("info"), which is KDFa's layout; SSKDF hashes counter || Z || info.
 */
describe('KDFa and KDFe (pki/tpm/kdf.ts): known answers', () => {
  const KEY = hex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
  const NAME = hex('000b6d417dca5f33ae759b8d971526948fba5536d5dd5fa0a17b0ca0b9a739224606');
  const none = Buffer.alloc(0);

  it.each([
    ['STORAGE, context Name, 128 bits', 'STORAGE', NAME, 128, 'c2ef372bdcb60f87f605ad0d5bade7bb'],
    [
      'INTEGRITY, no context, 256 bits',
      'INTEGRITY',
      none,
      256,
      'bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e',
    ],
    [
      'three blocks, 600 bits',
      'ATH',
      hex('aabbccdd11223344'),
      600,
      '85ff3378d98b2821336a35cb588fae673cf39f996a5410e5dc706c09c70c2d94e67cb85127cbb615c661b008f647d3dbc40dc85f00587fd4a4702aa8ea67b23a45dbff90d629af5d743e6a',
    ],
  ] as const)('ok/KDFa %s', (_name, label, context, bits, expected) => {
    expect(kdfa(KEY, label, context, none, bits).toString('hex')).toBe(expected);
  });

  it('ok/KDFa: contextU and contextV are concatenated (the split does not matter)', () => {
    expect(kdfa(KEY, 'ATH', hex('aabbcc'), hex('dd11223344'), 600).toString('hex')).toBe(
      kdfa(KEY, 'ATH', hex('aabbccdd11223344'), none, 600).toString('hex'),
    );
  });

  const Z = hex('594e519ae499312b29433b7dd8a97ff068defcba9755b6d5d00e84c524d67b06');
  const U = hex('0bfe935e70c321c7ca3afc75ce0d0ca2f98b5422e008bb31c00c6d7f1f1c0ad6');
  const V = hex('4c94485e0c21ae6c41ce1dfe7b6bfaceea5ab68e40a2476f50208e526f506080');

  it.each([
    [256, '496afb478a53f9afd7c74165b52eb2b12bd16145828fc1894d4a13bfa311f064'],
    [384, '496afb478a53f9afd7c74165b52eb2b12bd16145828fc1894d4a13bfa311f064a9d1e7fefbc71006edebb651a5cccd8a'],
  ])('ok/KDFe IDENTITY, %i bits', (bits, expected) => {
    expect(kdfe(Z, 'IDENTITY', U, V, bits).toString('hex')).toBe(expected);
  });
});
