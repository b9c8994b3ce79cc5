import { createPublicKey, X509Certificate } from 'node:crypto';
import {
  canonicalSerial,
  crlSignatureProblem,
  crlsFromPem,
  parseCrl,
} from '../../../clients/identity/src/crl';
import { isIdentityError } from '../../../clients/identity/src/errors';
import { RevocationState } from '../../../clients/identity/src/revocation-state';
import { issueLeaf } from '../../../services/ca/src/domain/issue';
import type { SigningCa } from '../../../services/ca/src/domain/keyring';
import { buildCrl, type CrlEntry, crlToPem } from '../../../services/ca/src/pki/crl';
import { bitString, ctx, int, seq, time } from '../../../common/src/der';
import { extension } from '../../../services/ca/src/pki/extensions';
import { describePublicKey, generateP256, spkiOf } from '../../../services/ca/src/pki/keys';
import { memoryCertificates, TEST_TD, testCa } from '../../fixtures/test-ca';
import { itWithTool, run, tempDir, writeFiles } from '../../support/tools';

/**
 * The identity library's CRL reader and revocation state against CRLs built by the CA's own
 * builder (services/ca/src/pki/crl.ts): tests may import services/, clients/ src may not.
 */

const HOUR = 3_600_000;
const ca = testCa();
const other = testCa();
const now = ca.clock.now();
const root = ca.keyring.roots[0]!;
const signing = ca.keyring.signing;
const x509 = (pem: string) => new X509Certificate(pem);

function crlOf(
  issuer: SigningCa,
  entries: CrlEntry[],
  over: { crlNumber?: bigint; thisUpdate?: Date; nextUpdate?: Date } = {},
): Buffer {
  return buildCrl({
    issuer: { name: issuer.subjectName, keyId: issuer.keyId, signer: issuer.template.signer },
    crlNumber: over.crlNumber ?? 7n,
    thisUpdate: over.thisUpdate ?? new Date(now.getTime() - 60_000),
    nextUpdate: over.nextUpdate ?? new Date(now.getTime() + HOUR),
    entries,
  });
}

async function leaf(from = ca): Promise<X509Certificate[]> {
  const { privateKey } = generateP256();
  const issued = await issueLeaf(
    { clock: from.clock, issuer: from.keyring.signing, certificates: memoryCertificates() },
    {
      kind: 'workload',
      spiffeId: `spiffe://${TEST_TD}/web`,
      subject: { O: TEST_TD, CN: 'web' },
      key: describePublicKey(spkiOf(createPublicKey(privateKey))),
      ttlMs: HOUR,
    },
  );
  return [x509(issued.certificatePem), x509(from.keyring.signing.certPem)];
}

