import { createPublicKey, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { BatonError } from '../../../services/ca/src/ground/errors';
import { type IssuedLeaf, issueLeaf } from '../../../services/ca/src/domain/issue';
import { bool, ctx, int, nullValue, octets, oid, seq, utf8 } from '../../../common/src/der';
import { children, readWhole } from '../../../services/ca/src/pki/der-reader';
import { extension } from '../../../services/ca/src/pki/extensions';
import { describePublicKey, generateP256, spkiOf } from '../../../services/ca/src/pki/keys';
import {
  type BuildOcspResponseParams,
  MAX_OCSP_REQUESTS,
  OCSP_OID,
  type OcspErrorStatus,
  buildOcspResponse,
  isIssuedBy,
  issuerHashes,
  ocspErrorResponse,
  parseOcspRequest,
  responderKeyHash,
} from '../../../services/ca/src/pki/ocsp';
import { TEST_TD, memoryCertificates, testCa } from '../../fixtures/test-ca';
import { run, tempDir, writeFiles } from '../../support/tools';

/** The code of the BatonError `fn` throws; anything else (including no throw) is reported as such. */
function errorCodeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof BatonError ? e.code : `not a BatonError: ${String(e)}`;
  }
  return 'no error';
}

const ca = testCa();
const signing = ca.keyring.signing;
const interDer = signing.record.certificateDer;
const now = ca.clock.now();
const inAnHour = new Date(now.getTime() + 3_600_000);
const dir = tempDir('baton-ocsp-');
afterAll(() => dir.cleanup());
const f = writeFiles(dir.path, {
  'root.pem': ca.keyring.roots[0]!.certPem,
  'inter.pem': signing.certPem,
  'chain.pem': ca.keyring.roots[0]!.certPem + signing.certPem,
});
const path = (name: string): string => join(dir.path, name);

async function leaf(name: string): Promise<IssuedLeaf> {
  const issued = await issueLeaf(
    { clock: ca.clock, issuer: signing, certificates: memoryCertificates() },
    {
      kind: 'workload',
      spiffeId: `spiffe://${TEST_TD}/${name}`,
      subject: { O: TEST_TD, CN: name },
      key: describePublicKey(spkiOf(createPublicKey(generateP256().privateKey))),
      ttlMs: 3_600_000,
    },
  );
  writeFileSync(path(`${name}.pem`), issued.certificatePem);
  return issued;
}

/** `openssl ocsp` request for the given leaves (files written by leaf()), as DER. */
function opensslRequest(name: string, leaves: string[], opts: string[] = []): Buffer {
  const out = path(`${name}.req.der`);
  const certs = leaves.flatMap((l) => ['-cert', path(`${l}.pem`)]);
  // The digest option applies to the -cert options after it.
  const r = run('openssl', ['ocsp', '-issuer', f['inter.pem']!, ...opts, ...certs, '-reqout', out]);
  if (r.status !== 0) throw new Error(`openssl ocsp -reqout: ${r.out}`);
  return readFileSync(out);
}

const byKey = (certificates?: Buffer[]): BuildOcspResponseParams['responder'] => ({
  keyHash: responderKeyHash(signing.spki),
  signer: signing.template.signer,
  certificates,
});

function saveResponse(name: string, der: Buffer): string {
  const p = path(`${name}.resp.der`);
  writeFileSync(p, der);
  return p;
}

