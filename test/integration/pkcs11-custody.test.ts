import { createHash, verify } from 'node:crypto';
import { kekCustody } from '../../services/ca/src/domain/key-custody';
import { BatonError } from '../../services/ca/src/ground/errors';
import { Pkcs11Custody } from '../../services/ca/src/kms/pkcs11-custody';
import { parsePkcs11Uri } from '../../services/ca/src/kms/pkcs11-uri';
import { kekFromBase64 } from '../../services/ca/src/pki/kek';
import { spkiOf } from '../../services/ca/src/pki/keys';
import { softHsm, type SoftHsmToken, softHsmToken, useSoftHsmConfInProcess } from '../support/softhsm';
import { describeWith } from '../support/tools';

/**
 * The PKCS#11 key custody against a real token (SoftHSM2), in this process: keys made in the
 * token, sensitive and never extractable; one session logged in once; a token that goes away is
 * ERR_CA_UNAVAILABLE, not tried again before its backoff, and used again once it is back.
 */

const errorOf = (f: () => unknown): BatonError => {
  try {
    f();
  } catch (e) {
    if (e instanceof BatonError) return e;
    throw e;
  }
  throw new Error('no error');
};

describeWith([softHsm], 'PKCS#11 key custody (SoftHSM2)', () => {
  let token: SoftHsmToken;
  let custody: Pkcs11Custody;
  let now = 0;
  let forgetConf = () => {};

  beforeAll(() => {
    token = softHsmToken('custody');
    forgetConf = useSoftHsmConfInProcess(token);
    custody = new Pkcs11Custody(parsePkcs11Uri(token.uri('source')), { monotonicMs: () => now });
  });
  afterAll(() => {
    custody?.close();
    token?.cleanup();
    forgetConf();
  });

  it('ok/generates P-256 keys in the token: sensitive, never extractable, signing only; the record is a reference', () => {
    const key = custody.generate();
    const stored = key.store('ca-0123456789abcdef');
    expect(custody.id).toMatch(/^pkcs11:token=custody;serial=[0-9a-f]{16}$/);
    expect(stored).toEqual({ alg: 'pkcs11', kekId: custody.id, blob: expect.any(Buffer) });
    // The reference is the 20-byte CKA_ID: no room for key material.
    expect(stored.blob).toHaveLength(20);
    expect(key.publicKey.asymmetricKeyDetails).toEqual({ namedCurve: 'prime256v1' });
    expect(key.privateKey).toBeUndefined();

    const objects = token.objects().filter((o) => o.id === stored.blob.toString('hex'));
    expect(objects.map((o) => o.class).sort()).toEqual(['private', 'public']);
    expect(objects.find((o) => o.class === 'private')).toEqual({
      class: 'private',
      label: 'ca-0123456789abcdef',
      id: stored.blob.toString('hex'),
      sensitive: true,
      extractable: false,
      alwaysSensitive: true,
      neverExtractable: true,
      // PKCS#11 v2.40, C_GetAttributeValue: the value of a sensitive key is not given out.
      value: 'CKR_ATTRIBUTE_SENSITIVE',
    });
    expect(objects.find((o) => o.class === 'public')?.label).toBe('ca-0123456789abcdef');
  });

  it('ok/signs X.509 (DER ECDSA-Sig-Value) and JWS (r || s) signatures its public key verifies; loads by reference', () => {
    const key = custody.generate();
    const stored = key.store('kid-x');
    const data = Buffer.from('to be signed');
    const der = key.signer.sign(data);
    expect(der[0]).toBe(0x30);
    expect(verify('sha256', data, key.publicKey, der)).toBe(true);
    expect(key.signer.algorithmIdentifier.toString('hex')).toBe('300a06082a8648ce3d040302');
    const raw = key.signJws(data);
    expect(raw).toHaveLength(64);
    expect(verify('sha256', data, { key: key.publicKey, dsaEncoding: 'ieee-p1363' }, raw)).toBe(true);

    const loaded = custody.load(stored, 'kid-x');
    expect(spkiOf(loaded.publicKey)).toEqual(spkiOf(key.publicKey));
    expect(verify('sha256', data, loaded.publicKey, loaded.signer.sign(data))).toBe(true);
  });

  it('fail/a KEK-wrapped row with --kms, a token row without it, a reference the token does not hold', () => {
    const kek = kekFromBase64(Buffer.alloc(32, 7).toString('base64'), 'test');
    const wrapped = kekCustody(kek).generate().store('ca-1');
    expect(errorOf(() => custody.load(wrapped, 'ca-1'))).toMatchObject({
      code: 'ERR_KEK_INVALID',
      message: expect.stringMatching(/wrapped under a key-encryption key.*start without --kms/),
    });
    const inToken = custody.generate().store('ca-2');
    expect(errorOf(() => kekCustody(kek).load(inToken, 'ca-2'))).toMatchObject({
      code: 'ERR_KEK_INVALID',
      message: expect.stringContaining('kept in a PKCS#11 token (pkcs11:token=custody;serial='),
    });
    const missing = { ...inToken, blob: createHash('sha1').update('nothing').digest() };
    expect(errorOf(() => custody.load(missing, 'ca-3'))).toMatchObject({
      code: 'ERR_CA_UNAVAILABLE',
      message: expect.stringMatching(/^the public key of ca-3 .* is not in the token/),
    });
  });

  it('ok/one session, logged in once: signing goes on after the PIN is changed elsewhere', () => {
    const key = custody.generate();
    key.store('session-key');
    token.setPin(token.pin, 'Changed-pin-1');
    try {
      for (let i = 0; i < 50; i++) expect(key.signJws(Buffer.from([i]))).toHaveLength(64);
    } finally {
      token.setPin('Changed-pin-1', token.pin);
    }
  });

  it('fail/an unplugged token is ERR_CA_UNAVAILABLE; not tried again within the backoff; signs again once back', () => {
    const key = custody.generate();
    const stored = key.store('unplug-key');
    const data = Buffer.from('x');
    expect(key.signJws(data)).toHaveLength(64);

    token.unplug();
    const first = errorOf(() => key.signer.sign(data));
    expect(first.code).toBe('ERR_CA_UNAVAILABLE');
    expect(first.message).toMatch(
      /^the PKCS#11 token is unavailable \(no token present matches pkcs11:token=custody\?/,
    );
    // The token is back, but the backoff (250 ms after the first failed reopen) is not over: the
    // module is not asked, the answer is the same.
    token.plug();
    now += 100;
    expect(errorOf(() => key.signJws(data)).code).toBe('ERR_CA_UNAVAILABLE');
    now += 200;
    expect(verify('sha256', data, { key: key.publicKey, dsaEncoding: 'ieee-p1363' }, key.signJws(data))).toBe(
      true,
    );
    // The keys made before are found again in the new session.
    const loaded = custody.load(stored, 'unplug-key');
    expect(loaded.signJws(data)).toHaveLength(64);
  });

  it('ok/available() (what /readyz asks) says whether the token answers, without waiting for a signature', () => {
    now += 60_000;
    expect(custody.available()).toBe(true);
    token.unplug();
    try {
      // The token no longer answers (C_GetTokenInfo), and it cannot be opened again.
      expect(custody.available()).toBe(false);
      now += 100;
      expect(custody.available()).toBe(false);
    } finally {
      token.plug();
    }
    // Within the backoff nothing is asked; after it the token is opened again, with no signature.
    expect(custody.available()).toBe(false);
    now += 60_000;
    expect(custody.available()).toBe(true);
  });

  it('fail/a PIN the token refuses at re-login: ERR_CA_UNAVAILABLE naming the PIN source; recovers when the PIN is right again', () => {
    const key = custody.generate();
    key.store('pin-key');
    const data = Buffer.from('y');
    token.setPin(token.pin, 'Other-pin-2');
    token.unplug();
    expect(errorOf(() => key.signJws(data)).code).toBe('ERR_CA_UNAVAILABLE');
    token.plug();
    now += 60_000;
    const e = errorOf(() => key.signJws(data));
    expect(e.code).toBe('ERR_CA_UNAVAILABLE');
    expect(e.message).toMatch(/the token refused the PIN \(pin-source .*\/pin\)/);
    expect(e.message).not.toContain(token.pin);
    token.setPin('Other-pin-2', token.pin);
    now += 60_000;
    expect(key.signJws(data)).toHaveLength(64);
  });

  it('fail/at start: a shared object that is not a PKCS#11 module', () => {
    // The module file must exist for the URI to parse; a shared object that is not a module fails to load.
    const notModule = parsePkcs11Uri(
      `pkcs11:token=custody?module-path=${require.resolve('pkcs11js/build/Release/pkcs11.node')}&pin-value=1`,
    );
    expect(errorOf(() => new Pkcs11Custody(notModule))).toMatchObject({
      code: 'ERR_CA_UNAVAILABLE',
      message: expect.stringMatching(/^cannot load the PKCS#11 module /),
    });
  });
});
