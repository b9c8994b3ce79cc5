import { BatonError } from '../ground/errors';

export type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa';

/** A public key as its decoder (keys.ts `describePublicKey`) found it, before the policy decides. */
export type KeyCandidate =
  /** RFC 8017 §A.1.1 RSAPublicKey, read as unsigned integers. */
  | { type: 'rsa'; modulus: bigint; exponent: bigint }
  /**
   * `curve`: OpenSSL's name of the named curve (undefined for explicit parameters). `onCurve`: the
   * decoder's check that the point is on that curve (SEC 1 §3.2.2.1).
   */
  | { type: 'ec'; curve: string | undefined; onCurve: boolean }
  | { type: 'other' };

const RSA_MIN_BITS = 2048;
const RSA_MAX_BITS = 4096;
const RSA_MIN_EXPONENT = 2n ** 16n + 1n;
const RSA_MAX_EXPONENT = 2n ** 256n - 1n;
/** NIST SP 800-89 §5.3.3 via BR §6.1.6: the modulus has no prime factor below this. */
const SMALLEST_ALLOWED_FACTOR = 752;

/** By OpenSSL's curve name (RFC 5480 §2.1.1.1: secp256r1 is prime256v1). */
const EC_CURVES: ReadonlyMap<string, { kind: KeyKind; bits: number }> = new Map([
  ['prime256v1', { kind: 'ec-p256', bits: 256 }],
  ['secp384r1', { kind: 'ec-p384', bits: 384 }],
]);

const unsupported = (message: string): BatonError => new BatonError('ERR_CSR_KEY_UNSUPPORTED', message);

/**
 * The one key policy for every key a CSR brings (node attestation, renewal, workload SVIDs, admin
 * certificates: each goes through parseCsr → describePublicKey, which calls this). CONTRACT
 * "Certificate profile" names the families; the CA/Browser Forum Baseline Requirements give the rest:
 *
 * - RSA, BR §6.1.5: a modulus of 2048 to 4096 bits, a multiple of 8. BR §6.1.6 (from NIST SP 800-89
 *   §5.3.3): an odd public exponent with 2^16+1 ≤ e ≤ 2^256−1; an odd modulus with no factor
 *   smaller than 752.
 * - EC, BR §6.1.5: the named curves P-256 and P-384. BR §6.1.6 (NIST SP 800-56A §5.6.2.3.3): the
 *   point is on the curve; both curves have cofactor 1, so that is also the full validation.
 *
 * The exponent bound closes two holes (issue 14). With e = 1 any 2048-bit number is a "key" whose
 * signature is the padded digest itself, so anyone can sign for the certificate. And verifying costs
 * one modular squaring per bit of e: a 3070-bit e made one unauthenticated CSR cost 13.5 ms of CPU;
 * with e ≤ 2^256−1 the worst is about 1.8 ms (RSA-3072; OpenSSL itself refuses exponents over 64
 * bits with larger moduli), against 0.25 ms for 65537.
 *
 * Not checked: that the modulus is not a power of a prime (a BR §6.1.6 SHOULD). The case that
 * matters, a prime modulus, takes a primality test, a full-size modular exponentiation (6 ms at
 * 2048 bits, 27 ms at 4096, per request and before the requester is known), and no check a CA can
 * afford proves a key strong (a modulus 757·q passes all of the above): a key's holder can always give it
 * away. These are the checks that cost microseconds and refuse the keys that need no work to break.
 *
 * Returns the key's kind and size; throws ERR_CSR_KEY_UNSUPPORTED for a key outside the policy, and
 * ERR_CSR_INVALID for an EC point off its curve (not a key at all, as before this policy).
 */
export function checkKeyPolicy(key: KeyCandidate): { kind: KeyKind; bits: number } {
  if (key.type === 'rsa') return checkRsa(key.modulus, key.exponent);
  if (key.type === 'ec') {
    const curve = key.curve === undefined ? undefined : EC_CURVES.get(key.curve);
    if (!curve) throw unsupported('unsupported EC curve: use P-256 or P-384');
    if (!key.onCurve) throw new BatonError('ERR_CSR_INVALID', 'the public key cannot be decoded');
    return curve;
  }
  throw unsupported('unsupported key type: use EC P-256, EC P-384 or RSA');
}

function checkRsa(modulus: bigint, exponent: bigint): { kind: KeyKind; bits: number } {
  const bits = bitLength(modulus);
  if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS || bits % 8 !== 0) {
    throw unsupported(
      `unsupported RSA key size ${bits}: use ${RSA_MIN_BITS} to ${RSA_MAX_BITS} bits, a multiple of 8`,
    );
  }
  if ((exponent & 1n) === 0n || exponent < RSA_MIN_EXPONENT || exponent > RSA_MAX_EXPONENT) {
    throw unsupported(
      'unsupported RSA public exponent: use an odd one from 65537 to 2^256-1 (65537 is usual)',
    );
  }
  if (smallFactor(modulus) !== undefined) {
    throw unsupported(`unsupported RSA modulus: it has a factor smaller than ${SMALLEST_ALLOWED_FACTOR}`);
  }
  return { kind: 'rsa', bits };
}

function bitLength(n: bigint): number {
  if (n <= 0n) return 0;
  const hex = n.toString(16);
  return (hex.length - 1) * 4 + (32 - Math.clz32(Number.parseInt(hex[0]!, 16)));
}

/**
 * The primes below 752 (2 included, so an even modulus is caught here too), in groups whose product
 * stays below 2^53: one BigInt remainder per group (22 of them), then Number arithmetic per prime.
 * About 20 µs for a 4096-bit modulus, where a BigInt gcd with the product of all 133 costs 300 µs.
 */
const SMALL_PRIME_GROUPS: readonly { product: bigint; primes: readonly number[] }[] = groupPrimes(
  primesBelow(SMALLEST_ALLOWED_FACTOR),
);

function smallFactor(n: bigint): number | undefined {
  for (const group of SMALL_PRIME_GROUPS) {
    const r = Number(n % group.product);
    for (const p of group.primes) if (r % p === 0) return p;
  }
  return undefined;
}

function primesBelow(limit: number): number[] {
  const primes: number[] = [];
  for (let i = 2; i < limit; i++) if (primes.every((p) => i % p !== 0)) primes.push(i);
  return primes;
}

function groupPrimes(primes: readonly number[]): { product: bigint; primes: number[] }[] {
  const groups: { product: bigint; primes: number[] }[] = [];
  let current: number[] = [];
  let product = 1;
  for (const p of primes) {
    if (product * p > Number.MAX_SAFE_INTEGER) {
      groups.push({ product: BigInt(product), primes: current });
      current = [];
      product = 1;
    }
    current.push(p);
    product *= p;
  }
  groups.push({ product: BigInt(product), primes: current });
  return groups;
}
