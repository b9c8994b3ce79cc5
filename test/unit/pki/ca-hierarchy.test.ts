import { createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { issueLeaf } from '../../../services/ca/src/domain/issue';
import { describePublicKey, generateP256, spkiOf } from '../../../services/ca/src/pki/keys';
import { TEST_TD, memoryCertificates, testCa } from '../../fixtures/test-ca';
import { itWithTool, opensslText, run, tempDir, writeFiles } from '../../support/tools';

describe('CA hierarchy and leaf profile, checked by openssl', () => {
  const dir = tempDir();
  afterAll(() => dir.cleanup());
  const ca = testCa();
  const rootPem = ca.keyring.roots[0]!.certPem;
  const interPem = ca.keyring.signing.certPem;

  it('makes a self-signed root with critical basicConstraints pathlen 1 and CA key usages', () => {
    const text = opensslText(rootPem);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:1/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(text).toMatch(/Subject Key Identifier/);
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(text).toContain(`O = ${TEST_TD}`);
    // SPIFFE X.509-SVID §4.1: a signing certificate carries its trust domain's SPIFFE ID.
    expect(text).toMatch(
      new RegExp(`X509v3 Subject Alternative Name:\\s+URI:spiffe://${TEST_TD.replace(/\./g, '\\.')}\\n`),
    );
  });

  it('makes an intermediate with pathlen 0, AKI of the root, a 1-year life within the root', () => {
    const text = opensslText(interPem);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(text).toMatch(/Authority Key Identifier/);
    expect(text).toMatch(/X509v3 CRL Distribution Points/);
    expect(text).toMatch(
      new RegExp(`X509v3 Subject Alternative Name:\\s+URI:spiffe://${TEST_TD.replace(/\./g, '\\.')}\\n`),
    );
    const inter = ca.keyring.signing.record;
    const days = (inter.notAfter.getTime() - inter.notBefore.getTime()) / 86_400_000;
    expect(Math.round(days)).toBe(365);
    expect(ca.keyring.roots[0]!.record.notAfter.getTime()).toBeGreaterThan(inter.notAfter.getTime());
  });

  it('chains root -> intermediate under openssl -x509_strict', () => {
    const f = writeFiles(dir.path, { 'root.pem': rootPem, 'inter.pem': interPem });
    const r = run('openssl', ['verify', '-x509_strict', '-CAfile', f['root.pem']!, f['inter.pem']!]);
    expect(r.out).toContain('inter.pem: OK');
    expect(r.status).toBe(0);
  });

  it.each([
    ['ok/ec-p256', { type: 'ec', namedCurve: 'P-256' }],
    ['ok/ec-p384', { type: 'ec', namedCurve: 'P-384' }],
    ['ok/rsa-2048', { type: 'rsa', modulusLength: 2048 }],
  ] as const)('%s leaf verifies as sslclient and sslserver and has the SVID profile', async (_name, spec) => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { publicKey } =
      spec.type === 'ec'
        ? generateKeyPairSync('ec', { namedCurve: spec.namedCurve })
        : generateKeyPairSync('rsa', { modulusLength: spec.modulusLength });
    const certificates = memoryCertificates();
    const leaf = await issueLeaf(
      { clock: ca.clock, issuer: ca.keyring.signing, certificates },
      {
        kind: 'workload',
        spiffeId: `spiffe://${TEST_TD}/web`,
        subject: { O: TEST_TD, CN: 'web' },
        key: describePublicKey(spkiOf(publicKey)),
        ttlMs: 3_600_000,
        dnsNames: ['web.internal'],
      },
    );
    expect(certificates.all.map((c) => c.serial)).toEqual([leaf.record.serial]);
    const f = writeFiles(dir.path, {
      'root.pem': rootPem,
      'inter.pem': interPem,
      'leaf.pem': leaf.certificatePem,
    });
    for (const purpose of ['sslclient', 'sslserver']) {
      const r = run('openssl', [
        'verify',
        '-x509_strict',
        '-purpose',
        purpose,
        '-CAfile',
        f['root.pem']!,
        '-untrusted',
        f['inter.pem']!,
        f['leaf.pem']!,
      ]);
      expect(r.out).toContain('leaf.pem: OK');
    }
    const text = opensslText(leaf.certificatePem);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(
      spec.type === 'rsa'
        ? /Key Usage: critical\s+Digital Signature, Key Encipherment/
        : /Key Usage: critical\s+Digital Signature\s/,
    );
    expect(text).toMatch(
      /Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/,
    );
    expect(text).toMatch(
      /Subject Alternative Name:\s+URI:spiffe:\/\/test\.example\.org\/web, DNS:web\.internal/,
    );
    expect(text).toContain('OCSP - URI:https://127.0.0.1:8443/v1/ocsp');
    expect(text).toContain(`URI:https://127.0.0.1:8443/v1/crl?issuer=${ca.keyring.signing.record.id}`);
    expect(leaf.record.serial).toMatch(/^[0-7][0-9a-f]{31}$/);
  });

  it('caps a leaf notAfter at the signing CA notAfter and backdates notBefore by at most 60 s', async () => {
    const certificates = memoryCertificates();
    const key = describePublicKey(spkiOf(createPublicKey(generateP256().privateKey)));
    const leaf = await issueLeaf(
      { clock: ca.clock, issuer: ca.keyring.signing, certificates },
      {
        kind: 'node',
        spiffeId: `spiffe://${TEST_TD}/node/n1`,
        subject: { CN: 'n1' },
        key,
        ttlMs: 3650 * 86_400_000,
      },
    );
    expect(leaf.record.notAfter.getTime()).toBe(ca.keyring.signing.record.notAfter.getTime());
    expect(ca.clock.now().getTime() - leaf.record.notBefore.getTime()).toBeLessThanOrEqual(60_000);
  });

  itWithTool('certtool', 'chain verifies with GnuTLS certtool', () => {
    const f = writeFiles(dir.path, { 'root.pem': rootPem, 'chain.pem': interPem });
    const r = run('certtool', [
      '--verify',
      '--load-ca-certificate',
      f['root.pem']!,
      '--infile',
      join(dir.path, 'chain.pem'),
    ]);
    expect(r.out).toMatch(/Chain verification output: Verified/);
  });
});
