import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import {
  credentialFile,
  ekIdentifier,
  nodeIdOfEk,
  parseTpmChallenge,
  qualifyingData,
} from '../../../clients/rotation/src';
import { ekCertificateFor } from '../../../clients/rotation/src/tpm/tpm-wire';
import { testCa } from '../../fixtures/test-ca';

/** A TPM2B: 2-byte big-endian size, then the bytes (TPM 2.0 Library Part 2 §10.4). */
const tpm2b = (body: Buffer) => Buffer.concat([Buffer.from([body.length >> 8, body.length & 0xff]), body]);
const b64 = (b: Buffer) => b.toString('base64');

/** An RSA-EK-shaped challenge: TPM2B_ID_OBJECT of 68 bytes (HMAC 2+32, encIdentity 34), a 256-byte seed. */
const idObject = tpm2b(Buffer.concat([tpm2b(Buffer.alloc(32, 1)), Buffer.alloc(34, 2)]));
const encSecret = tpm2b(Buffer.alloc(256, 3));
const good = {
  nonce: Buffer.alloc(32, 9).toString('base64url'),
  expires_at: '2030-01-01T00:00:00.000Z',
  credential_blob: b64(idObject),
  encrypted_secret: b64(encSecret),
};

describe('parseTpmChallenge', () => {
  it('ok/an RSA EK challenge: the fields decoded, the nonce kept as sent', () => {
    const c = parseTpmChallenge(good);
    expect(c.nonce).toBe(good.nonce);
    expect(c.expiresAt.toISOString()).toBe(good.expires_at);
    expect(c.credentialBlob.equals(idObject)).toBe(true);
    expect(c.encryptedSecret.equals(encSecret)).toBe(true);
  });

  it('ok/an ECC EK challenge: the encrypted secret is a TPMS_ECC_POINT (TPM2B x, TPM2B y)', () => {
    const point = tpm2b(Buffer.concat([tpm2b(Buffer.alloc(32, 4)), tpm2b(Buffer.alloc(32, 5))]));
    expect(parseTpmChallenge({ ...good, encrypted_secret: b64(point) }).encryptedSecret).toEqual(point);
  });

  it.each([
    ['fail/not an object', null, 'not a JSON object'],
    ['fail/no nonce', { ...good, nonce: undefined }, '"nonce" is not base64url'],
    ['fail/a nonce with other characters', { ...good, nonce: `${good.nonce}/` }, '"nonce" is not base64url'],
    ['fail/a bad date', { ...good, expires_at: 'soon' }, '"expires_at" is not a date'],
    ['fail/blob not base64', { ...good, credential_blob: 'abc$' }, '"credential_blob" is not base64'],
    ['fail/blob without padding', { ...good, credential_blob: 'AAE' }, '"credential_blob" is not base64'],
    [
      'fail/blob with a trailing byte',
      { ...good, credential_blob: b64(Buffer.concat([idObject, Buffer.of(0)])) },
      '"credential_blob" is not one TPM2B',
    ],
    [
      'fail/blob shorter than its size',
      { ...good, credential_blob: b64(idObject.subarray(0, 40)) },
      '"credential_blob" is not one TPM2B',
    ],
    [
      'fail/blob too large for a TPMS_ID_OBJECT',
      { ...good, credential_blob: b64(tpm2b(Buffer.concat([tpm2b(Buffer.alloc(32)), Buffer.alloc(200)]))) },
      '"credential_blob" has a wrong size',
    ],
    [
      'fail/blob whose HMAC covers everything',
      { ...good, credential_blob: b64(tpm2b(tpm2b(Buffer.alloc(40)))) },
      '"credential_blob" has a wrong integrity HMAC size',
    ],
    ['fail/an empty secret', { ...good, encrypted_secret: b64(tpm2b(Buffer.alloc(0))) }, 'has a wrong size'],
    [
      'fail/secret larger than an RSA 4096 block',
      { ...good, encrypted_secret: b64(tpm2b(Buffer.alloc(600))) },
      '"encrypted_secret" has a wrong size',
    ],
  ])('%s', (_name, body, message) => {
    expect(() => parseTpmChallenge(body)).toThrow(
      expect.objectContaining({
        code: 'ERR_BAD_RESPONSE',
        message: expect.stringContaining(message),
      }),
    );
  });
});

describe('credentialFile', () => {
  it("is tpm2-tools' layout: 0xBADCC0DE, version 1, the TPM2B_ID_OBJECT, the TPM2B_ENCRYPTED_SECRET", () => {
    const f = credentialFile({ credentialBlob: idObject, encryptedSecret: encSecret });
    expect(f.subarray(0, 8).toString('hex')).toBe('badcc0de00000001');
    expect(f.subarray(8, 8 + idObject.length).equals(idObject)).toBe(true);
    expect(f.subarray(8 + idObject.length).equals(encSecret)).toBe(true);
    expect(f.length).toBe(8 + 70 + 258);
  });
});

describe('qualifyingData', () => {
  it('is SHA-256 of "baton-tpm-v1\\n" nonce "\\n" base64url(SHA-256(CSR DER)): a known answer', () => {
    const csrDer = Buffer.from('3003020100', 'hex');
    // base64url(SHA-256(30 03 02 01 00)), computed apart from the code under test.
    const csrHash = createHash('sha256').update(csrDer).digest().toString('base64').replace(/=+$/, '');
    const expected = createHash('sha256')
      .update(`baton-tpm-v1\nnonce-1\n${csrHash.replace(/\+/g, '-').replace(/\//g, '_')}`)
      .digest();
    expect(qualifyingData('nonce-1', csrDer).equals(expected)).toBe(true);
    expect(qualifyingData('nonce-1', csrDer)).toHaveLength(32);
    expect(qualifyingData('nonce-2', csrDer).equals(expected)).toBe(false);
    expect(qualifyingData('nonce-1', Buffer.from('3003020101', 'hex')).equals(expected)).toBe(false);
  });
});

describe('EK identifier', () => {
  it('is the hex SHA-256 of the SPKI DER; the node ID is tpm- and its first 20 characters', () => {
    const spki = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex');
    const id = ekIdentifier(spki);
    expect(id).toBe(createHash('sha256').update(spki).digest('hex'));
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    expect(nodeIdOfEk(id)).toBe(`tpm-${id.slice(0, 20)}`);
  });
});

describe('ekCertificateFor', () => {
  const ca = testCa();
  const cert = new X509Certificate(ca.keyring.bundlePem);
  const der = Buffer.from(cert.raw);
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });

  it('ok/cut to its DER length: an NV index may be larger than the certificate', () => {
    expect(ekCertificateFor(Buffer.concat([der, Buffer.alloc(100)]), spki)?.equals(der)).toBe(true);
    expect(ekCertificateFor(der, spki)?.equals(der)).toBe(true);
  });

  it.each([
    ['fail/a certificate of another key', () => [der, otherSpki()]],
    ['fail/not DER', () => [Buffer.from('not a certificate'), spki]],
    ['fail/truncated', () => [der.subarray(0, der.length - 1), spki]],
    ['fail/empty', () => [Buffer.alloc(0), spki]],
  ])('%s: none is sent', (_name, args) => {
    const [nv, key] = args() as [Buffer, Buffer];
    expect(ekCertificateFor(nv, key)).toBeUndefined();
  });
});

function otherSpki(): Buffer {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
}