describe('parseCrl', () => {
  it('reads what the CA builds: issuer, number, times, serials and reasons', () => {
    const der = crlOf(signing, [
      { serial: '0a1b2c3d4e5f6071', revokedAt: now, reason: 1 },
      // High bit set: DER adds a 0x00 sign octet that the canonical form drops.
      { serial: 'ff00ff00ff00ff00', revokedAt: now },
      { serial: '00000000000012ab', revokedAt: now, reason: 4 },
    ]);
    const crl = parseCrl(der);
    expect(crl.issuerName.equals(seqContent(signing.subjectName))).toBe(true);
    expect(crl.crlNumber).toBe(7n);
    expect(crl.thisUpdate).toEqual(new Date(Math.floor((now.getTime() - 60_000) / 1000) * 1000));
    expect(crl.nextUpdate!.getTime() - crl.thisUpdate.getTime()).toBeGreaterThan(HOUR - 2000);
    expect([...crl.revoked]).toEqual([
      ['0a1b2c3d4e5f6071', 1],
      ['ff00ff00ff00ff00', 0],
      ['12ab', 4],
    ]);
    expect(crlSignatureProblem(crl, x509(signing.certPem))).toBeUndefined();
  });

  it('reads an empty CRL and GeneralizedTime dates (2050 and later, RFC 5280 §5.1.2.6)', () => {
    const crl = parseCrl(crlOf(signing, [], { nextUpdate: new Date('2051-02-03T04:05:06Z') }));
    expect(crl.revoked.size).toBe(0);
    expect(crl.nextUpdate).toEqual(new Date('2051-02-03T04:05:06Z'));
  });

  it.each([
    [
      'fail/another CA',
      () => crlSignatureProblem(parseCrl(crlOf(signing, [])), x509(root.certPem)),
      /another CA/,
    ],
    [
      'fail/same name, other key',
      () => crlSignatureProblem(parseCrl(crlOf(signing, [])), x509(other.keyring.signing.certPem)),
      /bad signature|another CA/,
    ],
    [
      'fail/one byte changed',
      () => {
        const der = crlOf(signing, [{ serial: '0a1b2c3d4e5f6071', revokedAt: now }]);
        const i = der.indexOf(Buffer.from('0a1b2c3d4e5f6071', 'hex'));
        der[i + 7]! ^= 1;
        return crlSignatureProblem(parseCrl(der), x509(signing.certPem));
      },
      /bad signature/,
    ],
  ])('%s', (_name, problem, expected) => {
    expect(problem()).toMatch(expected);
  });

  it.each([
    ['fail/not DER', Buffer.from('not a CRL')],
    ['fail/a certificate', x509(signing.certPem).raw],
    ['fail/truncated', crlOf(signing, []).subarray(0, 40)],
    ['fail/critical extension it does not know (§5.2)', unknownCriticalExtensionCrl()],
  ])('%s → ERR_CRL_INVALID', (_name, der) => {
    let err: unknown;
    try {
      parseCrl(der);
    } catch (e) {
      err = e;
    }
    expect(isIdentityError(err) && err.code).toBe('ERR_CRL_INVALID');
  });

  itWithTool('openssl', 'agrees with openssl on the serials of a CRL', () => {
    const der = crlOf(signing, [
      { serial: '7f01', revokedAt: now },
      { serial: '80ab', revokedAt: now, reason: 9 },
    ]);
    const dir = tempDir('baton-idcrl-');
    try {
      const f = writeFiles(dir.path, { 'crl.pem': crlToPem(der) });
      const text = run('openssl', ['crl', '-noout', '-text', '-in', f['crl.pem']!]).out;
      const fromOpenssl = [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) =>
        canonicalSerial(m[1]!),
      );
      expect(fromOpenssl).toEqual([...parseCrl(der).revoked.keys()]);
    } finally {
      dir.cleanup();
    }
  });

  // About half a second on an idle machine. The bound catches a parser that is not linear, or one
  // that gives up on large CRLs as @peculiar/x509's does past about 1,250 entries; it leaves room
  // for a busy test machine.
  it('parses and verifies a 100,000-entry CRL', () => {
    const entries = Array.from({ length: 100_000 }, (_, i) => ({
      serial: (0x10000000 + i).toString(16).padStart(16, '0'),
      revokedAt: now,
      reason: i % 2,
    }));
    const der = crlOf(signing, entries);
    const t0 = process.hrtime.bigint();
    const crl = parseCrl(der);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    expect(crl.revoked.size).toBe(100_000);
    expect(crlSignatureProblem(crl, x509(signing.certPem))).toBeUndefined();
    expect(ms).toBeLessThan(5000);
  });

  it.each([
    ['0A1B', '0a1b'],
    ['A1B', '0a1b'],
    ['00FF', 'ff'],
    ['000000', '00'],
    ['7f', '7f'],
  ])('canonicalSerial(%s) = %s', (input, expected) => expect(canonicalSerial(input)).toBe(expected));

  it('crlsFromPem takes every CRL block of a crl.pem', () => {
    const pem = crlToPem(crlOf(root, [])) + crlToPem(crlOf(signing, []));
    expect(crlsFromPem(pem).map((d) => parseCrl(d).crlNumber)).toEqual([7n, 7n]);
  });
});

