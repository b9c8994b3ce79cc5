import { verify as cryptoVerify, type X509Certificate } from 'node:crypto';
import { parsePem, pathToRoot } from '../../../../common/src/trust-store';
import { BatonError } from '../ground/errors';
import { canonicalJson } from './audit';
import type { Clock } from './clock';
import type { AuditRepository } from './ports';
import type { SigningCa } from './signing-ca';

/**
 * Signed audit checkpoints (issue 20; CONTRACT "Fleet scale"): the sealed chain head, signed by the
 * signing CA's key, for an operator to keep where the database's administrators cannot write. The
 * chain's hash is not keyed, so someone who can write the database can rewrite every row and every
 * hash after an edit and the chain still verifies; a checkpoint taken before the edit cannot be
 * forged without the CA key (in a PKCS#11 token with `--kms`), and the rewritten chain no longer
 * holds its row. `baton audit verify --checkpoint FILE` checks both (Certificate Transparency's
 * signed tree heads do the same for a Merkle log, RFC 6962 §3.5).
 *
 * The signed bytes are the canonical JSON (keys sorted by code unit, no whitespace, UTF-8) of
 *   {"at":"<ISO 8601, UTC, milliseconds>","hash":"<64 lowercase hex>","seq":<integer>}
 * and the signature is what the signing CA's key puts in a certificate: ECDSA with SHA-256 for a
 * P-256 key (Baton's own CA keys), SHA-384 for P-384, as a DER ECDSA-Sig-Value (RFC 5480 §2.2,
 * RFC 5758 §3.2), base64 in the JSON; `openssl dgst -sha256 -verify KEY -signature SIG` takes it.
 */
export interface AuditCheckpoint {
  /** seal_seq of the chain head. */
  seq: number;
  /** Its hash, lowercase hex. */
  hash: string;
  /** When the checkpoint was signed. */
  at: string;
  /** base64 of the DER signature over checkpointBytes. */
  signature: string;
  /** PEM: the signing CA's certificate, then any CA certificate that links it to a root of the bundle. */
  certificate: string;
}

export type CheckpointClaim = Pick<AuditCheckpoint, 'seq' | 'hash' | 'at'>;

/** The exact bytes a checkpoint's signature covers. */
export function checkpointBytes(c: CheckpointClaim): Buffer {
  return Buffer.from(canonicalJson({ at: c.at, hash: c.hash, seq: c.seq }), 'utf8');
}

/** A checkpoint of the chain as it is sealed now; ERR_NOT_FOUND before the first seal. */
export async function makeCheckpoint(deps: {
  clock: Clock;
  audit: Pick<AuditRepository, 'head'>;
  signing: SigningCa;
}): Promise<AuditCheckpoint> {
  const head = await deps.audit.head();
  if (!head?.hash || head.sealSeq === null)
    throw new BatonError(
      'ERR_NOT_FOUND',
      'no audit row is sealed yet: try again after the background interval',
    );
  const claim: CheckpointClaim = {
    seq: head.sealSeq,
    hash: head.hash.toString('hex'),
    at: deps.clock.now().toISOString(),
  };
  const signature = deps.signing.signer.sign(checkpointBytes(claim));
  // The CA's own certificate first, then what its served chain adds (a cross-certificate during a
  // root rotation, an upstream CA's outside intermediates): enough to reach a root of the bundle.
  const rest = deps.signing.chainPem.replace(deps.signing.certPem, '');
  return { ...claim, signature: signature.toString('base64'), certificate: deps.signing.certPem + rest };
}

const HEX_HASH = /^[0-9a-f]{64}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Reads a checkpoint file's JSON; ERR_BAD_REQUEST naming the first field that is not as written. */
export function parseCheckpoint(text: string): AuditCheckpoint {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new BatonError('ERR_BAD_REQUEST', 'not JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new BatonError('ERR_BAD_REQUEST', 'not a JSON object');
  const o = v as Record<string, unknown>;
  const bad = (field: string, what: string) => new BatonError('ERR_BAD_REQUEST', `${field}: ${what}`);
  if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq) || o.seq < 1)
    throw bad('seq', 'a positive integer');
  if (typeof o.hash !== 'string' || !HEX_HASH.test(o.hash)) throw bad('hash', '64 lowercase hex digits');
  if (typeof o.at !== 'string' || !ISO_UTC.test(o.at) || Number.isNaN(Date.parse(o.at)))
    throw bad('at', 'an ISO 8601 UTC time with milliseconds');
  if (typeof o.signature !== 'string' || !BASE64.test(o.signature)) throw bad('signature', 'base64');
  if (typeof o.certificate !== 'string' || parsePem(o.certificate).length === 0)
    throw bad('certificate', 'PEM certificates');
  return { seq: o.seq, hash: o.hash, at: o.at, signature: o.signature, certificate: o.certificate };
}

/** The digest the signer's key pairs with (pki/signer.ts, kms/pkcs11-custody.ts). */
function digestFor(cert: X509Certificate): string {
  const key = cert.publicKey;
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'secp384r1') return 'sha384';
  return 'sha256';
}

/**
 * Why a checkpoint's signature cannot be trusted, or null when it can: its first certificate is a
 * CA certificate of `trustDomain` (URI SAN `spiffe://<td>`: a leaf that chains to the bundle too,
 * a node's say, must not vouch for the log), it chains to a root of `bundlePem`, it was valid at
 * the checkpoint's `at` (a checkpoint outlives the CA that signed it), and its key signed the claim.
 */
export function checkpointSignatureProblem(
  cp: AuditCheckpoint,
  trust: { bundlePem: string; trustDomain: string },
): string | null {
  const chain = parsePem(cp.certificate);
  const signer = chain[0]!;
  const uris = (signer.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:'));
  if (!signer.ca || uris.length !== 1 || uris[0] !== `URI:spiffe://${trust.trustDomain}`)
    return `its certificate is not a CA certificate of ${trust.trustDomain}`;
  if (!pathToRoot(chain, parsePem(trust.bundlePem)))
    return 'its certificate does not chain to the trust bundle';
  const at = Date.parse(cp.at);
  if (at < Date.parse(signer.validFrom) || at > Date.parse(signer.validTo))
    return 'it was signed outside its certificate’s validity';
  let ok = false;
  try {
    ok = cryptoVerify(
      digestFor(signer),
      checkpointBytes(cp),
      signer.publicKey,
      Buffer.from(cp.signature, 'base64'),
    );
  } catch {
    ok = false;
  }
  return ok ? null : 'the signature does not verify';
}

/** What a walk of the chain saw, for checkpointChainProblem. */
export interface ChainObservation {
  /** The first seal_seq of the chain (after a prune, the first kept row). */
  from: number;
  /** The last seal_seq walked (0: none). */
  last: number;
  /** The hash (hex) of the row with the checkpoint's seal_seq, when the walk met it. */
  hashAtSeq?: string;
}

/** Why the chain no longer holds the checkpoint's row with its hash, or null when it does. */
export function checkpointChainProblem(cp: CheckpointClaim, seen: ChainObservation): string | null {
  if (cp.seq < seen.from)
    return `its row was pruned (the chain starts at seal_seq ${seen.from}): check it against the export`;
  if (seen.hashAtSeq === undefined)
    return seen.last === 0
      ? 'the chain is empty: its rows were removed'
      : `the chain ends at seal_seq ${seen.last}: rows were cut off from its tail`;
  if (seen.hashAtSeq !== cp.hash) return 'its row has another hash: the chain was rewritten at or before it';
  return null;
}
