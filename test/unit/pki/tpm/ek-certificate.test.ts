import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BatonError } from '../../../../services/ca/src/ground/errors';
import {
  checkEkCertificate,
  type ManufacturerAnchor,
  readEkCertificate,
  readManufacturerCas,
} from '../../../../services/ca/src/pki/tpm';
import { CorporatePki } from '../../../support/corporate-ca';
import { issueEkCertificate } from '../../../support/ek-certificates';
import { tempDir } from '../../../support/tools';
import { freshKeyPair } from '../../../support/tpm-structures';

/**
 * EK certificates against manufacturer CAs (pki/tpm/ek-certificate.ts), made with the openssl
 * command line in the TCG profile's shape (empty subject, critical subjectAltName directoryName);
 * the certificates swtpm_setup makes are tested end to end in test/integration/tpm-attestation.
 */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof BatonError) return `${e.code} ${e.message}`;
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('EK certificates (pki/tpm/ek-certificate.ts)', () => {
  const dir = tempDir('baton-ek-cert-');
  afterAll(() => dir.cleanup());
  const pki = new CorporatePki(dir.path);
  const root = pki.root('TPM Maker Root');
  const issuer = pki.intermediate('TPM Maker EK CA', root);
  const stranger = pki.root('Another Maker Root');

  const anchor = (pem: string): ManufacturerAnchor & { name: string } => {
    const [ca] = readManufacturerCas(pem);
    return {
      name: ca!.subject,
      cert: new X509Certificate(pem),
      notBefore: ca!.notBefore,
      notAfter: ca!.notAfter,
    };
  };
  const anchors = [anchor(root.pem), anchor(issuer.pem)];
  const now = () => new Date();

  const rsa = freshKeyPair('rsa').publicKey;
  const ecc = freshKeyPair('ecc').publicKey;
  const spki = (k: typeof rsa) => k.export({ type: 'spki', format: 'der' });
  const ekOf = (k: typeof rsa) => ({
    spki: spki(k),
    type: (k.asymmetricKeyType === 'rsa' ? 'rsa' : 'ecc') as 'rsa' | 'ecc',
  });
  const cert = (k: typeof rsa, o: Parameters<typeof issueEkCertificate>[3] = {}, by = issuer) =>
    readEkCertificate(issueEkCertificate(dir.path, by, spki(k), o));

  it.each([
    ['RSA', rsa],
    ['ECC P-256', ecc],
  ])(
    'ok/an %s EK certificate in the TCG shape, issued by a manufacturer intermediate: that anchor',
    (_n, k) => {
      const c = cert(k);
      // The TCG profile's empty subject (node:crypto reports none).
      expect(c.cert.subject ?? '').toBe('');
      expect(checkEkCertificate(c, ekOf(k), anchors, now()).name).toBe(anchors[1]!.name);
    },
  );

  it('ok/keyUsage may be absent', () => {
    expect(checkEkCertificate(cert(ecc, { keyUsage: [] }), ekOf(ecc), anchors, now()).name).toBe(
      anchors[1]!.name,
    );
  });

  const UNKNOWN = 'ERR_ATTESTATION_FAILED unknown TPM: ';

  it('fail/the certificate of another key: the EK certificate is for another key', () => {
    expect(refusal(() => checkEkCertificate(cert(rsa), ekOf(ecc), anchors, now()))).toBe(
      `${UNKNOWN}the EK certificate is for another key`,
    );
  });

  it('fail/an unknown critical extension', () => {
    const c = cert(ecc, { extra: ['1.2.3.4.5=critical,DER:0500'] });
    expect(refusal(() => checkEkCertificate(c, ekOf(ecc), anchors, now()))).toBe(
      `${UNKNOWN}the EK certificate has an unsupported critical extension`,
    );
    // Not critical: accepted (RFC 5280 §4.2, a non-critical extension may be ignored).
    const ok = cert(ecc, { extra: ['1.2.3.4.5=DER:0500'] });
    expect(() => checkEkCertificate(ok, ekOf(ecc), anchors, now())).not.toThrow();
  });

  it('fail/keyUsage without keyEncipherment (RSA) or keyAgreement (ECC)', () => {
    const c = cert(rsa, { keyUsage: ['keyUsage=critical,digitalSignature'] });
    expect(refusal(() => checkEkCertificate(c, ekOf(rsa), anchors, now()))).toBe(
      `${UNKNOWN}the EK certificate does not allow keyEncipherment`,
    );
    const e = cert(ecc, { keyUsage: ['keyUsage=critical,keyEncipherment'] });
    expect(refusal(() => checkEkCertificate(e, ekOf(ecc), anchors, now()))).toBe(
      `${UNKNOWN}the EK certificate does not allow keyAgreement`,
    );
  });

  it('fail/a CA certificate for the EK', () => {
    const c = cert(ecc, { basicConstraints: 'basicConstraints=critical,CA:TRUE' });
    expect(refusal(() => checkEkCertificate(c, ekOf(ecc), anchors, now()))).toBe(
      `${UNKNOWN}the EK certificate is a CA certificate`,
    );
  });

  it('fail/expired, not yet valid (by the clock given)', () => {
    const c = cert(ecc, { days: 1 });
    expect(
      refusal(() => checkEkCertificate(c, ekOf(ecc), anchors, new Date(Date.now() + 2 * 86_400_000))),
    ).toBe(`${UNKNOWN}the EK certificate is expired or not yet valid`);
    expect(refusal(() => checkEkCertificate(c, ekOf(ecc), anchors, new Date(Date.now() - 86_400_000)))).toBe(
      `${UNKNOWN}the EK certificate is expired or not yet valid`,
    );
  });

  it('fail/issued by another maker, or by the intermediate when only the root is trusted', () => {
    const c = cert(ecc, {}, stranger);
    expect(refusal(() => checkEkCertificate(c, ekOf(ecc), anchors, now()))).toBe(
      `${UNKNOWN}the EK certificate is not issued by a manufacturer CA`,
    );
    expect(refusal(() => checkEkCertificate(cert(ecc), ekOf(ecc), [anchors[0]!], now()))).toBe(
      `${UNKNOWN}the EK certificate is not issued by a manufacturer CA`,
    );
  });

  it('fail/a manufacturer CA that has expired', () => {
    const c = cert(ecc);
    const expired = { ...anchors[1]!, notAfter: new Date(Date.now() - 1000) };
    expect(refusal(() => checkEkCertificate(c, ekOf(ecc), [expired], now()))).toBe(
      `${UNKNOWN}the manufacturer CA certificate is expired or not yet valid`,
    );
  });

  it('fail/bytes that are not a certificate: 400', () => {
    for (const bytes of [
      Buffer.from('not a certificate'),
      Buffer.alloc(0),
      issueEkCertificate(dir.path, issuer, spki(ecc)).subarray(0, 100),
    ]) {
      expect(refusal(() => readEkCertificate(bytes))).toBe(
        'ERR_BAD_REQUEST the EK certificate cannot be parsed (DER X.509 expected)',
      );
    }
  });
});