describe('RevocationState', () => {
  const fresh = () => {
    const s = new RevocationState();
    s.setRoots([x509(root.certPem)]);
    s.learnChain([x509(signing.certPem), x509(signing.certPem)]);
    return s;
  };
  const serialOf = (c: X509Certificate) => canonicalSerial(c.serialNumber);

  it('ok/a leaf listed nowhere is good; fail/listed in the intermediate CRL is revoked', async () => {
    const [good, inter] = await leaf();
    const [bad] = await leaf();
    const s = fresh();
    const r = s.loadCrls('test', [
      crlOf(root, []),
      crlOf(signing, [{ serial: serialOf(bad!), revokedAt: now, reason: 1 }]),
    ]);
    expect(r).toEqual({ accepted: 2, problems: [], newlyRevoked: [serialOf(bad!)] });
    expect(s.check([good!, inter!], now)).toEqual({});
    expect(s.check([bad!, inter!], now).revoked).toMatchObject({
      serial: serialOf(bad!),
      reason: 1,
      source: 'crl',
    });
  });

  it('fail/a revoked intermediate (listed by the root CRL) refuses every leaf below it', async () => {
    const [l, inter] = await leaf();
    const s = fresh();
    s.loadCrls('test', [crlOf(root, [{ serial: serialOf(inter!), revokedAt: now }]), crlOf(signing, [])]);
    expect(s.check([l!, inter!], now).revoked?.serial).toBe(serialOf(inter!));
  });

  it('fail/a serial named by the feed is revoked before any CRL lists it', async () => {
    const [l, inter] = await leaf();
    const s = fresh();
    s.loadCrls('test', [crlOf(root, []), crlOf(signing, [])]);
    expect(s.addFeedSerials([l!.serialNumber], 'key-compromise')).toEqual([serialOf(l!)]);
    expect(s.check([l!, inter!], now).revoked).toMatchObject({ reason: 'key-compromise', source: 'feed' });
    // Known already: nothing new to report.
    expect(s.addFeedSerials([serialOf(l!)], 'key-compromise')).toEqual([]);
  });

  it('stale/no CRL for the issuer, a CRL past nextUpdate, or no CRL at all', async () => {
    const [l, inter] = await leaf();
    const s = fresh();
    expect(s.staleness(now)).toBe('no CRL has been loaded');
    s.loadCrls('test', [crlOf(signing, [])]);
    // The intermediate's own status needs the root CRL.
    expect(s.check([l!, inter!], now).stale).toMatch(/no CRL of the issuer/);
    s.loadCrls('test', [crlOf(root, []), crlOf(signing, [])]);
    expect(s.check([l!, inter!], now)).toEqual({});
    const later = new Date(now.getTime() + 2 * HOUR);
    expect(s.check([l!, inter!], later).stale).toMatch(/past its nextUpdate/);
    expect(s.staleness(later)).toMatch(/past its nextUpdate/);
  });

  it('fail/an older CRL (lower CRL number) never replaces a newer one', async () => {
    const [l, inter] = await leaf();
    const s = fresh();
    const entry = { serial: serialOf(l!), revokedAt: now };
    s.loadCrls('server', [crlOf(root, [], { crlNumber: 9n }), crlOf(signing, [entry], { crlNumber: 9n })]);
    s.loadCrls('file', [crlOf(root, [], { crlNumber: 8n }), crlOf(signing, [], { crlNumber: 8n })]);
    expect(s.check([l!, inter!], now).revoked?.serial).toBe(serialOf(l!));
    expect(s.crls.map((h) => h.crl.crlNumber)).toEqual([9n, 9n]);
  });

  it('fail/a CRL of another CA is refused and changes nothing', async () => {
    const s = fresh();
    const r = s.loadCrls('test', [crlOf(other.keyring.signing, []), crlOf(other.keyring.roots[0]!, [])]);
    expect(r.accepted).toBe(0);
    expect(r.problems).toHaveLength(2);
    expect(s.crls).toHaveLength(0);
  });

  it('ok/a CRL of an intermediate seen later is used once a verified chain shows it', async () => {
    const s = new RevocationState();
    s.setRoots([x509(root.certPem)]);
    const [l, inter] = await leaf();
    const r = s.loadCrls('test', [
      crlOf(root, []),
      crlOf(signing, [{ serial: serialOf(l!), revokedAt: now }]),
    ]);
    expect(r.accepted).toBe(1);
    expect(s.check([l!, inter!], now).revoked?.serial).toBe(serialOf(l!));
  });

  it('fail/an intermediate that does not chain to the bundle is never trusted for CRLs', async () => {
    const s = new RevocationState();
    s.setRoots([x509(root.certPem)]);
    const [l, inter] = await leaf(other);
    expect(s.learnChain([l!, inter!])).toBe(false);
    expect(s.loadCrls('test', [crlOf(other.keyring.signing, [])]).accepted).toBe(0);
  });
});

/** The content octets of a DER SEQUENCE (what a Name compares as). */
function seqContent(der: Buffer): Buffer {
  const len = der[1]! & 0x80 ? 2 + (der[1]! & 0x7f) : 2;
  return der.subarray(len);
}

/** A v2 CRL with a critical deltaCRLIndicator (RFC 5280 §5.2.4), which a full-CRL reader must refuse. */
function unknownCriticalExtensionCrl(): Buffer {
  const alg = signing.template.signer.algorithmIdentifier;
  const tbs = seq(
    int(1),
    alg,
    signing.subjectName,
    time(new Date(now.getTime() - 60_000)),
    time(new Date(now.getTime() + HOUR)),
    ctx(0, true, seq(extension('2.5.29.27', true, int(3)), extension('2.5.29.20', false, int(4)))),
  );
  return seq(tbs, alg, bitString(signing.template.signer.sign(tbs)));
}
