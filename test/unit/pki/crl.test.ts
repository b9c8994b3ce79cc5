import { createPublicKey, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { BatonError } from '../../../services/ca/src/ground/errors';
import { type IssuedLeaf, issueLeaf } from '../../../services/ca/src/domain/issue';
import {
  type CrlEntry,
  REVOCATION_REASONS,
  buildCrl,
  crlToPem,
  isRevocationReason,
  parseRevocationReason,
} from '../../../services/ca/src/pki/crl';
import { time, uintBytes } from '../../../common/src/der';
import { type Tlv, children, readWhole } from '../../../services/ca/src/pki/der-reader';
import { describePublicKey, generateP256, spkiOf } from '../../../services/ca/src/pki/keys';
import { TEST_TD, memoryCertificates, testCa } from '../../fixtures/test-ca';
import { itWithTool, run, tempDir, writeFiles } from '../../support/tools';

const HOUR = 3_600_000;
const ca = testCa();
const signing = ca.keyring.signing;
const issuer = { name: signing.subjectName, keyId: signing.keyId, signer: signing.template.signer };
const now = ca.clock.now();
const dir = tempDir('baton-crl-');
afterAll(() => dir.cleanup());
const f = writeFiles(dir.path, {
  'root.pem': ca.keyring.roots[0]!.certPem,
  'inter.pem': signing.certPem,
  'chain.pem': ca.keyring.roots[0]!.certPem + signing.certPem,
});

function crl(entries: Iterable<CrlEntry>, over: { crlNumber?: bigint; nextUpdate?: Date } = {}): Buffer {
  return buildCrl({
    issuer,
    crlNumber: over.crlNumber ?? 7n,
    thisUpdate: new Date(now.getTime() - 60_000),
    nextUpdate: over.nextUpdate ?? new Date(now.getTime() + 24 * HOUR),
    entries,
  });
}

/** Writes the CRL as DER and PEM under `name` and returns both paths. */
function save(name: string, der: Buffer): { der: string; pem: string } {
  const paths = { der: join(dir.path, `${name}.der`), pem: join(dir.path, `${name}.pem`) };
  writeFileSync(paths.der, der);
  writeFileSync(paths.pem, crlToPem(der));
  return paths;
}

/** tbsCertList fields, and the revokedCertificates entries when present. */
function tbsFields(der: Buffer): { fields: Tlv[]; entries: Tlv[] } {
  const [tbs] = children(readWhole(der));
  const fields = children(tbs!);
  const list = fields[5]?.tag === 0x30 ? fields[5] : undefined;
  return { fields, entries: list ? children(list) : [] };
}

const opensslCrlVerify = (p: string) =>
  run('openssl', ['crl', '-inform', 'DER', '-in', p, '-CAfile', f['chain.pem']!, '-noout']);
const opensslCrlText = (p: string) => run('openssl', ['crl', '-inform', 'DER', '-in', p, '-noout', '-text']);

async function leaf(name: string): Promise<IssuedLeaf> {
  return issueLeaf(
    { clock: ca.clock, issuer: signing, certificates: memoryCertificates() },
    {
      kind: 'workload',
      spiffeId: `spiffe://${TEST_TD}/${name}`,
      subject: { O: TEST_TD, CN: name },
      key: describePublicKey(spkiOf(createPublicKey(generateP256().privateKey))),
      ttlMs: HOUR,
    },
  );
}

const serial = () => randomBytes(16).toString('hex').replace(/^./, '4');

describe('buildCrl, checked by openssl and GnuTLS', () => {
  it.each([
    ['ok/0 entries', [] as CrlEntry[]],
    ['ok/1 entry', [{ serial: serial(), revokedAt: now }]],
    [
      'ok/3 entries, one keyCompromise',
      [
        { serial: serial(), revokedAt: now },
        { serial: serial(), revokedAt: now, reason: REVOCATION_REASONS['key-compromise'] },
        { serial: serial(), revokedAt: now, reason: REVOCATION_REASONS.unspecified },
      ],
    ],
  ])('%s: v2 CRL verifies and shows CRL Number, AKI and reason codes', (name, entries) => {
    const der = crl(entries);
    const p = save(name.replace(/\W+/g, '-'), der);
    const v = opensslCrlVerify(p.der);
    expect(v.out).toContain('verify OK');
    expect(v.status).toBe(0);

    const text = opensslCrlText(p.der).out;
    expect(text).toContain('Version 2 (0x1)');
    expect(text).toMatch(/X509v3 CRL Number:\s+7\n/);
    expect(text).toMatch(/X509v3 Authority Key Identifier:\s+(keyid:)?[0-9A-F:]{59}\n/);
    expect(text).toContain(signing.keyId.toString('hex').toUpperCase().match(/../g)!.join(':'));
    // Only a reason other than unspecified(0) is written (RFC 5280 §5.3.1).
    const withReason = entries.filter((e) => e.reason).length;
    expect(text.match(/X509v3 CRL Reason Code:/g) ?? []).toHaveLength(withReason);
    if (withReason) expect(text).toMatch(/X509v3 CRL Reason Code:\s+Key Compromise/);
    expect(text.match(/Serial Number:/g) ?? []).toHaveLength(entries.length);
    for (const e of entries) expect(text).toContain(`Serial Number: ${String(e.serial).toUpperCase()}`);

    // §5.1.2.6: an empty list is absent, not an empty SEQUENCE.
    const { fields } = tbsFields(der);
    expect(fields.map((t) => t.tag)).toEqual(
      entries.length ? [0x02, 0x30, 0x30, 0x17, 0x17, 0x30, 0xa0] : [0x02, 0x30, 0x30, 0x17, 0x17, 0xa0],
    );
    if (entries.length === 0) expect(text).toContain('No Revoked Certificates.');
  });

  it('ok/openssl verify -crl_check: an unrevoked leaf is OK, a revoked leaf is refused', async () => {
    const [good, revoked] = await Promise.all([leaf('good'), leaf('revoked')]);
    const der = crl([{ serial: revoked.record.serial, revokedAt: now, reason: 1 }]);
    const p = save('leaves', der);
    const leaves = writeFiles(dir.path, {
      'good.pem': good.certificatePem,
      'revoked.pem': revoked.certificatePem,
    });
    const verify = (leafPath: string) =>
      run('openssl', [
        'verify',
        '-x509_strict',
        '-crl_check',
        '-CRLfile',
        p.pem,
        '-CAfile',
        f['root.pem']!,
        '-untrusted',
        f['inter.pem']!,
        leafPath,
      ]);
    const ok = verify(leaves['good.pem']!);
    expect(ok.out).toContain('good.pem: OK');
    expect(ok.status).toBe(0);
    const refused = verify(leaves['revoked.pem']!);
    expect(refused.out).toContain('certificate revoked');
    expect(refused.status).not.toBe(0);
  });

  it('ok/UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §5.1.2.4, §5.1.2.6)', () => {
    const last = new Date('2049-12-31T23:59:59Z');
    const first = new Date('2050-01-01T00:00:00Z');
    const der = crl(
      [
        { serial: '01', revokedAt: last },
        { serial: '02', revokedAt: first },
      ],
      { nextUpdate: new Date('2051-06-30T12:00:00Z') },
    );
    const { fields, entries } = tbsFields(der);
    expect(fields[3]!.tag).toBe(0x17);
    expect(fields[4]!.raw.toString('latin1')).toBe('\x18\x0f20510630120000Z');
    const dates = entries.map((e) => children(e)[1]!.raw);
    expect(dates[0]).toEqual(time(last));
    expect(dates[0]!.toString('latin1')).toBe('\x17\x0d491231235959Z');
    expect(dates[1]!.toString('latin1')).toBe('\x18\x0f20500101000000Z');
    const p = save('y2050', der);
    expect(opensslCrlVerify(p.der).out).toContain('verify OK');
    const text = opensslCrlText(p.der).out;
    expect(text).toContain('Next Update: Jun 30 12:00:00 2051 GMT');
    expect(text).toContain('Revocation Date: Jan  1 00:00:00 2050 GMT');
  });

  itWithTool('certtool', 'ok/GnuTLS certtool parses and verifies it', () => {
    const der = crl([
      { serial: serial(), revokedAt: now, reason: REVOCATION_REASONS.superseded },
      { serial: serial(), revokedAt: now },
    ]);
    const p = save('gnutls', der);
    const info = run('certtool', ['--crl-info', '--inder', '--infile', p.der]);
    expect(info.status).toBe(0);
    expect(info.out).toMatch(/Version: 2/);
    expect(info.out).toMatch(/Revoked certificates \(2\)/);
    expect(info.out).toMatch(/CRL Number \(not critical\)/);
    const verify = run('certtool', [
      '--verify-crl',
      '--load-ca-certificate',
      f['inter.pem']!,
      '--infile',
      p.pem,
    ]);
    expect(verify.out).toMatch(/Verification output: Verified/);
    expect(verify.status).toBe(0);
  });

  it('ok/100,000 entries build in one pass and openssl counts them all', () => {
    const entries = Array.from({ length: 100_000 }, (_, i) => ({
      serial: randomBytes(16).toString('hex'),
      revokedAt: new Date(now.getTime() - i * 1000),
      reason: i % 10 === 0 ? REVOCATION_REASONS['key-compromise'] : undefined,
    }));
    const started = process.hrtime.bigint();
    const der = crl(entries);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    console.log(`buildCrl: 100,000 entries, ${der.length} octets, ${ms.toFixed(1)} ms`);
    const p = save('big', der);
    expect(opensslCrlVerify(p.der).out).toContain('verify OK');
    const count = run('sh', [
      '-c',
      'openssl crl -inform DER -in "$1" -noout -text | grep -c "Serial Number:"',
      'sh',
      p.der,
    ]);
    expect(count.out.trim()).toBe('100000');
  });
});

describe('buildCrl encoding', () => {
  const serialOf = (der: Buffer): Buffer => children(tbsFields(der).entries[0]!)[0]!.raw;

  it('ok/serials from bytes and from hex encode as the same minimal positive INTEGER', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 20 }), fc.boolean(), (bytes, upper) => {
        const b = Buffer.from(bytes);
        const hex = upper ? b.toString('hex').toUpperCase() : b.toString('hex');
        const expected = uintBytes(b);
        expect(serialOf(crl([{ serial: b, revokedAt: now }]))).toEqual(expected);
        expect(serialOf(crl([{ serial: hex, revokedAt: now }]))).toEqual(expected);
        // An odd number of hex digits is a value too: "abc" is 0x0abc.
        expect(serialOf(crl([{ serial: hex.replace(/^0/, ''), revokedAt: now }]))).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('ok/an iterator that reuses one object per row yields every row', () => {
    function* rows(): Generator<CrlEntry> {
      const row: CrlEntry = { serial: '', revokedAt: now };
      for (const [s, reason] of [
        ['0a', 1],
        ['0b', 0],
        ['0c', 4],
      ] as const) {
        row.serial = s;
        row.reason = reason;
        yield row;
      }
    }
    const entries = tbsFields(crl(rows())).entries.map((e) => children(e));
    expect(entries.map((e) => e[0]!.value.toString('hex'))).toEqual(['0a', '0b', '0c']);
    expect(entries.map((e) => e.length)).toEqual([3, 2, 3]);
  });

  it.each([
    ['fail/non-hex serial', [{ serial: '12zz', revokedAt: now }]],
    ['fail/non-ASCII serial', [{ serial: '12é4', revokedAt: now }]],
    ['fail/empty serial', [{ serial: '', revokedAt: now }]],
    ['fail/21-octet serial', [{ serial: `7f${'00'.repeat(20)}`, revokedAt: now }]],
    ['fail/reason 7', [{ serial: '01', revokedAt: now, reason: 7 }]],
    ['fail/removeFromCRL in a full CRL', [{ serial: '01', revokedAt: now, reason: 8 }]],
    ['fail/invalid date', [{ serial: '01', revokedAt: new Date(Number.NaN) }]],
  ])('%s is refused', (_name, entries) => {
    expect(() => crl(entries)).toThrow(RangeError);
  });

  it('fail/nextUpdate not after thisUpdate, negative or 21-octet CRL numbers', () => {
    expect(() => crl([], { nextUpdate: new Date(now.getTime() - 60_000) })).toThrow(/nextUpdate/);
    expect(() => crl([], { crlNumber: -1n })).toThrow(/crlNumber/);
    expect(() => crl([], { crlNumber: 1n << 160n })).toThrow(/crlNumber/);
    expect(() => crl([], { crlNumber: (1n << 159n) - 1n })).not.toThrow();
  });
});

describe('revocation reasons (RFC 5280 §5.3.1)', () => {
  it.each([
    ['ok/key-compromise', 1],
    ['ok/keyCompromise', 1],
    ['ok/CA_COMPROMISE', 2],
    ['ok/unspecified', 0],
    ['ok/cessation-of-operation', 5],
    ['ok/aa-compromise', 10],
  ])('%s', (name, code) => {
    expect(parseRevocationReason(name.slice(3))).toBe(code);
  });

  it.each([['fail/remove-from-crl'], ['fail/bogus'], ['fail/7']])('%s is ERR_BAD_REQUEST', (name) => {
    expect(() => parseRevocationReason(name.slice(5))).toThrow(BatonError);
    expect(() => parseRevocationReason(name.slice(5))).toThrow(/unknown revocation reason/);
  });

  it('maps every RFC code but removeFromCRL as valid on a full CRL', () => {
    expect(Object.values(REVOCATION_REASONS).filter(isRevocationReason)).toEqual([
      0, 1, 2, 3, 4, 5, 6, 9, 10,
    ]);
  });
});
