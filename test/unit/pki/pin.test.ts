import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { base32 } from '../../../services/ca/src/pki/base32';
import { rootPin } from '../../../services/ca/src/pki/pin';
import { testCa } from '../../fixtures/test-ca';
import { describeWithTool, itWithTool } from '../../support/tools';

const openssl = (args: string[], input?: string | Buffer): Buffer => execFileSync('openssl', args, { input });

/** SHA-256 of the DER SubjectPublicKeyInfo, computed by openssl alone. */
const opensslSpkiSha256 = (publicPem: string): Buffer =>
  openssl(['dgst', '-sha256', '-binary'], openssl(['pkey', '-pubin', '-outform', 'DER'], publicPem));

describe('base32 (RFC 4648 §6, lowercase, no padding)', () => {
  // RFC 4648 §10 test vectors, lowercased with the padding removed.
  it.each([
    ['ok/empty', '', ''],
    ['ok/f', 'f', 'my'],
    ['ok/fo', 'fo', 'mzxq'],
    ['ok/foo', 'foo', 'mzxw6'],
    ['ok/foob', 'foob', 'mzxw6yq'],
    ['ok/fooba', 'fooba', 'mzxw6ytb'],
    ['ok/foobar', 'foobar', 'mzxw6ytboi'],
  ])('%s', (_name, input, expected) => {
    expect(base32(Buffer.from(input, 'latin1'))).toBe(expected);
  });

  it.each([
    ['ok/all zero bits', Buffer.alloc(5), 'aaaaaaaa'],
    ['ok/all one bits', Buffer.alloc(5, 0xff), '77777777'],
    ['ok/high bytes', Buffer.from([0xff, 0x00, 0x80]), '74aia'],
  ])('%s', (_name, input, expected) => {
    expect(base32(input)).toBe(expected);
  });

  itWithTool('base32', 'ok/matches coreutils base32 on random lengths 0..70', () => {
    for (let n = 0; n <= 70; n++) {
      const data = createHash('sha512')
        .update(String(n))
        .digest()
        .subarray(0, n % 64);
      const expected = execFileSync('base32', ['-w', '0'], { input: data })
        .toString()
        .toLowerCase()
        .replace(/=+$/, '');
      expect(base32(data)).toBe(expected);
    }
  });
});

describeWithTool('openssl', 'rootPin, computed independently by openssl', () => {
  it.each([
    ['ok/EC P-256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']],
    ['ok/EC P-384', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384']],
    ['ok/Ed25519', ['-algorithm', 'ED25519']],
  ])('%s generated key: base32(sha256(spki)), 52 lowercase chars', (_name, genArgs) => {
    const privatePem = openssl(['genpkey', ...genArgs]).toString();
    const publicPem = openssl(['pkey', '-pubout'], privatePem).toString();
    const spki = createPublicKey(publicPem).export({ type: 'spki', format: 'der' });
    const pin = rootPin(spki);
    expect(pin).toBe(base32(opensslSpkiSha256(publicPem)));
    expect(pin).toMatch(/^[a-z2-7]{52}$/);
  });

  it('ok/the pin of a test root equals openssl x509 -pubkey | pkey | dgst', () => {
    const ca = testCa();
    const root = ca.keyring.roots[0]!;
    const publicPem = openssl(['x509', '-noout', '-pubkey'], root.certPem).toString();
    expect(rootPin(root.spki)).toBe(base32(opensslSpkiSha256(publicPem)));
    expect(ca.keyring.pin).toBe(rootPin(root.spki));
    expect(ca.keyring.pin).toMatch(/^[a-z2-7]{52}$/);
  });

  it('fail/different keys give different pins', () => {
    const a = createPublicKey(
      openssl(['pkey', '-pubout'], openssl(['genpkey', '-algorithm', 'ED25519'])).toString(),
    );
    const b = createPublicKey(
      openssl(['pkey', '-pubout'], openssl(['genpkey', '-algorithm', 'ED25519'])).toString(),
    );
    expect(rootPin(a.export({ type: 'spki', format: 'der' }))).not.toBe(
      rootPin(b.export({ type: 'spki', format: 'der' })),
    );
  });
});
