import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { BatonError } from '../ground/errors';
import type { Signer } from '../ground/signer';
import { type Kek, unwrapKey, wrapKey } from '../pki/kek';
import { keyObjectSigner } from '../pki/signer';
import type { WrappedKey } from './ports';

/**
 * Key custody (issue 18): where the CA and JWT-SVID signing keys are made and kept. Two adapters:
 * the KEK (keys made here, stored PKCS#8 wrapped under AES-256-GCM: `kekCustody` below) and a
 * PKCS#11 token (keys made in the token and never leaving it; the database stores a reference:
 * kms/pkcs11-custody.ts). Every key is EC P-256.
 *
 * The database columns are the same for both (`key_alg`, `key_kek_id`, `key_blob`): `WrappedKey`
 * is either a wrapped PKCS#8 (`A256GCM`) or a reference (`pkcs11`: the token's identity and the
 * key's CKA_ID), never key material in the second case.
 */
export interface KeyCustody {
  /** `kek` or `pkcs11`: the `alg` family of what `store` returns. */
  readonly kind: 'kek' | 'pkcs11';
  /** Recorded as `key_kek_id` beside every key this custody keeps (the KEK id, the token's identity). */
  readonly id: string;
  /** A new P-256 key, kept by this custody; named and recorded by `CustodyKey.store`. */
  generate(): CustodyKey;
  /**
   * The key a row recorded under `name` (the CA id or the kid), ready to sign. Throws
   * ERR_KEK_INVALID when the row belongs to another custody (another KEK, a KEK-wrapped key with
   * --kms, a token key without it), ERR_CA_UNAVAILABLE when the custody cannot reach the key now.
   */
  load(stored: WrappedKey, name: string): CustodyKeyHandle;
}

/** A key that signs, wherever it is kept. */
export interface CustodyKeyHandle {
  publicKey: KeyObject;
  /** X.509 and CRL/OCSP signatures: DER ECDSA-Sig-Value with its AlgorithmIdentifier (RFC 5758 §3.2). */
  signer: Signer;
  /** JWS ES256: SHA-256 then ECDSA, the signature as r || s, 32 bytes each (RFC 7518 §3.4). */
  signJws(data: Uint8Array): Buffer;
  /** The private key in memory when the custody is the KEK; absent when it never leaves a token. */
  privateKey?: KeyObject;
}

export interface CustodyKey extends CustodyKeyHandle {
  /**
   * What the database records for this key, once its name (CA id, kid) is known: the name is the
   * KEK wrap's additional data, and the token object's CKA_LABEL.
   */
  store(name: string): WrappedKey;
}

/** The KEK adapter: keys made in this process, stored wrapped (pki/kek.ts). */
export function kekCustody(kek: Kek): KeyCustody {
  return {
    kind: 'kek',
    id: kek.id,
    generate() {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      return {
        ...inMemoryKey(privateKey),
        store: (name) => wrapKey(kek, privateKey.export({ type: 'pkcs8', format: 'der' }), name),
      };
    },
    load(stored, name) {
      if (stored.alg === 'pkcs11')
        throw new BatonError(
          'ERR_KEK_INVALID',
          `the CA keys are kept in a PKCS#11 token (${stored.kekId}): start with --kms (or BATON_KMS)`,
        );
      // Parsed once here; the KeyObject is what signs from then on.
      return inMemoryKey(
        createPrivateKey({ key: unwrapKey(kek, stored, name), format: 'der', type: 'pkcs8' }),
      );
    },
  };
}

function inMemoryKey(privateKey: KeyObject): CustodyKeyHandle {
  return {
    publicKey: createPublicKey(privateKey),
    signer: keyObjectSigner(privateKey),
    signJws: (data) => sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' }),
    privateKey,
  };
}

/** What the existing call sites pass: a KEK (the default custody) or a custody. */
export type KeyCustodySource = Kek | KeyCustody;

/** A KEK stands for its own custody (the default, without --kms). */
export const custodyOf = (source: KeyCustodySource): KeyCustody =>
  'generate' in source ? source : kekCustody(source);
