import { X509Certificate } from 'node:crypto';
import {
  type Attestor,
  type PresentedChallenge,
  type PresentedEvidence,
  presentEvidence,
} from '../domain/attestation/attestor';
import type { JoinTokenEvidence } from '../domain/attestation/join-token-attestor';
import type {
  AttestationMethod,
  ChallengeEvidenceByMethod,
  EvidenceByMethod,
  KnownAttestor,
} from '../domain/attestation/registry';
import {
  type PresentedCertificate,
  X509POP_MAX_CHAIN_CERTS,
  type X509popEvidence,
  x509popProfile,
} from '../domain/attestation/x509pop-attestor';
import { parseJoinToken } from '../domain/join-token';
import { BatonError } from '../ground/errors';
import { allPem } from '../pki/der-reader';
import { readTpmChallengeEvidence, readTpmEvidence } from './tpm-evidence';
import { atField, attestationNonce, isBase64, textOrEmpty } from './validate';

/**
 * POST /v1/attest, the evidence: one reader per attestation method turns the body (without
 * `method` and `csr`) into the typed evidence its attestor verifies (domain/attestation/). The
 * route's order of checks (docs/api.md "POST /v1/attest"):
 *
 *   1. attestorFor(attestors, body.method)    400 ERR_ATTESTATION_METHOD_UNKNOWN
 *   2. the CSR's form and key policy           400 ERR_CSR_INVALID / ERR_CSR_KEY_UNSUPPORTED
 *   3. readEvidence(attestor, payload)         the reader's refusals (below)
 *   4. evidence.verify(…), then the CSR's signature, then the issuance transaction (the domain)
 */

/** Reads one method's evidence from the POST /v1/attest body without `method` and `csr`. */
export type EvidenceReader<E> = (payload: Record<string, unknown>) => E;

/** `token`: anything but the exact grammar is the one refusal of every bad token (401 ERR_TOKEN_INVALID). */
export const readJoinTokenEvidence: EvidenceReader<JoinTokenEvidence> = (payload) => ({
  token: parseJoinToken(textOrEmpty(payload.token)),
});

const MAX_CHAIN_CHARS = 32 * 1024;
/** RSA-4096 gives 512 bytes (684 base64 characters); 1024 leaves room for RSA-8192 provisioning keys. */
const MAX_SIGNATURE_CHARS = 1024;

const bad = (field: string, why: string): BatonError => new BatonError('ERR_BAD_REQUEST', `${field}: ${why}`);

/**
 * `certificate_chain` (PEM, leaf first), `nonce` (from POST /v1/attest/challenge) and `signature`
 * (base64), in that order; each refusal is 400 ERR_BAD_REQUEST naming its field.
 */
export const readX509popEvidence: EvidenceReader<X509popEvidence> = (payload) => {
  const chain = readChain(payload.certificate_chain);
  const nonce = attestationNonce(payload.nonce);
  const signature = readSignature(payload.signature);
  return { chain, nonce, signature };
};

function readChain(v: unknown): X509popEvidence['chain'] {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_CHAIN_CHARS) {
    throw bad('certificate_chain', `a PEM string of at most ${MAX_CHAIN_CHARS} characters is required`);
  }
  const ders = allPem(v, 'CERTIFICATE');
  if (ders.length === 0) throw bad('certificate_chain', 'expected PEM certificates');
  if (ders.length > X509POP_MAX_CHAIN_CERTS) {
    throw bad('certificate_chain', `at most ${X509POP_MAX_CHAIN_CERTS} certificates`);
  }
  const [leaf, ...rest] = ders.map((der) => {
    try {
      return presented(new X509Certificate(der));
    } catch {
      throw bad('certificate_chain', 'a certificate cannot be parsed');
    }
  });
  return [leaf!, ...rest];
}

/** The strict reading of a certificate is deferred to the path check that needs it (its refusal keeps its place). */
function presented(cert: X509Certificate): PresentedCertificate {
  return { cert, profile: () => atField('certificate_chain', () => x509popProfile(cert)) };
}