describe('parseOcspRequest on requests made by openssl', () => {
  let good: IssuedLeaf;
  let revoked: IssuedLeaf;
  beforeAll(async () => {
    [good, revoked] = await Promise.all([leaf('good'), leaf('revoked')]);
  });

  it.each([
    ['ok/sha1 CertID with nonce', [], 'sha1', true],
    ['ok/sha1 CertID without nonce', ['-no_nonce'], 'sha1', false],
    ['ok/sha256 CertID', ['-sha256'], 'sha256', true],
  ] as const)('%s', (name, opts, hash, hasNonce) => {
    const der = opensslRequest(name.replace(/\W+/g, '-'), ['good'], [...opts]);
    const req = parseOcspRequest(der);
    expect(req.requests).toHaveLength(1);
    const [r] = req.requests;
    expect(r!.hashAlgorithm).toBe(hash);
    expect(r!.serialHex).toBe(good.record.serial);
    expect(isIssuedBy(r!, issuerHashes(interDer))).toBe(true);
    expect(isIssuedBy(r!, issuerHashes(ca.keyring.roots[0]!.record.certificateDer))).toBe(false);
    // The CertID is kept byte for byte, to be echoed in the response.
    expect(der.includes(r!.certId)).toBe(true);
    expect(children(readWhole(r!.certId)).map((t) => t.tag)).toEqual([0x30, 0x04, 0x04, 0x02]);
    if (hasNonce) expect(req.nonce).toHaveLength(16);
    else expect(req.nonce).toBeUndefined();
  });

  it('ok/several certificates in one request, in order', () => {
    const req = parseOcspRequest(opensslRequest('two', ['good', 'revoked']));
    expect(req.requests.map((r) => r.serialHex)).toEqual([good.record.serial, revoked.record.serial]);
  });

  it('ok/the SHA-1 issuer key hash is the responder KeyHash (RFC 6960 §4.1.1, §4.2.1)', () => {
    const [r] = parseOcspRequest(opensslRequest('keyhash', ['good'], ['-no_nonce'])).requests;
    expect(r!.issuerKeyHash).toEqual(responderKeyHash(signing.spki));
  });
});

