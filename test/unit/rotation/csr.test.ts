import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, sign, verify, webcrypto } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  createCsr,
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  p1363ToDer,
} from '../../../common/src/csr';
import { parseCsr } from '../../../services/ca/src/pki/csr';
import { run, tempDir } from '../../support/tools';

const dir = tempDir('baton-client-csr-');
afterAll(() => dir.cleanup());

let files = 0;
function write(name: string, content: string): string {
  const path = join(dir.path, `${files++}-${name}`);
  writeFileSync(path, content);
  return path;
}

/** Runs openssl and returns its stdout; key generation progress on stderr is dropped. */
const openssl = (args: string[]): string =>
  execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });

const spkiOf = async (key: webcrypto.CryptoKey) => Buffer.from(await webcrypto.subtle.exportKey('spki', key));

describe('createCsr, checked by openssl and by the CA parser', () => {
  it.each([
    ['ok/with-common-name', { commonName: 'node-1' }, /CN\s*=\s*node-1/],
    ['ok/without-subject', {}, /Subject:\s*\n/],
    ['ok/utf8-common-name', { commonName: 'nœud-1' }, /Subject:/],
  ])('%s passes openssl req -verify and parseCsr', async (_n, params, subject) => {
    const keys = await generateKeyPair();
    const csr = await createCsr(keys, params);
    expect(csr.pem).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n/);
    const path = write('req.pem', csr.pem);

    const verified = run('openssl', ['req', '-in', path, '-verify', '-noout']);
    expect(verified.out).toMatch(/verify OK/);
    expect(verified.status).toBe(0);
    const text = run('openssl', ['req', '-in', path, '-noout', '-text']).out;
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(text).toMatch(/NIST CURVE: P-256/);
    expect(text).toMatch(subject);

    const parsed = parseCsr(csr.pem);
    expect(parsed.key.kind).toBe('ec-p256');
    expect(parsed.key.spki.equals(await spkiOf(keys.publicKey))).toBe(true);
    expect(parseCsr(csr.der).der.equals(csr.der)).toBe(true);
  });

  it('ok/many-signatures: 200 CSRs all parse (covers r and s with leading zeros or high bits)', async () => {
    const keys = await generateKeyPair();
    for (let i = 0; i < 200; i++) expect(parseCsr((await createCsr(keys)).der).key.kind).toBe('ec-p256');
  });
});

