import { createHash, createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { type Env, type Flags, loadServerConfig } from '../../services/ca/src/config';
import { x509popSignedBytes } from '../../services/ca/src/domain/attestation/x509pop-attestor';
import { issueLeaf } from '../../services/ca/src/domain/issue';
import { toPem } from '../../common/src/der';
import { describePublicKey, generateP256, spkiOf } from '../../services/ca/src/pki/keys';
import { memoryCertificates, testCa } from '../fixtures/test-ca';
import { tempDir, writeFiles } from '../support/tools';
import { errorOf } from '../support/errors';

describe('loadServerConfig: --x509pop-ca / --x509pop-role (issue 3)', () => {
  const dir = tempDir();
  const ca = testCa();
  const [root, intermediate] = ca.records.map((r) => toPem('CERTIFICATE', r.certificateDer));
  let files: Record<string, string>;

  beforeAll(async () => {
    const { privateKey } = generateP256();
    const leaf = await issueLeaf(
      { clock: ca.clock, issuer: ca.keyring.signing, certificates: memoryCertificates() },
      {
        kind: 'node',
        spiffeId: 'spiffe://test.example.org/node/n1',
        subject: { O: 'test.example.org', OU: 'worker', CN: 'n1' },
        key: describePublicKey(spkiOf(createPublicKey(privateKey))),
        ttlMs: 3600_000,
      },
    );
    files = writeFiles(dir.path, {
      'one.pem': root!,
      'two.pem': `# provisioning CAs\n${root}\n${intermediate}`,
      'leaf.pem': leaf.certificatePem,
      'with-key.pem': `${root}${privateKey.export({ type: 'pkcs8', format: 'pem' })}`,
      'empty.pem': '',
      'text.pem': 'not a certificate\n',
      'broken.pem': '-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n',
    });
  });
  afterAll(() => dir.cleanup());

  const server = (flags: Flags, env: Env = {}) => loadServerConfig(flags, env);

  it('ok/unset: the method is not offered', () => {
    expect(server({}).x509pop).toBeUndefined();
    expect(server({}, { BATON_X509POP_CA: '' }).x509pop).toBeUndefined();
  });

  it('ok/--x509pop-ca: the bundle is parsed once, role defaults to worker, frozen', () => {
    const c = server({ 'x509pop-ca': files['two.pem'] });
    expect(c.x509pop?.caFile).toBe(files['two.pem']);
    expect(c.x509pop?.role).toBe('worker');
    expect(c.x509pop?.cas.map((x) => x.raw.equals(ca.records[0]!.certificateDer))).toEqual([true, false]);
    expect(c.x509pop?.cas.every((x) => x.ca)).toBe(true);
    expect(Object.isFrozen(c.x509pop)).toBe(true);
    expect(Object.isFrozen(c.x509pop?.cas)).toBe(true);
  });

  it.each([
    ['ok/env', {}, { BATON_X509POP_CA: 'one.pem', BATON_X509POP_ROLE: 'manager' }, 'one.pem', 'manager'],
    ['ok/flags', { 'x509pop-ca': 'one.pem', 'x509pop-role': 'worker' }, {}, 'one.pem', 'worker'],
    [
      'ok/flags win over env',
      { 'x509pop-ca': 'two.pem', 'x509pop-role': 'manager' },
      { BATON_X509POP_CA: 'one.pem', BATON_X509POP_ROLE: 'worker' },
      'two.pem',
      'manager',
    ],
  ] as [string, Flags, Env, string, string][])('%s', (_name, flags, env, file, role) => {
    const at = (v: unknown) => (typeof v === 'string' && v.endsWith('.pem') ? join(dir.path, v) : v);
    const c = server(
      Object.fromEntries(Object.entries(flags).map(([k, v]) => [k, at(v)])) as Flags,
      Object.fromEntries(Object.entries(env).map(([k, v]) => [k, at(v)])) as Env,
    );
    expect(c.x509pop?.caFile).toBe(join(dir.path, file));
    expect(c.x509pop?.role).toBe(role);
  });

  it.each([
    ['fail/missing file', 'missing.pem', /^--x509pop-ca: cannot read .*missing\.pem \(ENOENT\)$/],
    ['fail/empty file', 'empty.pem', /no PEM certificate found/],
    ['fail/not PEM', 'text.pem', /no PEM certificate found/],
    ['fail/a broken certificate', 'broken.pem', /certificate 1 cannot be parsed/],
    ['fail/a leaf, not a CA', 'leaf.pem', /certificate 1 is not a CA certificate/],
    ['fail/a private key in the bundle', 'with-key.pem', /contains a private key/],
  ])('%s -> ERR_CONFIG_INVALID', (_name, file, message) => {
    const e = errorOf(() => server({ 'x509pop-ca': join(dir.path, file) }));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toMatch(/^--x509pop-ca/);
    expect(e.message).toMatch(message);
  });

  it.each([
    ['fail/unknown role', { 'x509pop-ca': 'x', 'x509pop-role': 'admin' }, {}, /one of worker, manager/],
    ['fail/role in the wrong case', {}, { BATON_X509POP_CA: 'x', BATON_X509POP_ROLE: 'Manager' }, /one of/],
    ['fail/role without a CA', { 'x509pop-role': 'manager' }, {}, /needs --x509pop-ca/],
    ['fail/env role without a CA', {}, { BATON_X509POP_ROLE: 'worker' }, /needs --x509pop-ca/],
  ] as [string, Flags, Env, RegExp][])('%s -> ERR_CONFIG_INVALID', (_name, flags, env, message) => {
    const e = errorOf(() => server(flags, env));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toMatch(/^--x509pop-role: /);
    expect(e.message).toMatch(message);
  });
});

describe('x509popSignedBytes: the bytes docs/attestation.md tells nodes to sign', () => {
  it('ok/label, nonce and unpadded base64url SHA-256 of the CSR DER, newline-separated, no trailing newline', () => {
    const nonce = 'A'.repeat(43);
    const csrDer = Buffer.from('3000', 'hex');
    const hash = createHash('sha256').update(csrDer).digest('base64url');
    expect(hash).not.toContain('=');
    expect(x509popSignedBytes(nonce, csrDer).toString('utf8')).toBe(`baton-x509pop-v1\n${nonce}\n${hash}`);
  });
});
