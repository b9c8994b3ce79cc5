import { X509Certificate } from 'node:crypto';
import { toPem } from '../../../common/src/der';
import type { Attestor, AttestorDeps } from '../../../services/ca/src/domain/attestation/attestor';
import { joinTokenAttestor } from '../../../services/ca/src/domain/attestation/join-token-attestor';
import { defaultAttestors } from '../../../services/ca/src/domain/attestation/registry';
import {
  x509popAttestor,
  x509popProfile,
  type X509popEvidence,
} from '../../../services/ca/src/domain/attestation/x509pop-attestor';
import type { Repositories } from '../../../services/ca/src/domain/ports';
import {
  attestorFor,
  CHALLENGE_READERS,
  checkEvidenceReaders,
  EVIDENCE_READERS,
  readEvidence,
  readJoinTokenEvidence,
  readX509popEvidence,
} from '../../../services/ca/src/http/attestation-evidence';
import { testCa } from '../../fixtures/test-ca';
import { errorOf } from '../../support/errors';

const PIN = 'a'.repeat(52);
const TOKEN = `BATON1-${PIN}-${'0'.repeat(16)}.${'b'.repeat(52)}`;
const NONCE = 'N'.repeat(43);

const ca = testCa();
const rootDer = ca.records[0]!.certificateDer;
const rootPem = toPem('CERTIFICATE', rootDer);
/**
 * The root with the length of its TBSCertificate in a non-minimal form: node:crypto reads it (and
 * keeps those bytes in `raw`), the strict DER reader does not.
 */
function laxTbs(der: Buffer): Buffer {
  if (der[0] !== 0x30 || der[1] !== 0x82 || der[4] !== 0x30 || der[5] !== 0x82)
    throw new Error('unexpected DER');
  const body = Buffer.concat([Buffer.from([0x30, 0x83, 0x00]), der.subarray(6)]);
  return Buffer.concat([Buffer.from([0x30, 0x82, body.length >> 8, body.length & 0xff]), body]);
}
const laxDer = laxTbs(rootDer);
const laxPem = toPem('CERTIFICATE', laxDer);

const refusal = (f: () => unknown) => {
  const e = errorOf(f);
  return `${e.code} ${e.message}`;
};

describe('join_token evidence (the edge reader)', () => {
  it('reads `token` into a parsed token', () => {
    expect(readJoinTokenEvidence({ token: TOKEN })).toEqual({
      token: { pin: PIN, id: '0'.repeat(16), secret: 'b'.repeat(52) },
    });
  });

  it.each([
    ['missing', {}],
    ['null', { token: null }],
    ['a number', { token: 5 }],
    [
      'an object shaped like a parsed token',
      { token: { pin: PIN, id: '0'.repeat(16), secret: 'b'.repeat(52) } },
    ],
    ['an array', { token: [TOKEN] }],
    ['empty', { token: '' }],
    ['off the grammar', { token: `${TOKEN}x` }],
    ['uppercase', { token: TOKEN.toUpperCase() }],
  ])('refuses a token %s with the one 401 of every bad token', (_name, payload) => {
    expect(refusal(() => readJoinTokenEvidence(payload))).toBe('ERR_TOKEN_INVALID invalid join token');
  });
});

describe('x509pop evidence (the edge reader)', () => {
  const ok = { certificate_chain: rootPem, nonce: NONCE, signature: 'AAAA' };

  it('reads the chain (node:crypto), the nonce and the signature bytes', () => {
    const e = readX509popEvidence(ok);
    expect(e.chain).toHaveLength(1);
    expect(e.chain[0].cert.raw.equals(rootDer)).toBe(true);
    expect(e.nonce).toBe(NONCE);
    expect(e.signature).toEqual(Buffer.from([0, 0, 0]));
    expect(readX509popEvidence({ ...ok, certificate_chain: rootPem.repeat(5) }).chain).toHaveLength(5);
  });

  const CHAIN_REQUIRED =
    'ERR_BAD_REQUEST certificate_chain: a PEM string of at most 32768 characters is required';
  const NONCE_REQUIRED =
    'ERR_BAD_REQUEST nonce: the base64url nonce from POST /v1/attest/challenge is required';
  const SIGNATURE_REQUIRED = 'ERR_BAD_REQUEST signature: a base64 signature is required';
  it.each([
    ['chain missing', { ...ok, certificate_chain: undefined }, CHAIN_REQUIRED],
    ['chain not a string', { ...ok, certificate_chain: [rootPem] }, CHAIN_REQUIRED],
    ['chain empty', { ...ok, certificate_chain: '' }, CHAIN_REQUIRED],
    ['chain too long', { ...ok, certificate_chain: 'a'.repeat(32 * 1024 + 1) }, CHAIN_REQUIRED],
    [
      'chain without PEM',
      { ...ok, certificate_chain: 'abc' },
      'ERR_BAD_REQUEST certificate_chain: expected PEM certificates',
    ],
    [
      'chain of six',
      { ...ok, certificate_chain: rootPem.repeat(6) },
      'ERR_BAD_REQUEST certificate_chain: at most 5 certificates',
    ],
    [
      'chain with a certificate node:crypto cannot read',
      { ...ok, certificate_chain: rootPem + toPem('CERTIFICATE', Buffer.from([0x30, 0x00])) },
      'ERR_BAD_REQUEST certificate_chain: a certificate cannot be parsed',
    ],
    ['nonce missing', { ...ok, nonce: undefined }, NONCE_REQUIRED],
    ['nonce a number', { ...ok, nonce: 43 }, NONCE_REQUIRED],
    ['nonce too short', { ...ok, nonce: 'N'.repeat(42) }, NONCE_REQUIRED],
    ['nonce not base64url', { ...ok, nonce: `${'N'.repeat(42)}+` }, NONCE_REQUIRED],
    ['signature missing', { ...ok, signature: undefined }, SIGNATURE_REQUIRED],
    ['signature empty', { ...ok, signature: '' }, SIGNATURE_REQUIRED],
    ['signature not base64', { ...ok, signature: 'AA=A' }, SIGNATURE_REQUIRED],
    ['signature too long', { ...ok, signature: 'AAAA'.repeat(257) }, SIGNATURE_REQUIRED],
    // The order of the fields: chain, nonce, signature.
    [
      'chain and nonce bad',
      { certificate_chain: 'abc', nonce: 5 },
      'ERR_BAD_REQUEST certificate_chain: expected PEM certificates',
    ],
    ['nonce and signature bad', { ...ok, nonce: 5, signature: 5 }, NONCE_REQUIRED],
  ])('refuses %s', (_name, payload, expected) => {
    expect(refusal(() => readX509popEvidence(payload))).toBe(expected);
  });

  it('leaves the strict reading of each certificate to the path check, which names the field in its refusal', () => {
    expect(refusal(() => x509popProfile(new X509Certificate(laxDer)))).toBe(
      'ERR_BAD_REQUEST a certificate cannot be parsed',
    );
    const e = readX509popEvidence({ ...ok, certificate_chain: laxPem });
    expect(refusal(() => e.chain[0].profile())).toBe(
      'ERR_BAD_REQUEST certificate_chain: a certificate cannot be parsed',
    );
    expect(readX509popEvidence(ok).chain[0].profile().notAfter).toEqual(
      new Date(new X509Certificate(rootDer).validTo),
    );
  });
});

