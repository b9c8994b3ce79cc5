import { createHash, X509Certificate } from 'node:crypto';
import { AgentError } from '../agent-error';

/**
 * The node's half of the TPM attestation wire format (docs/api.md "TPM attestation"): what the
 * agent checks in the CA's challenge before it hands it to the TPM, the file tpm2-tools reads it
 * from, and the value the quote binds the CSR to. Pure: no TPM, no files.
 *
 * Binary fields are standard base64 (with padding) of TPM marshalled bytes, big-endian, every TPM2B
 * with its 2-byte size (TPM 2.0 Library Part 2 §10.4): the `-f tss` files tpm2-tools writes.
 */

/** What `POST /v1/attest/challenge` answered, decoded. */
export interface TpmChallenge {
  /** Echoed as given: the qualifying data is computed over this string. */
  nonce: string;
  expiresAt: Date;
  /** TPM2B_ID_OBJECT: size || TPM2B_DIGEST(integrityHMAC) || encIdentity (Part 1 §24.5). */
  credentialBlob: Buffer;
  /** TPM2B_ENCRYPTED_SECRET: the seed, under the EK (Part 1 §24.4). */
  encryptedSecret: Buffer;
}

/**
 * Upper bounds from Part 2: TPMS_ID_OBJECT is a TPM2B_DIGEST (at most 64 bytes of SHA-512) and an
 * encrypted TPM2B_DIGEST; TPMU_ENCRYPTED_SECRET is at most an RSA 4096 block (512 bytes). A CA of
 * ours sends 68 and 256 (RSA 2048 EK) or 68 (P-256 point) bytes; anything far larger is refused
 * before it reaches the TPM.
 */
const MAX_ID_OBJECT = 2 + 64 + 2 + 64;
const MAX_ENCRYPTED_SECRET = 512;

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const B64URL = /^[A-Za-z0-9_-]{16,128}={0,2}$/;

/** Standard base64 with padding, strictly (Buffer.from alone skips any character it dislikes). */
export function decodeBase64(field: string, value: unknown): Buffer {
  if (typeof value !== 'string' || value === '' || !B64.test(value))
    throw badChallenge(`"${field}" is not base64`);
  return Buffer.from(value, 'base64');
}

const badChallenge = (why: string) =>
  new AgentError('ERR_BAD_RESPONSE', `the CA's TPM challenge is malformed: ${why}`);

/**
 * A TPM2B whose 2-byte size covers exactly the rest of `buf`, with at most `max` bytes of body:
 * Part 2 §10.4, no trailing bytes.
 */
function checkTpm2b(field: string, buf: Buffer, max: number): void {
  if (buf.length < 2 || buf.readUInt16BE(0) !== buf.length - 2)
    throw badChallenge(`"${field}" is not one TPM2B (its size field says otherwise)`);
  if (buf.length - 2 > max || buf.length === 2) throw badChallenge(`"${field}" has a wrong size`);
}

/** The challenge response body, checked (a hostile or broken CA must not feed the TPM garbage). */
export function parseTpmChallenge(body: unknown): TpmChallenge {
  if (typeof body !== 'object' || body === null) throw badChallenge('not a JSON object');
  const j = body as Record<string, unknown>;
  if (typeof j.nonce !== 'string' || !B64URL.test(j.nonce)) throw badChallenge('"nonce" is not base64url');
  const expiresAt = new Date(typeof j.expires_at === 'string' ? j.expires_at : Number.NaN);
  if (!Number.isFinite(expiresAt.getTime())) throw badChallenge('"expires_at" is not a date');
  const credentialBlob = decodeBase64('credential_blob', j.credential_blob);
  checkTpm2b('credential_blob', credentialBlob, MAX_ID_OBJECT);
  // Inside: TPM2B_DIGEST integrityHMAC, then encIdentity (Part 1 §24.5); both must be non-empty.
  const hmacSize = credentialBlob.readUInt16BE(2);
  if (hmacSize === 0 || 4 + hmacSize >= credentialBlob.length)
    throw badChallenge('"credential_blob" has a wrong integrity HMAC size');
  const encryptedSecret = decodeBase64('encrypted_secret', j.encrypted_secret);
  checkTpm2b('encrypted_secret', encryptedSecret, MAX_ENCRYPTED_SECRET);
  return { nonce: j.nonce, expiresAt, credentialBlob, encryptedSecret };
}

/**
 * tpm2-tools' credential file, what `tpm2_makecredential -o` writes and `tpm2_activatecredential
 * -i` reads (tpm2-tools lib/files.c, files_save_credential / files_load_credential): the magic
 * 0xBADCC0DE and version 1, 4 bytes each, big-endian, then the TPM2B_ID_OBJECT and the
 * TPM2B_ENCRYPTED_SECRET, each with its size.
 */
export function credentialFile(challenge: Pick<TpmChallenge, 'credentialBlob' | 'encryptedSecret'>): Buffer {
  const header = Buffer.alloc(8);
  header.writeUInt32BE(0xbadcc0de, 0);
  header.writeUInt32BE(1, 4);
  return Buffer.concat([header, challenge.credentialBlob, challenge.encryptedSecret]);
}

/**
 * What the AK quotes (TPM2_Quote qualifyingData, Part 3 §18.4): SHA-256 of
 * "baton-tpm-v1\n" + nonce + "\n" + base64url(SHA-256(CSR DER)). It binds this exchange to this
 * CSR, so that a captured exchange cannot certify another key (issue 19, item 1).
 */
export function qualifyingData(nonce: string, csrDer: Uint8Array): Buffer {
  const csrHash = createHash('sha256').update(csrDer).digest('base64url');
  return createHash('sha256').update(`baton-tpm-v1\n${nonce}\n${csrHash}`, 'utf8').digest();
}

/**
 * The EK identifier (CONTRACT "TPM node attestation"): lowercase hex SHA-256 of the EK public
 * key's SubjectPublicKeyInfo DER. The node ID is `tpm-` and its first 20 characters.
 */
export function ekIdentifier(spkiDer: Uint8Array): string {
  return createHash('sha256').update(spkiDer).digest('hex');
}

export const nodeIdOfEk = (ekId: string): string => `tpm-${ekId.slice(0, 20)}`;

/**
 * The EK certificate as stored in NV, cut to its DER length (TCG EK Credential Profile §2.2.1.5: an
 * index may be larger than the certificate it holds), or undefined when it is not a certificate of
 * the EK `ekSpkiDer`: a server would refuse it, and an enrolled EK needs none.
 */
export function ekCertificateFor(nvBytes: Buffer, ekSpkiDer: Buffer): Buffer | undefined {
  const der = derPrefix(nvBytes);
  if (!der) return undefined;
  try {
    const cert = new X509Certificate(der);
    const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
    return spki.equals(ekSpkiDer) ? der : undefined;
  } catch {
    return undefined;
  }
}

/** The first DER SEQUENCE of `buf` (X.690 §8.1.3 definite lengths), or undefined. */
function derPrefix(buf: Buffer): Buffer | undefined {
  if (buf.length < 2 || buf[0] !== 0x30) return undefined;
  const first = buf[1]!;
  if (first < 0x80) return 2 + first <= buf.length ? buf.subarray(0, 2 + first) : undefined;
  const n = first & 0x7f;
  if (n === 0 || n > 3 || buf.length < 2 + n) return undefined;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + buf[2 + i]!;
  const total = 2 + n + len;
  return total <= buf.length ? buf.subarray(0, total) : undefined;
}
