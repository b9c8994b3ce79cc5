import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { manufacturerCa, startSwtpm, swtpmAvailable } from '../support/swtpm';

const d = swtpmAvailable() ? describe : describe.skip;

d('software TPMs for tests (test/support/swtpm.ts)', () => {
  test('two TPMs have different EKs; the EK certificate is signed by the manufacturer CA', async () => {
    const maker = manufacturerCa();
    const a = await startSwtpm({ manufacturer: maker });
    const b = await startSwtpm();
    try {
      const ekA = await a.tool('tpm2_createek', [
        '-c',
        join(a.dir, 'ek.ctx'),
        '-G',
        'rsa',
        '-u',
        join(a.dir, 'ek.pub'),
        '-f',
        'pem',
      ]);
      const ekB = await b.tool('tpm2_createek', [
        '-c',
        join(b.dir, 'ek.ctx'),
        '-G',
        'rsa',
        '-u',
        join(b.dir, 'ek.pub'),
        '-f',
        'pem',
      ]);
      expect(ekA.length).toBeGreaterThanOrEqual(0);
      expect(ekB.length).toBeGreaterThanOrEqual(0);
      const pemA = readFileSync(join(a.dir, 'ek.pub'), 'utf8');
      const pemB = readFileSync(join(b.dir, 'ek.pub'), 'utf8');
      expect(pemA).toContain('BEGIN PUBLIC KEY');
      expect(pemA).not.toBe(pemB);
      const cert = new X509Certificate(readFileSync(join(a.ekCertDir!, 'ek-rsa2048.crt')));
      expect(cert.verify(new X509Certificate(maker.issuerPem()).publicKey)).toBe(true);
      const certSpki = cert.publicKey.export({ type: 'spki', format: 'der' });
      const ekSpki = createHash('sha256').update(certSpki).digest('hex');
      expect(ekSpki).toHaveLength(64);
      expect(cert.publicKey.export({ type: 'spki', format: 'pem' })).toBe(pemA);
      expect(a.ekCertDir).not.toBeNull();
      expect(b.ekCertDir).toBeNull();
    } finally {
      await a.stop();
      await b.stop();
    }
  }, 60_000);
});