describe('manufacturer CA files (pki/tpm/manufacturer-cas.ts)', () => {
  const dir = tempDir('baton-maker-cas-');
  afterAll(() => dir.cleanup());
  const pki = new CorporatePki(dir.path);
  const root = pki.root('Maker Root');
  const inter = pki.intermediate('Maker EK CA', root);
  const leafReq = pki.newRequest('/CN=not a CA');
  const leaf = pki.sign(leafReq.csrFile, root, { ext: ['basicConstraints=critical,CA:FALSE'] });
  const noBc = pki.sign(pki.newRequest('/CN=no basicConstraints').csrFile, root, {
    ext: ['keyUsage=keyCertSign'],
  });

  it('ok/a root and an intermediate: both, with subject, fingerprint and validity', () => {
    const cas = readManufacturerCas(root.pem + inter.pem);
    expect(cas.map((c) => c.subject)).toEqual(['O=Corp, CN=Maker Root', 'O=Corp, CN=Maker EK CA']);
    expect(cas[0]!.fingerprint).toBe(
      new X509Certificate(root.pem).fingerprint256.replace(/:/g, '').toLowerCase(),
    );
    expect(cas[1]!.notAfter.getTime()).toBeGreaterThan(Date.now());
  });

  it.each([
    [
      'a private key beside the certificate',
      () => root.pem + readFileSync(root.keyFile, 'utf8'),
      'the file contains a private key: give only the manufacturer CA certificates',
    ],
    ['an empty file', () => '', 'no PEM certificate found'],
    ['text without a certificate', () => 'hello\n', 'no PEM certificate found'],
    [
      'a leaf (CA:FALSE)',
      () => root.pem + leaf,
      'certificate 2 is not a CA certificate (basicConstraints cA)',
    ],
    [
      'a certificate without basicConstraints',
      () => noBc,
      'certificate 1 is not a CA certificate (basicConstraints cA)',
    ],
    ['the same certificate twice', () => root.pem + root.pem, 'certificate 2 appears twice in the file'],
    [
      'a damaged certificate',
      () => '-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n',
      'certificate 1 cannot be parsed',
    ],
  ])('fail/%s', (_name, pem, why) => {
    expect(refusal(() => readManufacturerCas(pem()))).toBe(`ERR_BAD_REQUEST ${why}`);
  });

  it('fail/more than 32 certificates', () => {
    expect(refusal(() => readManufacturerCas(root.pem.repeat(33)))).toBe(
      'ERR_BAD_REQUEST at most 32 certificates at once',
    );
  });
});