describe('private key files', () => {
  it('ok/exported-key-loads-with-openssl-pkey-and-matches-the-csr', async () => {
    const keys = await generateKeyPair();
    const pem = await exportPrivateKeyPem(keys.privateKey);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const keyPath = write('key.pem', pem);
    const checked = run('openssl', ['pkey', '-in', keyPath, '-check', '-noout']);
    expect(checked.status).toBe(0);
    expect(checked.out).toMatch(/valid/i);
    const csrPath = write('req.pem', (await createCsr(keys)).pem);
    const fromKey = openssl(['pkey', '-in', keyPath, '-pubout']);
    const fromCsr = openssl(['req', '-in', csrPath, '-pubkey', '-noout']);
    expect(fromKey).toBe(fromCsr);
  });

  it('ok/round-trip: a reloaded key signs CSRs for the same public key', async () => {
    const keys = await generateKeyPair();
    const loaded = await importPrivateKeyPem(await exportPrivateKeyPem(keys.privateKey));
    const parsed = parseCsr((await createCsr(loaded)).pem);
    expect(parsed.key.spki.equals(await spkiOf(keys.publicKey))).toBe(true);
  });

  it.each([
    [
      'ok/openssl-p256-pkcs8',
      ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
      'ec-p256',
      'SHA256',
    ],
    [
      'ok/openssl-p384-pkcs8',
      ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
      'ec-p384',
      'SHA384',
    ],
    ['ok/openssl-p256-sec1', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout'], 'ec-p256', 'SHA256'],
  ])('%s loads and signs a CSR openssl verifies', async (_n, args, kind, hash) => {
    const pem = openssl(args);
    const csr = await createCsr(await importPrivateKeyPem(pem));
    const path = write('req.pem', csr.pem);
    expect(run('openssl', ['req', '-in', path, '-verify', '-noout']).status).toBe(0);
    expect(run('openssl', ['req', '-in', path, '-noout', '-text']).out).toContain(`ecdsa-with-${hash}`);
    expect(parseCsr(csr.pem).key.kind).toBe(kind);
  });

  it.each([
    [
      'fail/rsa-key',
      () => openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']),
      /unsupported key/,
    ],
    ['fail/ed25519-key', () => openssl(['genpkey', '-algorithm', 'ED25519']), /unsupported key/],
    [
      'fail/secp256k1-key',
      () => openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1']),
      /unsupported key/,
    ],
    [
      'fail/not-a-key',
      () => '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n',
      /not a readable/,
    ],
    ['fail/garbage-text', () => 'garbage', /not a readable/],
  ])('%s is refused', async (_n, pem, message) => {
    await expect(importPrivateKeyPem(pem())).rejects.toThrow(message);
  });

  it('fail/createCsr-with-a-non-ecdsa-key', async () => {
    const rsa = await webcrypto.subtle.generateKey(
      {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      },
      false,
      ['sign', 'verify'],
    );
    await expect(createCsr(rsa)).rejects.toThrow(/unsupported key/);
  });
});

describe('p1363ToDer (RFC 3279 §2.2.3 Ecdsa-Sig-Value)', () => {
  const half = (first: number[], fill = 0x11) => [...first, ...new Array(32 - first.length).fill(fill)];
  it.each([
    ['ok/plain', half([0x11]), half([0x22], 0x22), `30440220${'11'.repeat(32)}0220${'22'.repeat(32)}`],
    [
      'ok/high-bit-gets-a-zero-octet',
      half([0x80]),
      half([0x22], 0x22),
      `3045022100${'80'}${'11'.repeat(31)}0220${'22'.repeat(32)}`,
    ],
    [
      'ok/leading-zero-is-stripped',
      half([0x00, 0x7f]),
      half([0x22], 0x22),
      `3043021f7f${'11'.repeat(30)}0220${'22'.repeat(32)}`,
    ],
    [
      'ok/leading-zero-then-high-bit-keeps-one-zero',
      half([0x00, 0x80]),
      half([0x22], 0x22),
      `3044022000${'80'}${'11'.repeat(30)}0220${'22'.repeat(32)}`,
    ],
    [
      'ok/all-zero-is-integer-zero',
      new Array(32).fill(0),
      half([0x22], 0x22),
      `3025020100${'0220'}${'22'.repeat(32)}`,
    ],
  ])('%s', (_n, r, s, hex) => {
    expect(p1363ToDer(Uint8Array.from([...r, ...s]), 32).toString('hex')).toBe(hex);
  });

  it('fail/wrong-length', () => {
    expect(() => p1363ToDer(new Uint8Array(63), 32)).toThrow(/signature length/);
  });

  it('ok/property: any P1363 signature from node converts to a DER signature node verifies', async () => {
    const { privateKey, publicKey } = await generateKeyPair();
    const priv = webcrypto.subtle.exportKey('pkcs8', privateKey);
    const signer = createPrivateKey({ key: Buffer.from(await priv), format: 'der', type: 'pkcs8' });
    const verifier = createPublicKey({ key: await spkiOf(publicKey), format: 'der', type: 'spki' });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (msg) => {
        const p1363 = sign('sha256', msg, { key: signer, dsaEncoding: 'ieee-p1363' });
        return verify('sha256', msg, { key: verifier, dsaEncoding: 'der' }, p1363ToDer(p1363, 32));
      }),
      { numRuns: 500 },
    );
  });
});
