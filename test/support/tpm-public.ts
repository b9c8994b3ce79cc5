import { createHash, createPublicKey } from 'node:crypto';

/**
 * For test doubles of the CA: the SubjectPublicKeyInfo of a TPM2B_PUBLIC (TPM 2.0 Library Part 2
 * §12.2.4 TPMT_PUBLIC, §12.2.3.5 TPMS_RSA_PARMS, §12.2.3.6 TPMS_ECC_PARMS) and its Name (Part 1
 * §16). RSA and ECC P-256 keys only: what the TCG default EK and Baton's AK are.
 */
export function tpmPublicToSpki(tpm2bPublic: Buffer): Buffer {
  let at = 2;
  const u16 = () => {
    const v = tpm2bPublic.readUInt16BE(at);
    at += 2;
    return v;
  };
  const tpm2b = () => {
    const n = u16();
    const b = tpm2bPublic.subarray(at, at + n);
    at += n;
    return b;
  };
  const type = u16();
  u16(); // nameAlg
  at += 4; // objectAttributes
  tpm2b(); // authPolicy
  if (u16() !== 0x0010) at += 4; // symmetric: keyBits, mode unless TPM_ALG_NULL
  if (u16() !== 0x0010) at += 2; // scheme: its hash unless TPM_ALG_NULL
  const jwk = (k: Record<string, string>) =>
    createPublicKey({ key: k, format: 'jwk' }).export({ type: 'spki', format: 'der' });
  if (type === 0x0001) {
    at += 2; // keyBits
    const exponent = tpm2bPublic.readUInt32BE(at) || 65537;
    at += 4;
    const n = tpm2b();
    const e = Buffer.from(exponent.toString(16).padStart(6, '0'), 'hex');
    return jwk({ kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') });
  }
  if (type === 0x0023) {
    if (u16() !== 0x0003) throw new Error('not a P-256 key');
    if (u16() !== 0x0010) at += 2; // kdf
    const x = tpm2b();
    const y = tpm2b();
    return jwk({ kty: 'EC', crv: 'P-256', x: x.toString('base64url'), y: y.toString('base64url') });
  }
  throw new Error(`unsupported TPM key type 0x${type.toString(16)}`);
}

/** Name = nameAlg (SHA-256, 0x000b) || SHA-256(TPMT_PUBLIC): the TPM2B_PUBLIC less its size. */
export function tpmName(tpm2bPublic: Buffer): Buffer {
  const digest = createHash('sha256').update(tpm2bPublic.subarray(2)).digest();
  return Buffer.concat([Buffer.from('000b', 'hex'), digest]);
}