function readSignature(v: unknown): Buffer {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_SIGNATURE_CHARS || !isBase64(v)) {
    throw bad('signature', 'a base64 signature is required');
  }
  return Buffer.from(v, 'base64');
}

/** One reader per method of domain/attestation/registry.ts: a method without one does not compile. */
export const EVIDENCE_READERS: { readonly [M in AttestationMethod]: EvidenceReader<EvidenceByMethod[M]> } = {
  join_token: readJoinTokenEvidence,
  tpm: readTpmEvidence,
  x509pop: readX509popEvidence,
};

/** A challenge that is a bare nonce: the request's other fields are not read. */
const noChallengeEvidence: EvidenceReader<undefined> = () => undefined;

/**
 * One reader per method for the body of POST /v1/attest/challenge (without `method`): what the
 * method's challenge needs (tpm: the EK and AK), each refusal 400 ERR_BAD_REQUEST naming its field.
 */
export const CHALLENGE_READERS: {
  readonly [M in AttestationMethod]: EvidenceReader<ChallengeEvidenceByMethod[M]>;
} = {
  join_token: noChallengeEvidence,
  tpm: readTpmChallengeEvidence,
  x509pop: noChallengeEvidence,
};

/**
 * Step 1 of POST /v1/attest, and of POST /v1/attest/challenge: the attestor `method` names, exactly
 * (case-sensitive, own names only), or 400 ERR_ATTESTATION_METHOD_UNKNOWN listing the methods offered.
 */
export function attestorFor(attestors: ReadonlyMap<string, Attestor>, method: unknown): KnownAttestor {
  const a = typeof method === 'string' ? attestors.get(method) : undefined;
  if (!a) {
    throw new BatonError(
      'ERR_ATTESTATION_METHOD_UNKNOWN',
      `unknown attestation method; supported: ${[...attestors.keys()].join(', ')}`,
    );
  }
  return withReader(a);
}

/** Step 3 of POST /v1/attest: the evidence for `attestor`, read and bound to it. */
export function readEvidence(attestor: KnownAttestor, payload: Record<string, unknown>): PresentedEvidence {
  return readFor(attestor, payload);
}

function readFor<M extends AttestationMethod>(
  attestor: Attestor<EvidenceByMethod[M]> & { readonly method: M },
  payload: Record<string, unknown>,
): PresentedEvidence {
  const read: EvidenceReader<EvidenceByMethod[M]> = EVIDENCE_READERS[attestor.method];
  return presentEvidence(attestor, read(payload));
}

/**
 * POST /v1/attest/challenge after its method: the request for `attestor`'s challenge, read and
 * bound to it; 400 ERR_BAD_REQUEST (`method: this method takes no challenge`) for a method without.
 */
export function readChallenge(attestor: KnownAttestor, payload: Record<string, unknown>): PresentedChallenge {
  return challengeFor(attestor, payload);
}

function challengeFor<M extends AttestationMethod>(
  attestor: Attestor<EvidenceByMethod[M], ChallengeEvidenceByMethod[M]> & { readonly method: M },
  payload: Record<string, unknown>,
): PresentedChallenge {
  const challenge = attestor.challenge;
  if (!challenge) throw new BatonError('ERR_BAD_REQUEST', 'method: this method takes no challenge');
  const read: EvidenceReader<ChallengeEvidenceByMethod[M]> = CHALLENGE_READERS[attestor.method];
  const evidence = read(payload);
  return { method: attestor.method, challenge: (deps) => challenge.call(attestor, deps, evidence) };
}

/**
 * Every attestor a server offers must have a reader here: called when the routes are built, so
 * that an attestor registered under a method this edge cannot read stops the server at start.
 */
export function checkEvidenceReaders(attestors: ReadonlyMap<string, Attestor>): void {
  for (const a of attestors.values()) withReader(a);
}

function withReader(a: Attestor): KnownAttestor {
  if (!Object.hasOwn(EVIDENCE_READERS, a.method) || !Object.hasOwn(CHALLENGE_READERS, a.method)) {
    throw new BatonError('ERR_INTERNAL', `attestation method ${a.method} has no evidence reader`);
  }
  return a as KnownAttestor;
}