describe('buildOcspResponse, checked by openssl ocsp', () => {
  let leaves: Record<'good' | 'revoked' | 'unknown', IssuedLeaf>;
  beforeAll(async () => {
    const [g, r, u] = await Promise.all([leaf('good'), leaf('revoked'), leaf('unknown')]);
    leaves = { good: g!, revoked: r!, unknown: u! };
  });
  const revokedAt = new Date(now.getTime() - 120_000);

  function respond(reqDer: Buffer, over: Partial<BuildOcspResponseParams> = {}): Buffer {
    const req = parseOcspRequest(reqDer);
    const statusOf = (serial: string) =>
      serial === leaves.good.record.serial
        ? ('good' as const)
        : serial === leaves.revoked.record.serial
          ? { revokedAt, reason: 1 }
          : ('unknown' as const);
    return buildOcspResponse({
      responder: byKey([interDer]),
      producedAt: now,
      responses: req.requests.map((r) => ({
        certId: r.certId,
        status: statusOf(r.serialHex),
        thisUpdate: now,
        nextUpdate: inAnHour,
      })),
      nonce: req.nonce,
      ...over,
    });
  }

  const check = (respPath: string, digest: string[], certs: string[], extra: string[] = []) =>
    run('openssl', [
      'ocsp',
      '-issuer',
      f['inter.pem']!,
      ...digest,
      ...certs.flatMap((c) => ['-cert', path(`${c}.pem`)]),
      '-no_nonce',
      '-respin',
      respPath,
      '-CAfile',
      f['chain.pem']!,
      ...extra,
    ]);

  it.each([
    ['ok/sha1 CertIDs', []],
    ['ok/sha256 CertIDs', ['-sha256']],
  ])('%s: good, revoked with reason and time, unknown; signed by the issuing CA', (name, digest) => {
    const certs = ['good', 'revoked', 'unknown'];
    const resp = respond(opensslRequest(`${name}-status`.replace(/\W+/g, '-'), certs, digest));
    const r = check(saveResponse(name.replace(/\W+/g, '-'), resp), digest, certs, ['-resp_text']);
    expect(r.out).toContain('Response verify OK');
    expect(r.out).toMatch(/good\.pem: good\n\s+This Update: .+\n\s+Next Update: /);
    expect(r.out).toMatch(
      /revoked\.pem: revoked\n\s+This Update: .+\n\s+Next Update: .+\n\s+Reason: keyCompromise\n\s+Revocation Time: /,
    );
    expect(r.out).toMatch(/unknown\.pem: unknown\n/);
    expect(r.out).toContain(`Responder Id: ${responderKeyHash(signing.spki).toString('hex').toUpperCase()}`);
    expect(r.status).toBe(0);
    // openssl prints the revocation time at second precision, as GeneralizedTime carries it.
    const month = revokedAt.toUTCString().split(' ')[2];
    expect(r.out).toContain(`Revocation Time: ${month}`);
  });

  it('ok/without embedded certificates the response has no certs and still verifies', () => {
    const resp = respond(opensslRequest('nocerts', ['good'], ['-no_nonce']), { responder: byKey() });
    const [, bytes] = children(readWhole(resp));
    const [, basicOctets] = children(children(bytes!)[0]!);
    // BasicOCSPResponse: tbsResponseData, signatureAlgorithm, signature, and no [0] certs.
    expect(children(readWhole(basicOctets!.value)).map((t) => t.tag)).toEqual([0x30, 0x30, 0x03]);
    // openssl 3 then looks for the signer among the -issuer and -verify_other certificates.
    const r = check(saveResponse('nocerts', resp), [], ['good'], ['-verify_other', f['inter.pem']!]);
    expect(r.out).toContain('Response verify OK');
    expect(r.out).toContain('good.pem: good');
  });

  it('ok/ResponderID byName verifies too', () => {
    const resp = respond(opensslRequest('byname', ['good'], ['-no_nonce']), {
      responder: { name: signing.subjectName, signer: signing.template.signer, certificates: [interDer] },
    });
    const r = check(saveResponse('byname', resp), [], ['good'], ['-resp_text']);
    expect(r.out).toContain('Response verify OK');
    expect(r.out).toMatch(/Responder Id: O = test\.example\.org/);
  });

  it('ok/the nonce is echoed: openssl -reqin checks it against the request', () => {
    const reqDer = opensslRequest('nonce', ['good']);
    const reqCheck = (respPath: string) =>
      run('openssl', [
        'ocsp',
        '-reqin',
        path('nonce.req.der'),
        '-respin',
        respPath,
        '-CAfile',
        f['chain.pem']!,
      ]);
    const ok = reqCheck(saveResponse('nonce', respond(reqDer)));
    expect(ok.out).toContain('Response verify OK');
    expect(ok.out).not.toMatch(/nonce/i);
    expect(ok.status).toBe(0);
    // Controls: openssl does notice a missing or a different nonce.
    expect(reqCheck(saveResponse('no-nonce', respond(reqDer, { nonce: undefined }))).out).toContain(
      'WARNING: no nonce in response',
    );
    const wrong = reqCheck(saveResponse('wrong-nonce', respond(reqDer, { nonce: randomBytes(16) })));
    expect(wrong.out).toContain('Nonce Verify error');
  });

  it('ok/all times are GeneralizedTime (RFC 6960 §4.2.2.1)', () => {
    const resp = respond(opensslRequest('times', ['revoked'], ['-no_nonce']));
    const [, bytes] = children(readWhole(resp));
    const [, basicOctets] = children(children(bytes!)[0]!);
    const [tbs] = children(readWhole(basicOctets!.value));
    const [, producedAt, responses] = children(tbs!);
    const [single] = children(responses!);
    const [, status, thisUpdate, nextUpdate] = children(single!);
    const [revocationTime, reason] = children(status!);
    expect([producedAt, thisUpdate, revocationTime].map((t) => t!.tag)).toEqual([0x18, 0x18, 0x18]);
    expect(children(nextUpdate!)[0]!.tag).toBe(0x18);
    expect(reason!.raw).toEqual(Buffer.from([0xa0, 0x03, 0x0a, 0x01, 0x01]));
  });

  it('ok/a revocation with reason unspecified carries no revocationReason', () => {
    const [r] = parseOcspRequest(opensslRequest('unspec', ['revoked'], ['-no_nonce'])).requests;
    const resp = buildOcspResponse({
      responder: byKey([interDer]),
      producedAt: now,
      responses: [{ certId: r!.certId, status: { revokedAt, reason: 0 }, thisUpdate: now }],
    });
    const out = check(saveResponse('unspec', resp), [], ['revoked']).out;
    expect(out).toContain('Response verify OK');
    expect(out).toMatch(/revoked\.pem: revoked\n\s+This Update: .+\n\s+Revocation Time: /);
    expect(out).not.toContain('Reason:');
  });

  it.each([
    ['malformedRequest', 'malformedrequest (1)'],
    ['internalError', 'internalerror (2)'],
    ['tryLater', 'trylater (3)'],
    ['unauthorized', 'unauthorized (6)'],
  ] as const)('ok/error response %s', (status: OcspErrorStatus, printed) => {
    const der = ocspErrorResponse(status);
    const r = run('openssl', ['ocsp', '-respin', saveResponse(status, der), '-resp_text']);
    expect(r.out).toContain(`Responder Error: ${printed}`);
  });
});