describe('x509pop verification keeps the order of its refusals', () => {
  const attestor = x509popAttestor({ cas: [new X509Certificate(rootDer)], role: 'worker' });
  const deps = (now: Date): AttestorDeps => ({
    clock: { now: () => now },
    repos: {} as Repositories,
    pins: [PIN],
    csrDer: Buffer.from('csr'),
  });
  const chainOf = (...pems: string[]): X509popEvidence =>
    readX509popEvidence({ certificate_chain: pems.join(''), nonce: NONCE, signature: 'AAAA' });

  it('a leaf the strict reader refuses: 400, the field named', async () => {
    expect((await errorOf(attestor.verify(deps(ca.clock.now()), chainOf(laxPem)))).message).toBe(
      'certificate_chain: a certificate cannot be parsed',
    );
  });

  it('an intermediate the strict reader refuses is read only when the path reaches it', async () => {
    const later = new Date(Date.now() + 100 * 365 * 86_400_000);
    // The leaf is refused first (expired), before the intermediate is read.
    const e = await errorOf(attestor.verify(deps(later), chainOf(rootPem, laxPem)));
    expect(`${e.code} ${e.message}`).toBe(
      'ERR_ATTESTATION_FAILED a certificate in the chain is expired or not yet valid',
    );
  });
});

describe('attestation methods at the edge', () => {
  const attestors = defaultAttestors([
    x509popAttestor({ cas: [new X509Certificate(rootDer)], role: 'worker' }),
  ]);

  it('attestorFor names the method exactly, or refuses with the methods offered', () => {
    expect(attestorFor(attestors, 'join_token')).toBe(joinTokenAttestor);
    expect(attestorFor(attestors, 'x509pop').method).toBe('x509pop');
    expect(attestorFor(attestors, 'tpm').method).toBe('tpm');
    for (const method of [undefined, null, 5, 'JOIN_TOKEN', 'TPM', '__proto__', 'toString', ['join_token']]) {
      expect(refusal(() => attestorFor(attestors, method))).toBe(
        'ERR_ATTESTATION_METHOD_UNKNOWN unknown attestation method; supported: join_token, tpm, x509pop',
      );
    }
    expect(refusal(() => attestorFor(defaultAttestors(), 'x509pop'))).toBe(
      'ERR_ATTESTATION_METHOD_UNKNOWN unknown attestation method; supported: join_token, tpm',
    );
  });

  it('readEvidence reads with the method’s reader and binds the evidence to its attestor', async () => {
    const evidence = readEvidence(attestorFor(attestors, 'join_token'), { token: TOKEN, nonce: 'ignored' });
    expect(evidence.method).toBe('join_token');
    // A token for another pin: the attestor itself refuses it, with the same 401.
    const e = await errorOf(evidence.verify({ ...deps(), pins: ['c'.repeat(52)] }));
    expect(`${e.code} ${e.message}`).toBe('ERR_TOKEN_INVALID invalid join token');
    expect(refusal(() => readEvidence(attestorFor(attestors, 'x509pop'), { token: TOKEN }))).toBe(
      'ERR_BAD_REQUEST certificate_chain: a PEM string of at most 32768 characters is required',
    );
  });

  it('every method has a reader; an attestor without one stops the server at start', () => {
    expect(Object.keys(EVIDENCE_READERS).sort()).toEqual(['join_token', 'tpm', 'x509pop']);
    expect(Object.keys(CHALLENGE_READERS).sort()).toEqual(['join_token', 'tpm', 'x509pop']);
    expect(() => checkEvidenceReaders(attestors)).not.toThrow();
    const sgx: Attestor = { method: 'sgx', verify: async () => Promise.reject(new Error('unused')) };
    expect(refusal(() => checkEvidenceReaders(new Map([['sgx', sgx]])))).toBe(
      'ERR_INTERNAL attestation method sgx has no evidence reader',
    );
  });
});

function deps(): AttestorDeps {
  return {
    clock: ca.clock,
    repos: {
      tokens: { findById: async () => null },
    } as unknown as Repositories,
    pins: [PIN],
    csrDer: Buffer.from('csr'),
  };
}
