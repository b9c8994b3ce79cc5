import { createPrivateKey, createPublicKey, type KeyObject, webcrypto } from 'node:crypto';
import { bitString, ctx, oid, seq, set, toPem, uintBytes, utf8 } from './der';

/**
 * Key generation and PKCS#10 requests (RFC 2986) on the node. Keys are made where they are used
 * (CONTRACT "Certificate profile"): the private key never leaves this process except into key.pem.
 * The node agent (clients/rotation, re-exported from its index.ts) and `baton admin issue`
 * (services/ca/src/cli) both build their requests here.
 */

export type KeyPair = webcrypto.CryptoKeyPair;

export interface CreateCsrParams {
  /**
   * Informational only: the CA takes the identity from the token, node record or entry, never
   * from the CSR. Useful to tell requests apart in logs on the node.
   */
  commonName?: string;
}

export interface Csr {
  der: Buffer;
  pem: string;
}

type Curve = 'P-256' | 'P-384';

const { subtle } = webcrypto;

const OID = {
  commonName: '2.5.4.3',
  // RFC 5758 §3.2
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
} as const;

/** RFC 5480 §4: the hash matches the curve strength (P-256 with SHA-256, P-384 with SHA-384). */
const SIGNING: Record<Curve, { hash: string; oid: string; size: number }> = {
  'P-256': { hash: 'SHA-256', oid: OID.ecdsaWithSHA256, size: 32 },
  'P-384': { hash: 'SHA-384', oid: OID.ecdsaWithSHA384, size: 48 },
};

/**
 * A fresh EC P-256 key pair, the CONTRACT default. The private key is extractable because the
 * agent writes it to key.pem for the TLS stack and for the next run.
 */
export async function generateKeyPair(): Promise<KeyPair> {
  return subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
}

/** Builds and signs a CSR for `keys`: an EC P-256 (ecdsa-with-SHA256) or P-384 (ecdsa-with-SHA384) pair. */
export async function createCsr(keys: KeyPair, params: CreateCsrParams = {}): Promise<Csr> {
  const curve = curveOf(keys.privateKey);
  const signing = SIGNING[curve];
  const spki = Buffer.from(await subtle.exportKey('spki', keys.publicKey));
  // RFC 5280 §4.1.2.4: an empty Name is a valid subject; the CA sets its own.
  const subject =
    params.commonName === undefined ? seq() : seq(set(seq(oid(OID.commonName), utf8(params.commonName))));
  // RFC 2986 §4.1: version v1(0), subject, subjectPKInfo, attributes [0] (present even when empty).
  const info = seq(uintBytes(Uint8Array.of(0)), subject, spki, ctx(0, true));
  const p1363 = new Uint8Array(
    await subtle.sign({ name: 'ECDSA', hash: signing.hash }, keys.privateKey, info),
  );
  // RFC 5758 §3.2: ecdsa-with-SHA* AlgorithmIdentifiers carry no parameters.
  const der = seq(info, seq(oid(signing.oid)), bitString(p1363ToDer(p1363, signing.size)));
  return { der, pem: toPem('CERTIFICATE REQUEST', der) };
}

/**
 * WebCrypto returns ECDSA signatures as IEEE P1363 r||s (W3C Web Cryptography API, ECDSA "sign"
 * operation), while X.509 and PKCS#10 carry Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
 * (RFC 3279 §2.2.3).
 */
export function p1363ToDer(signature: Uint8Array, size: number): Buffer {
  if (signature.length !== 2 * size) throw new Error(`unexpected ecdsa signature length ${signature.length}`);
  return seq(uintBytes(signature.subarray(0, size)), uintBytes(signature.subarray(size)));
}

/** The private key as unencrypted PKCS#8 PEM (RFC 5208, label per RFC 7468 §10), for key.pem. */
export async function exportPrivateKeyPem(privateKey: webcrypto.CryptoKey): Promise<string> {
  return toPem('PRIVATE KEY', Buffer.from(await subtle.exportKey('pkcs8', privateKey)));
}

/**
 * Loads key.pem back into a key pair usable by createCsr. Accepts what Node reads (PKCS#8 or SEC1
 * EC PEM) as long as it is an unencrypted EC P-256 or P-384 key; the public half is derived.
 */
export async function importPrivateKeyPem(pem: string): Promise<KeyPair> {
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error('key file is not a readable unencrypted private key');
  }
  const curve = nodeCurve(keyObject);
  const algorithm = { name: 'ECDSA', namedCurve: curve };
  const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'der' });
  const spki = createPublicKey(keyObject).export({ type: 'spki', format: 'der' });
  const [privateKey, publicKey] = await Promise.all([
    subtle.importKey('pkcs8', pkcs8, algorithm, true, ['sign']),
    subtle.importKey('spki', spki, algorithm, true, ['verify']),
  ]);
  return { privateKey, publicKey };
}

function curveOf(key: webcrypto.CryptoKey): Curve {
  const alg = key.algorithm as webcrypto.EcKeyAlgorithm;
  if (alg.name !== 'ECDSA' || (alg.namedCurve !== 'P-256' && alg.namedCurve !== 'P-384')) {
    throw new Error('unsupported key: use an ECDSA P-256 or P-384 key');
  }
  return alg.namedCurve;
}

function nodeCurve(key: KeyObject): Curve {
  const curve = key.asymmetricKeyType === 'ec' ? key.asymmetricKeyDetails?.namedCurve : undefined;
  if (curve === 'prime256v1') return 'P-256';
  if (curve === 'secp384r1') return 'P-384';
  throw new Error('unsupported key in key file: use an EC P-256 or P-384 key');
}
