import { createHash, createHmac } from 'node:crypto';
import { u32 } from './marshal';

/**
 * The TPM's two key derivation functions, with SHA-256 (the only hash the exchange uses).
 * `label` is given without its terminating zero: the TPM spec appends one (Part 1 §11.4.10.1 "a
 * label ... terminated by a 0x00 octet"), and so do these.
 */

const ZERO = Buffer.from([0]);

/**
 * KDFa (TPM 2.0 Library Part 1 §11.4.10.2): NIST SP 800-108 in counter mode with HMAC-SHA-256,
 *   K(i) = HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32),
 * concatenated and truncated to `bits`, a multiple of 8 here. (OpenSSL's KBKDF in counter mode with
 * its separator and length fields computes the same, which the unit tests check.)
 */
export function kdfa(key: Buffer, label: string, contextU: Buffer, contextV: Buffer, bits: number): Buffer {
  const out: Buffer[] = [];
  let have = 0;
  for (let i = 1; have * 8 < bits; i++) {
    const k = createHmac('sha256', key)
      .update(u32(i))
      .update(label, 'latin1')
      .update(ZERO)
      .update(contextU)
      .update(contextV)
      .update(u32(bits))
      .digest();
    out.push(k);
    have += k.length;
  }
  return Buffer.concat(out).subarray(0, bits / 8);
}

/**
 * KDFe (TPM 2.0 Library Part 1 §11.4.10.3): the NIST SP 800-56A §5.8.1 concatenation KDF with
 * SHA-256,
 *   K(i) = H([i]32 || Z || label || 0x00 || partyUInfo || partyVInfo),
 * where Z is the x-coordinate of the ECDH shared point, partyUInfo the x-coordinate of the
 * ephemeral (caller's) key and partyVInfo that of the TPM's key (Part 1 Annex C.6, one-pass ECDH).
 */
export function kdfe(z: Buffer, label: string, partyUInfo: Buffer, partyVInfo: Buffer, bits: number): Buffer {
  const out: Buffer[] = [];
  let have = 0;
  for (let i = 1; have * 8 < bits; i++) {
    const k = createHash('sha256')
      .update(u32(i))
      .update(z)
      .update(label, 'latin1')
      .update(ZERO)
      .update(partyUInfo)
      .update(partyVInfo)
      .digest();
    out.push(k);
    have += k.length;
  }
  return Buffer.concat(out).subarray(0, bits / 8);
}
