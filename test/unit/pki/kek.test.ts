import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { type WrappedKey, kekFromBase64, unwrapKey, wrapKey } from '../../../services/ca/src/pki/kek';
import { errorOf } from '../../support/errors';

const newKek = () => kekFromBase64(randomBytes(32).toString('base64'), 'BATON_KEK');
const pkcs8 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
  type: 'pkcs8',
  format: 'der',
});
const CA_ID = 'ca-0123456789abcdef';

describe('wrapKey / unwrapKey (AES-256-GCM, CA id as AAD)', () => {
  const kek = newKek();

  it('ok/round-trips a PKCS#8 key', () => {
    const wrapped = wrapKey(kek, pkcs8, CA_ID);
    expect(wrapped.alg).toBe('A256GCM');
    expect(wrapped.kekId).toBe(kek.id);
    expect(wrapped.blob.length).toBe(12 + pkcs8.length + 16);
    expect(wrapped.blob.includes(pkcs8)).toBe(false);
    expect(unwrapKey(kek, wrapped, CA_ID).equals(pkcs8)).toBe(true);
  });

  it('ok/uses a fresh IV for every wrap', () => {
    const a = wrapKey(kek, pkcs8, CA_ID);
    const b = wrapKey(kek, pkcs8, CA_ID);
    expect(a.blob.subarray(0, 12).equals(b.blob.subarray(0, 12))).toBe(false);
    expect(unwrapKey(kek, b, CA_ID).equals(pkcs8)).toBe(true);
  });

  it('fail/wrong KEK names both key ids', () => {
    const other = newKek();
    const e = errorOf(() => unwrapKey(other, wrapKey(kek, pkcs8, CA_ID), CA_ID));
    expect(e.code).toBe('ERR_KEK_INVALID');
    expect(e.message).toContain(other.id);
    expect(e.message).toContain(kek.id);
    expect(other.id).not.toBe(kek.id);
  });

  it('fail/wrong KEK that claims the right id (forged kekId) still fails to decrypt', () => {
    const other = newKek();
    const wrapped = { ...wrapKey(kek, pkcs8, CA_ID), kekId: other.id };
    expect(errorOf(() => unwrapKey(other, wrapped, CA_ID)).code).toBe('ERR_KEK_INVALID');
  });

  const tamper = (w: WrappedKey, at: (len: number) => number): WrappedKey => {
    const blob = Buffer.from(w.blob);
    blob[at(blob.length)]! ^= 0x01;
    return { ...w, blob };
  };

  it.each([
    ['fail/flipped IV bit', (w: WrappedKey) => tamper(w, () => 0)],
    ['fail/flipped ciphertext bit', (w: WrappedKey) => tamper(w, () => 20)],
    ['fail/flipped tag bit', (w: WrappedKey) => tamper(w, (n) => n - 1)],
    ['fail/truncated blob', (w: WrappedKey) => ({ ...w, blob: w.blob.subarray(0, w.blob.length - 1) })],
    ['fail/blob shorter than IV and tag', (w: WrappedKey) => ({ ...w, blob: w.blob.subarray(0, 10) })],
    ['fail/empty blob', (w: WrappedKey) => ({ ...w, blob: Buffer.alloc(0) })],
    [
      'fail/extra byte appended',
      (w: WrappedKey) => ({ ...w, blob: Buffer.concat([w.blob, Buffer.from([0])]) }),
    ],
  ])('%s -> ERR_KEK_INVALID', (_name, change) => {
    const wrapped = wrapKey(kek, pkcs8, CA_ID);
    expect(errorOf(() => unwrapKey(kek, change(wrapped), CA_ID)).code).toBe('ERR_KEK_INVALID');
  });

  it.each([
    ['fail/another CA id', 'ca-fedcba9876543210'],
    ['fail/empty AAD', ''],
    ['fail/CA id with a suffix', `${CA_ID}x`],
  ])('%s as AAD -> ERR_KEK_INVALID (a wrapped key cannot move between CA rows)', (_name, aad) => {
    const wrapped = wrapKey(kek, pkcs8, CA_ID);
    expect(errorOf(() => unwrapKey(kek, wrapped, aad)).code).toBe('ERR_KEK_INVALID');
  });

  it('fail/unknown wrapping algorithm', () => {
    const wrapped = { ...wrapKey(kek, pkcs8, CA_ID), alg: 'A128GCM' } as unknown as WrappedKey;
    const e = errorOf(() => unwrapKey(kek, wrapped, CA_ID));
    expect(e.code).toBe('ERR_KEK_INVALID');
    expect(e.message).toContain('A128GCM');
  });
});

describe('kekFromBase64', () => {
  const key = randomBytes(32);

  it.each([
    ['ok/padded base64', key.toString('base64')],
    ['ok/surrounding whitespace and newline (a file written by echo)', ` ${key.toString('base64')}\n`],
    ['ok/unpadded base64', key.toString('base64').replace(/=+$/, '')],
  ])('%s', (_name, text) => {
    const kek = kekFromBase64(text, 'BATON_KEK');
    expect(kek.key.equals(key)).toBe(true);
    expect(kek.id).toMatch(/^kek-[0-9a-f]{16}$/);
  });

  it('ok/the id is derived from the key: same key, same id; other key, other id', () => {
    expect(kekFromBase64(key.toString('base64'), 'a').id).toBe(kekFromBase64(key.toString('base64'), 'b').id);
    expect(kekFromBase64(randomBytes(32).toString('base64'), 'a').id).not.toBe(
      kekFromBase64(key.toString('base64'), 'a').id,
    );
  });

  it('ok/the id does not reveal the key', () => {
    const kek = kekFromBase64(key.toString('base64'), 'a');
    expect(key.toString('hex')).not.toContain(kek.id.slice(4));
  });

  it.each([
    ['fail/empty', ''],
    ['fail/not base64', 'this is not base64 at all, not even close!!'],
    ['fail/base64url alphabet', Buffer.from(Array.from({ length: 32 }, () => 0xfb)).toString('base64url')],
    ['fail/31 bytes', randomBytes(31).toString('base64')],
    ['fail/33 bytes', randomBytes(33).toString('base64')],
    ['fail/64 bytes', randomBytes(64).toString('base64')],
    ['fail/hex of 32 bytes', randomBytes(32).toString('hex')],
    ['fail/whitespace inside', `${key.toString('base64').slice(0, 20)} ${key.toString('base64').slice(20)}`],
  ])('%s -> ERR_KEK_INVALID naming the source', (_name, text) => {
    const e = errorOf(() => kekFromBase64(text, 'BATON_KEK'));
    expect(e.code).toBe('ERR_KEK_INVALID');
    expect(e.message).toContain('BATON_KEK');
    expect(e.message).not.toContain(text.trim() || '\u0000');
  });
});
