import { execFileSync } from 'node:child_process';
import { randomBytes, sign } from 'node:crypto';
import { BatonError } from '../../../../services/ca/src/ground/errors';
import {
  publicKeyOf,
  readPublicArea,
  readQuote,
  readQuoteSignature,
  TPM_ALG,
  tpmQualifyingData,
  verifyQuoteSignature,
} from '../../../../services/ca/src/pki/tpm';
import { hex, SWTPM } from '../../../fixtures/tpm-swtpm';
import { tpmsAttest, tpmtSignature, freshKeyPair } from '../../../support/tpm-structures';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof BatonError) return `${e.code} ${e.message}`;
    throw e;
  }
  throw new Error('expected a refusal');
}

const swtpmAk = () => {
  const area = readPublicArea(hex(SWTPM.akPublic));
  return { key: publicKeyOf(area).key, type: area.type };
};

describe('quotes (pki/tpm/quote.ts)', () => {
  it('ok/the quote swtpm made: its signer is the AK qualified name, its data ours, its signature verifies', () => {
    const quote = readQuote(hex(SWTPM.quote));
    expect(quote.qualifiedSigner.toString('hex')).toBe(SWTPM.akQualifiedName);
    expect(quote.extraData.toString('hex')).toBe(SWTPM.quoteQualifyingData);
    expect(quote.pcrSelection).toEqual([{ hashAlg: TPM_ALG.SHA256, select: Buffer.from([1, 0, 0]) }]);
    expect(quote.pcrDigest).toHaveLength(32);
    const sig = readQuoteSignature(hex(SWTPM.quoteSignature));
    expect(sig).toMatchObject({ sigAlg: 'ecdsa', hashAlg: TPM_ALG.SHA256 });
    expect(verifyQuoteSignature(swtpmAk(), quote, sig)).toBe(true);
  });

  it('fail/any changed byte of the signed quote does not verify', () => {
    const sig = readQuoteSignature(hex(SWTPM.quoteSignature));
    const bytes = hex(SWTPM.quote);
    for (let i = 0; i < bytes.length; i += 7) {
      const changed = Buffer.from(bytes);
      changed[i]! ^= 0x01;
      let quote: ReturnType<typeof readQuote>;
      try {
        quote = readQuote(changed);
      } catch (e) {
        expect((e as BatonError).code).toBe('ERR_BAD_REQUEST');
        continue;
      }
      expect(verifyQuoteSignature(swtpmAk(), quote, sig)).toBe(false);
    }
  });

  it('fail/the signature of another key, a hash other than SHA-256, RSASSA on an ECC AK, r longer than 32 bytes', () => {
    const quote = readQuote(hex(SWTPM.quote));
    const other = freshKeyPair('ecc');
    const rs = sign('sha256', quote.raw, { key: other.privateKey, dsaEncoding: 'ieee-p1363' });
    const forged = readQuoteSignature(
      tpmtSignature({ sigAlg: 'ecdsa', r: rs.subarray(0, 32), s: rs.subarray(32) }),
    );
    expect(verifyQuoteSignature(swtpmAk(), quote, forged)).toBe(false);
    const real = readQuoteSignature(hex(SWTPM.quoteSignature));
    if (real.sigAlg !== 'ecdsa') throw new Error('ecdsa');
    expect(verifyQuoteSignature(swtpmAk(), quote, { ...real, hashAlg: 0x000c })).toBe(false);
    expect(
      verifyQuoteSignature(swtpmAk(), quote, {
        sigAlg: 'rsassa',
        hashAlg: TPM_ALG.SHA256,
        sig: Buffer.alloc(256),
      }),
    ).toBe(false);
    expect(
      verifyQuoteSignature(swtpmAk(), quote, { ...real, r: Buffer.concat([Buffer.from([1]), real.r]) }),
    ).toBe(false);
    // A leading zero is only padding: the same signature.
    expect(
      verifyQuoteSignature(swtpmAk(), quote, { ...real, r: Buffer.concat([Buffer.from([0]), real.r]) }),
    ).toBe(true);
  });

  it('ok/an RSA AK: RSASSA-PKCS1-v1_5 with SHA-256; an ECDSA signature for it is false', () => {
    const rsa = freshKeyPair('rsa');
    const quote = readQuote(
      tpmsAttest({ qualifiedSigner: Buffer.alloc(34, 1), extraData: Buffer.alloc(32, 2) }),
    );
    const ak = { key: rsa.publicKey, type: 'rsa' as const };
    const sig = readQuoteSignature(
      tpmtSignature({ sigAlg: 'rsassa', sig: sign('sha256', quote.raw, rsa.privateKey) }),
    );
    expect(verifyQuoteSignature(ak, quote, sig)).toBe(true);
    expect(
      verifyQuoteSignature(ak, quote, {
        sigAlg: 'ecdsa',
        hashAlg: TPM_ALG.SHA256,
        r: Buffer.alloc(32, 1),
        s: Buffer.alloc(32, 1),
      }),
    ).toBe(false);
  });

  it.each([
    ['a wrong magic (not made by a TPM)', { magic: 0x12345678 }, 'its magic is not TPM_GENERATED_VALUE'],
    ['TPM_ST_ATTEST_CERTIFY', { type: 0x8017 }, 'it is not a quote (TPM_ST_ATTEST_QUOTE)'],
    [
      '17 PCR banks',
      { pcrs: Array.from({ length: 17 }, () => ({ hashAlg: 0x0b, select: Buffer.alloc(3) })) },
      '17 PCR banks, more than 16',
    ],
    [
      'a PCR selection of 9 bytes',
      { pcrs: [{ hashAlg: 0x0b, select: Buffer.alloc(9) }] },
      'a PCR selection of 9 bytes, more than 8',
    ],
    ['extraData of 65 bytes', { extraData: Buffer.alloc(65) }, 'extraData is 65 bytes, more than 64'],
  ])('fail/a TPMS_ATTEST with %s: 400', (_name, over, why) => {
    const bytes = tpmsAttest({
      qualifiedSigner: Buffer.alloc(34, 1),
      extraData: Buffer.alloc(32, 2),
      ...over,
    });
    expect(refusal(() => readQuote(bytes))).toBe(`ERR_BAD_REQUEST malformed TPMS_ATTEST: ${why}`);
  });

  it('fail/truncated at every length, or with a byte after it', () => {
    const bytes = hex(SWTPM.quote);
    for (let n = 0; n < bytes.length; n++)
      expect(refusal(() => readQuote(bytes.subarray(0, n)))).toMatch(
        /^ERR_BAD_REQUEST malformed TPMS_ATTEST: /,
      );
    expect(refusal(() => readQuote(Buffer.concat([bytes, Buffer.alloc(1)])))).toBe(
      'ERR_BAD_REQUEST malformed TPMS_ATTEST: trailing bytes',
    );
    const sig = hex(SWTPM.quoteSignature);
    for (let n = 0; n < sig.length; n++)
      expect(refusal(() => readQuoteSignature(sig.subarray(0, n)))).toMatch(
        /^ERR_BAD_REQUEST malformed TPMT_SIGNATURE: /,
      );
    expect(refusal(() => readQuoteSignature(Buffer.concat([sig, Buffer.alloc(1)])))).toBe(
      'ERR_BAD_REQUEST malformed TPMT_SIGNATURE: trailing bytes',
    );
  });

  it('fail/a signature scheme other than ECDSA or RSASSA; parts over their maximum', () => {
    expect(refusal(() => readQuoteSignature(Buffer.from('0016000b0000', 'hex')))).toBe(
      'ERR_BAD_REQUEST malformed TPMT_SIGNATURE: unsupported signature algorithm (ECDSA or RSASSA)',
    );
    expect(
      refusal(() =>
        readQuoteSignature(tpmtSignature({ sigAlg: 'ecdsa', r: Buffer.alloc(67), s: Buffer.alloc(1) })),
      ),
    ).toBe('ERR_BAD_REQUEST malformed TPMT_SIGNATURE: signatureR is 67 bytes, more than 66');
    expect(
      refusal(() => readQuoteSignature(tpmtSignature({ sigAlg: 'rsassa', sig: Buffer.alloc(513) }))),
    ).toBe('ERR_BAD_REQUEST malformed TPMT_SIGNATURE: the RSA signature is 513 bytes, more than 512');
  });

  it('fuzz/random bytes and bit flips: a structure or ERR_BAD_REQUEST', () => {
    for (let i = 0; i < 1000; i++) {
      const b = i % 2 ? randomBytes(i % 200) : Buffer.from(hex(SWTPM.quote));
      if (i % 2 === 0) b[(i * 13) % b.length]! ^= 1 << (i % 8);
      for (const read of [readQuote, readQuoteSignature]) {
        try {
          read(b);
        } catch (e) {
          expect((e as BatonError).code).toBe('ERR_BAD_REQUEST');
        }
      }
    }
  });

  it('ok/the qualifying data: SHA-256 of "baton-tpm-v1\\n" nonce "\\n" base64url(SHA-256(CSR DER)), as a shell computes it', () => {
    const nonce = randomBytes(32).toString('base64url');
    const csrDer = randomBytes(300);
    const script =
      'H=$(printf %s "$CSR" | xxd -r -p | openssl dgst -sha256 -binary | base64 | tr "+/" "-_" | tr -d "=\\n"); ' +
      'printf "baton-tpm-v1\\n%s\\n%s" "$NONCE" "$H" | openssl dgst -sha256 -r | cut -c1-64';
    const expected = execFileSync('sh', ['-c', script], {
      encoding: 'utf8',
      env: { ...process.env, NONCE: nonce, CSR: csrDer.toString('hex') },
    }).trim();
    expect(tpmQualifyingData(nonce, csrDer).toString('hex')).toBe(expected);
    expect(tpmQualifyingData(nonce, csrDer)).toHaveLength(32);
  });
});
