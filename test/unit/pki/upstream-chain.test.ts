import { randomBytes } from 'node:crypto';
import { pendingCsrPem, prepareUpstreamCa } from '../../../services/ca/src/domain/upstream-ca';
import { BatonError } from '../../../services/ca/src/ground/errors';
import { kekFromBase64 } from '../../../services/ca/src/pki/kek';
import { uriHostMatches } from '../../../services/ca/src/pki/ca-constraints';
import { checkUpstreamChain } from '../../../services/ca/src/pki/upstream-chain';
import type { PendingUpstream } from '../../../services/ca/src/domain/ports';
import { CA_EXT, type CorporateCa, CorporatePki, SIGNING_CA_EXT } from '../../support/corporate-ca';
import { describeWithTool, tempDir } from '../../support/tools';

/**
 * The checks of `baton ca import` (pki/upstream-chain.ts) on certificates an outside CA made with
 * openssl, as a corporate CA would: each refusal is a stable code and names the certificate.
 */
const TD = 'prod.example.org';
const DAY = 86400_000;

function pendingCa(): PendingUpstream {
  const now = new Date();
  return prepareUpstreamCa({
    installation: {
      trustDomain: TD,
      publicUrl: 'https://ca.example.org:8443',
      nodeTtlMs: DAY,
      workloadTtlMs: 3600_000,
      adminTtlMs: 8 * 3600_000,
    },
    kek: kekFromBase64(randomBytes(32).toString('base64'), 'test'),
    now,
  });
}