describe('parseOcspRequest refuses what it does not accept with ERR_BAD_REQUEST', () => {
  const certId = (hash: string = OCSP_OID.sha1, size = 20, serial: Buffer = int(0x1234)): Buffer =>
    seq(seq(oid(hash), nullValue()), octets(Buffer.alloc(size, 1)), octets(Buffer.alloc(size, 2)), serial);
  const nonceExt = (nonce: Buffer, critical = false) => extension(OCSP_OID.nonce, critical, octets(nonce));

  /** OCSPRequest built from parts (RFC 6960 §4.1.1), to reach the cases openssl will not make. */
  function request(p: {
    ids?: Buffer[];
    exts?: Buffer[];
    version?: number;
    requestor?: boolean;
    signature?: boolean;
    single?: Buffer[];
  }): Buffer {
    const tbs: Buffer[] = [];
    if (p.version !== undefined) tbs.push(ctx(0, true, int(p.version)));
    if (p.requestor) tbs.push(ctx(1, true, ctx(4, true, seq())));
    const ids = p.ids ?? [certId()];
    tbs.push(seq(...ids.map((id) => (p.single ? seq(id, ctx(0, true, seq(...p.single))) : seq(id)))));
    if (p.exts) tbs.push(ctx(2, true, seq(...p.exts)));
    const parts = [seq(...tbs)];
    if (p.signature)
      parts.push(ctx(0, true, seq(seq(oid('1.2.840.10045.4.3.2')), Buffer.from([3, 2, 0, 0]))));
    return seq(...parts);
  }

  it.each([
    [
      'ok/explicit v1, a requestorName and a signature are skipped',
      request({ version: 0, requestor: true, signature: true }),
    ],
    [
      'ok/unknown non-critical extensions are ignored',
      request({
        exts: [
          extension('1.3.6.1.5.5.7.48.1.4', false, seq(oid(OCSP_OID.basicResponse))),
          nonceExt(Buffer.alloc(32, 9)),
        ],
      }),
    ],
    ['ok/1-octet nonce', request({ exts: [nonceExt(Buffer.alloc(1, 9))] })],
    ['ok/128-octet nonce (RFC 9654 §2.1)', request({ exts: [nonceExt(Buffer.alloc(128, 9))] })],
    [
      'ok/a non-critical singleRequestExtension',
      request({ single: [extension('1.2.3.4', false, utf8('x'))] }),
    ],
    ['ok/10 requests', request({ ids: Array.from({ length: MAX_OCSP_REQUESTS }, () => certId()) })],
    [
      'ok/a serial with a sign octet',
      request({ ids: [certId(OCSP_OID.sha1, 20, Buffer.from([2, 2, 0, 0x80]))] }),
    ],
  ])('%s', (_name, der) => {
    expect(errorCodeOf(() => parseOcspRequest(der))).toBe('no error');
  });

  it('ok/parses the fields it keeps from a hand-made request', () => {
    const req = parseOcspRequest(
      request({
        ids: [certId(OCSP_OID.sha256, 32, Buffer.from([2, 2, 0, 0x80]))],
        exts: [nonceExt(Buffer.from('abc'))],
      }),
    );
    expect(req.nonce).toEqual(Buffer.from('abc'));
    expect(req.requests[0]).toMatchObject({ hashAlgorithm: 'sha256', serialHex: '80' });
    expect(req.requests[0]!.issuerNameHash).toEqual(Buffer.alloc(32, 1));
  });

  it.each([
    ['fail/11 requests', request({ ids: Array.from({ length: MAX_OCSP_REQUESTS + 1 }, () => certId()) })],
    ['fail/no request', request({ ids: [] })],
    ['fail/larger than 8 KiB', request({ exts: [extension('1.2.3.4', false, Buffer.alloc(8200))] })],
    ['fail/empty nonce', request({ exts: [nonceExt(Buffer.alloc(0))] })],
    ['fail/129-octet nonce', request({ exts: [nonceExt(Buffer.alloc(129, 1))] })],
    [
      'fail/a nonce that is not an OCTET STRING',
      request({ exts: [extension(OCSP_OID.nonce, false, Buffer.alloc(16, 7))] }),
    ],
    ['fail/two nonces', request({ exts: [nonceExt(Buffer.alloc(16)), nonceExt(Buffer.alloc(16))] })],
    ['fail/an unknown critical extension', request({ exts: [extension('1.2.3.4', true, utf8('x'))] })],
    [
      'fail/an unknown critical singleRequestExtension',
      request({ single: [extension('1.2.3.4', true, utf8('x'))] }),
    ],
    ['fail/version 2', request({ version: 1 })],
    ['fail/SHA-512 CertID', request({ ids: [certId('2.16.840.1.101.3.4.2.3', 64)] })],
    ['fail/SHA-1 CertID with 32-octet hashes', request({ ids: [certId(OCSP_OID.sha1, 32)] })],
    ['fail/negative serial', request({ ids: [certId(OCSP_OID.sha1, 20, Buffer.from([2, 1, 0x80]))] })],
    ['fail/non-minimal serial', request({ ids: [certId(OCSP_OID.sha1, 20, Buffer.from([2, 2, 0, 1]))] })],
    ['fail/empty serial', request({ ids: [certId(OCSP_OID.sha1, 20, Buffer.from([2, 0]))] })],
    [
      'fail/hash parameters other than NULL',
      request({
        ids: [
          seq(
            seq(oid(OCSP_OID.sha1), bool(true)),
            octets(Buffer.alloc(20)),
            octets(Buffer.alloc(20)),
            int(1),
          ),
        ],
      }),
    ],
    ['fail/trailing data', Buffer.concat([request({}), Buffer.from([0])])],
    ['fail/empty input', Buffer.alloc(0)],
  ])('%s', (_name, der) => {
    expect(errorCodeOf(() => parseOcspRequest(der))).toBe('ERR_BAD_REQUEST');
  });

  it('fail/every truncation of a real request', async () => {
    await leaf('trunc');
    const der = opensslRequest('trunc', ['trunc']);
    for (let n = 0; n < der.length; n++)
      expect(errorCodeOf(() => parseOcspRequest(der.subarray(0, n)))).toBe('ERR_BAD_REQUEST');
  });

  it('fail/random bytes never throw anything but ERR_BAD_REQUEST', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        expect(errorCodeOf(() => parseOcspRequest(Buffer.from(bytes)))).toBe('ERR_BAD_REQUEST');
      }),
      { numRuns: 2000 },
    );
  });

  it('fail/corrupted real requests either parse or are ERR_BAD_REQUEST', async () => {
    await leaf('fuzz');
    const der = opensslRequest('fuzz', ['fuzz']);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: der.length - 1 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        (edits) => {
          const copy = Buffer.from(der);
          for (const [at, v] of edits) copy[at] = v;
          expect(['no error', 'ERR_BAD_REQUEST']).toContain(errorCodeOf(() => parseOcspRequest(copy)));
        },
      ),
      { numRuns: 3000 },
    );
  });
});