describeWithTool('openssl', 'ca import checks (pki/upstream-chain.ts)', () => {
  const dir = tempDir('baton-upstream-chain-');
  afterAll(() => dir.cleanup());
  const pki = new CorporatePki(dir.path);
  const pending = pendingCa();
  const csr = pendingCsrPem(pending);
  const root = pki.root('Corp Root');
  const rootPathLen0 = pki.root('Corp Root pathlen 0', {
    ext: ['basicConstraints=critical,CA:TRUE,pathlen:0', 'keyUsage=critical,keyCertSign,cRLSign'],
  });
  const rootPathLen1 = pki.root('Corp Root pathlen 1', {
    ext: ['basicConstraints=critical,CA:TRUE,pathlen:1', 'keyUsage=critical,keyCertSign,cRLSign'],
  });
  const rootNoCertSign = pki.root('Corp Root without keyCertSign', {
    ext: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,digitalSignature,cRLSign'],
  });
  const otherRoot = pki.root('Another Root');
  const intermediate = pki.intermediate('Corp Issuing CA', root, {
    ext: ['basicConstraints=critical,CA:TRUE,pathlen:1', 'keyUsage=critical,keyCertSign,cRLSign'],
  });
  const intermediatePathLen0 = pki.intermediate('Corp Issuing CA pathlen 0', root, {
    ext: ['basicConstraints=critical,CA:TRUE,pathlen:0', 'keyUsage=critical,keyCertSign,cRLSign'],
  });
  const underPathLen1 = pki.intermediate('Corp Issuing CA under pathlen 1', rootPathLen1);
  const expiredIntermediate = pki.intermediate('Corp Expired CA', root, {
    notBefore: new Date(Date.now() - 30 * DAY),
    notAfter: new Date(Date.now() - DAY),
  });
  const constrained = (name: string, nc: string): CorporateCa =>
    pki.intermediate(name, root, { ext: [...CA_EXT, `nameConstraints=critical,${nc}`] });
  const permitsDomain = constrained('Corp permits .example.org', 'permitted;URI:.example.org');
  const permitsHost = constrained('Corp permits the host', `permitted;URI:${TD}`);
  const permitsOther = constrained('Corp permits .corp.example', 'permitted;URI:.corp.example');
  const permitsDnsOnly = constrained('Corp permits DNS only', 'permitted;DNS:.corp.example');
  const excludes = constrained('Corp excludes it', 'excluded;URI:.example.org');
  const ekuServerOnly = pki.intermediate('Corp serverAuth only', root, {
    ext: [...CA_EXT, 'extendedKeyUsage=serverAuth'],
  });

  const signed = (issuer: CorporateCa, o: { ext?: string[]; notBefore?: Date; notAfter?: Date } = {}) =>
    pki.signPem(csr, issuer, { ext: o.ext ?? SIGNING_CA_EXT(TD), ...o });
  const check = (certPem: string, chainPem: string, now = new Date()) =>
    checkUpstreamChain({ certPem, chainPem, spki: pending.spki, trustDomain: TD, now });
  const refusal = (f: () => unknown): { code: string; message: string } => {
    try {
      f();
    } catch (e) {
      if (e instanceof BatonError) return { code: e.code, message: e.message };
      throw e;
    }
    throw new Error('expected a refusal');
  };

  it.each([
    ['ok/directly under the root', () => [signed(root), root.pem], 1],
    ['ok/under a corporate intermediate', () => [signed(intermediate), intermediate.pem + root.pem], 2],
    ['ok/the chain in any order', () => [signed(intermediate), root.pem + intermediate.pem], 2],
    ['ok/the chain attached to --cert', () => [signed(intermediate) + intermediate.pem, root.pem], 2],
    ['ok/root pathlen 1 directly above', () => [signed(rootPathLen1), rootPathLen1.pem], 1],
    [
      'ok/a self-issued intermediate (a key rollover) is not counted by the root pathlen 1',
      () => {
        const rollover = pki.intermediate('Corp Root pathlen 1', rootPathLen1);
        return [signed(rollover), rollover.pem + rootPathLen1.pem];
      },
      2,
    ],
    [
      'ok/name constraints permit .example.org',
      () => [signed(permitsDomain), permitsDomain.pem + root.pem],
      2,
    ],
    [
      'ok/name constraints permit the trust domain',
      () => [signed(permitsHost), permitsHost.pem + root.pem],
      2,
    ],
    ['ok/name constraints on DNS only', () => [signed(permitsDnsOnly), permitsDnsOnly.pem + root.pem], 2],
  ] as const)('%s', (_title, files, outside) => {
    const [cert, chain] = files();
    const path = check(cert, chain);
    expect(path.signing.fields.spkiRaw.equals(pending.spki)).toBe(true);
    expect(path.outside).toHaveLength(outside);
    expect(path.outside.at(-1)!.x509.subject).toMatch(/CN=Corp Root/);
  });

  it.each([
    [
      'fail/not a CA',
      () => [
        signed(root, { ext: ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature'] }),
        root.pem,
      ],
      'ERR_UPSTREAM_NOT_CA',
      /Baton's signing CA certificate ".*Baton Signing CA.*" is not a CA/,
    ],
    [
      'fail/a CA without keyCertSign',
      () => [
        signed(root, { ext: ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,cRLSign'] }),
        root.pem,
      ],
      'ERR_UPSTREAM_NOT_CA',
      /may not sign certificates \(no keyCertSign key usage\)/,
    ],
    [
      'fail/the certificate of another key',
      () => {
        const other = pki.newRequest('/O=prod.example.org/OU=baton/CN=Baton Signing CA imposter');
        return [pki.sign(other.csrFile, root, { ext: SIGNING_CA_EXT(TD) }), root.pem];
      },
      'ERR_UPSTREAM_KEY_MISMATCH',
      /is not for the pending signing CA's key/,
    ],
    [
      'fail/expired',
      () => [
        signed(root, { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) }),
        root.pem,
      ],
      'ERR_UPSTREAM_VALIDITY',
      /Baton's signing CA certificate ".*" expired at 20/,
    ],
    [
      'fail/not yet valid',
      () => [
        signed(root, { notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 10 * DAY) }),
        root.pem,
      ],
      'ERR_UPSTREAM_VALIDITY',
      /is not valid before 20/,
    ],
    [
      'fail/root pathlen 0 directly above',
      () => [signed(rootPathLen0), rootPathLen0.pem],
      'ERR_UPSTREAM_PATH_LENGTH',
      /the root ".*Corp Root pathlen 0" has pathLenConstraint 0, but 1 CA certificate\(s\) would follow it/,
    ],
    [
      'fail/intermediate pathlen 0 directly above',
      () => [signed(intermediatePathLen0), intermediatePathLen0.pem + root.pem],
      'ERR_UPSTREAM_PATH_LENGTH',
      /the outside intermediate ".*pathlen 0" has pathLenConstraint 0/,
    ],
    [
      'fail/root pathlen 1 above an intermediate',
      () => [signed(underPathLen1), underPathLen1.pem + rootPathLen1.pem],
      'ERR_UPSTREAM_PATH_LENGTH',
      /the root ".*Corp Root pathlen 1" has pathLenConstraint 1, but 2 CA certificate\(s\)/,
    ],
    [
      'fail/name constraints exclude the trust domain',
      () => [signed(excludes), excludes.pem + root.pem],
      'ERR_UPSTREAM_NAME_CONSTRAINTS',
      /excludes spiffe:\/\/prod\.example\.org in its name constraints/,
    ],
    [
      'fail/name constraints permit another domain only',
      () => [signed(permitsOther), permitsOther.pem + root.pem],
      'ERR_UPSTREAM_NAME_CONSTRAINTS',
      /does not permit spiffe:\/\/prod\.example\.org/,
    ],
    [
      'fail/a chain without its root',
      () => [signed(intermediate), intermediate.pem],
      'ERR_UPSTREAM_CHAIN',
      /does not lead to a self-signed root: no certificate in it is the issuer of ".*Corp Issuing CA"/,
    ],
    [
      'fail/a chain to another root',
      () => [signed(root), otherRoot.pem],
      'ERR_UPSTREAM_CHAIN',
      /does not lead to a self-signed root/,
    ],
    [
      'fail/a chain with a certificate off the path',
      () => [signed(root), root.pem + otherRoot.pem],
      'ERR_UPSTREAM_CHAIN',
      /holds ".*Another Root", which is not on the path/,
    ],
    [
      'fail/a root of the same name with another key',
      () => {
        const twin = pki.root('Corp Root');
        return [signed(root), twin.pem];
      },
      'ERR_UPSTREAM_CHAIN',
      /the signature of ".*Baton Signing CA.*" does not verify with the key of its issuer/,
    ],
    [
      'fail/a root whose subject key identifier is not the authority key identifier of what it signed',
      () => {
        const twin = pki.reissueRoot(root, { ext: [...CA_EXT, 'subjectKeyIdentifier=0102030405060708'] });
        return [signed(root), twin.pem];
      },
      'ERR_UPSTREAM_CHAIN',
      /the authority key identifier of ".*Baton Signing CA.*" is not the subject key identifier of its issuer ".*Corp Root"/,
    ],
    [
      'fail/a root without keyCertSign',
      () => [signed(rootNoCertSign), rootNoCertSign.pem],
      'ERR_UPSTREAM_NOT_CA',
      /the root ".*without keyCertSign" may not sign certificates/,
    ],
    [
      'fail/an expired intermediate',
      () => [signed(expiredIntermediate), expiredIntermediate.pem + root.pem],
      'ERR_UPSTREAM_VALIDITY',
      /the outside intermediate ".*Corp Expired CA" expired at/,
    ],
    [
      'fail/an intermediate restricted to serverAuth',
      () => [signed(ekuServerOnly), ekuServerOnly.pem + root.pem],
      'ERR_UPSTREAM_CHAIN',
      /restricts extended key usage without serverAuth and clientAuth/,
    ],
    [
      'fail/an unknown critical extension',
      () => [signed(root, { ext: [...SIGNING_CA_EXT(TD), '1.2.3.4=critical,ASN1:NULL'] }), root.pem],
      'ERR_UPSTREAM_CHAIN',
      /has a critical extension 1\.2\.3\.4 that verifiers do not process/,
    ],
    [
      'fail/garbage instead of PEM',
      () => ['not a certificate', root.pem],
      'ERR_UPSTREAM_INVALID',
      /^--cert: expected PEM certificates$/,
    ],
    [
      'fail/a PEM block that is no certificate',
      () => [signed(root), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'],
      'ERR_UPSTREAM_INVALID',
      /^--chain: a certificate does not parse$/,
    ],
    [
      'fail/an empty chain',
      () => [signed(root), ''],
      'ERR_UPSTREAM_INVALID',
      /^--chain: expected PEM certificates$/,
    ],
  ] as const)('%s', (_title, files, code, message) => {
    const [cert, chain] = files();
    const r = refusal(() => check(cert, chain));
    expect(r.code).toBe(code);
    expect(r.message).toMatch(message);
    expect(r.message).not.toContain('\n');
  });

  it('fail/a tampered signature does not verify', () => {
    const der = Buffer.from(
      signed(root)
        .replace(/-----[^-]+-----/g, '')
        .replace(/\s/g, ''),
      'base64',
    );
    der[der.length - 5] ^= 0x01;
    const pem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;
    expect(refusal(() => check(pem, root.pem))).toMatchObject({
      code: 'ERR_UPSTREAM_CHAIN',
      message: expect.stringMatching(/does not verify with the key of its issuer ".*Corp Root"/),
    });
  });

  it('judges validity at the given time: a certificate past its notAfter is refused', () => {
    const cert = signed(root);
    expect(() => check(cert, root.pem)).not.toThrow();
    expect(refusal(() => check(cert, root.pem, new Date(Date.now() + 60 * DAY))).code).toBe(
      'ERR_UPSTREAM_VALIDITY',
    );
  });
});

describe('RFC 5280 §4.2.1.10 URI constraints (uriHostMatches)', () => {
  it.each([
    ['.example.org', 'prod.example.org', true],
    ['.example.org', 'a.b.example.org', true],
    ['.example.org', 'example.org', false],
    ['.EXAMPLE.org', 'prod.example.ORG', true],
    ['prod.example.org', 'prod.example.org', true],
    ['example.org', 'prod.example.org', false],
    ['.example.org', 'prodexample.org', false],
  ])('%s vs %s: %s', (constraint, host, matches) => {
    expect(uriHostMatches(constraint, host)).toBe(matches);
  });
});
