import { createHash, createPublicKey, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { BatonError } from '../../ground/errors';
import {
  checkAttestationKey,
  checkEkCertificate,
  checkEndorsementKey,
  type EkCertificate,
  ekIdentifier,
  makeCredential,
  objectName,
  type PublicArea,
  publicKeyOf,
  type Quote,
  type QuoteSignature,
  qualifiedNameUnderEk,
  tpmNodeId,
  tpmQualifyingData,
  verifyQuoteSignature,
} from '../../pki/tpm';
import { assertNodeActive } from '../caller';
import type { NodeRecord, NodeRole, Repositories, TpmManufacturerCaRecord } from '../ports';
import { type Attestor, type AttestorDeps, withAuditDetails } from './attestor';

/**
 * tpm (issue 19): a node proves that it holds a TPM 2.0 whose endorsement key (EK) the admin
 * trusts, and binds its CSR to that TPM. No secret is handed out: the EK's private key never leaves
 * the TPM the manufacturer burned it into. The exchange (docs/api.md "TPM attestation"):
 *
 * 1. `POST /v1/attest/challenge {"method":"tpm","ek_public","ek_certificate"?,"ak_public"}`: the EK
 *    must be a TCG default EK and trusted: its identifier enrolled (`baton node enroll --tpm-ek-id`)
 *    or its EK certificate issued by a manufacturer CA (`baton tpm ca add`). The server then runs
 *    TPM2_MakeCredential in software for a fresh 32-byte secret, bound to the AK's Name, and stores
 *    the nonce (`attestation_nonces`, 5 minutes) with SHA-256 of the secret, the AK's key and its
 *    qualified name under the EK: any replica can take the answer.
 * 2. The node's TPM runs TPM2_ActivateCredential: it releases the secret only if it holds the EK's
 *    private key and has the AK with exactly that Name loaded (Part 1 §24), so the AK lives in the
 *    same TPM as the EK. The AK then quotes qualifying data made of the nonce and the CSR's hash.
 * 3. `POST /v1/attest {"method":"tpm","nonce","secret","quote","quote_signature","csr"}`: the
 *    secret matches (constant time), the quote is over this nonce and THIS CSR, its signer is the
 *    AK's qualified name under this EK, and the AK's signature verifies. A captured exchange gives
 *    nothing for another key; the nonce is spent by the issuance (IssuancePolicy.commit), so a
 *    replayed one is refused and a refused one spends nothing.
 *
 * The node id is `tpm-` + 20 hex digits of the EK identifier: the same TPM is the same node on every
 * attestation, and `baton node revoke` of it holds the TPM out (403 ERR_NODE_REVOKED, the node row's
 * state in the database) until `baton node enroll` admits the EK again (domain/tpm-enrollment.ts).
 * The role is the enrollment's, else the manufacturer CA's, never anything the node sends.
 */
export const TPM_METHOD = 'tpm';
export const TPM_NONCE_TTL_MS = 5 * 60_000;
/** The credential MakeCredential protects: 32 random bytes, a SHA-256 digest's size (the EK's nameAlg). */
export const TPM_SECRET_BYTES = 32;

/** What a challenge request brings, read by the edge (http/attestation-evidence.ts). */
export interface TpmChallengeEvidence {
  readonly ek: PublicArea;
  readonly ak: PublicArea;
  /** The EK certificate from the TPM's NV, when it has one. */
  readonly ekCertificate: EkCertificate | null;
}

/** What the answer brings: the challenge's nonce, the activated secret and the quote. */
export interface TpmEvidence {
  readonly nonce: string;
  readonly secret: Buffer;
  readonly quote: Quote;
  readonly signature: QuoteSignature;
}

const failed = (message: string): BatonError => new BatonError('ERR_ATTESTATION_FAILED', message);
const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

/** How the EK was admitted: the role of the node, and what to record about why. */
interface Admission {
  role: NodeRole;
  admittedBy: string;
}

export const tpmAttestor: Attestor<TpmEvidence, TpmChallengeEvidence> & {
  readonly method: typeof TPM_METHOD;
} = {
  method: TPM_METHOD,

  async challenge(deps, evidence) {
    const ek = publicKeyOf(evidence.ek, 'the endorsement key');
    const ekId = ekIdentifier(ek.spki);
    return withAuditDetails({ ek_id: ekId }, async () => {
      checkEndorsementKey(evidence.ek);
      checkAttestationKey(evidence.ak);
      const ak = publicKeyOf(evidence.ak, 'the attestation key');
      const now = deps.clock.now();
      await notBannedNode(deps.repos, ekId);
      const admission = await admit(
        deps.repos,
        ekId,
        { spki: ek.spki, type: evidence.ek.type },
        evidence,
        now,
      );
      const secret = randomBytes(TPM_SECRET_BYTES);
      const credential = makeCredential(evidence.ek, objectName(evidence.ak), secret);
      const nonce = randomBytes(32).toString('base64url');
      const expiresAt = new Date(now.getTime() + TPM_NONCE_TTL_MS);
      await deps.repos.tpm.insertChallenge({
        nonce,
        expiresAt,
        ekId,
        role: admission.role,
        admittedBy: admission.admittedBy,
        akSpki: ak.spki,
        akQualifiedName: qualifiedNameUnderEk(evidence.ek, evidence.ak),
        secretHash: sha256(secret),
      });
      return { nonce, expiresAt, credential };
    });
  },

  async verify(deps, evidence) {
    const challenge = await deps.repos.tpm.findChallenge(evidence.nonce, deps.clock.now());
    if (!challenge) throw failed('the nonce is unknown, expired or already used: request a new challenge');
    const auditDetails = { ek_id: challenge.ekId, admitted_by: challenge.admittedBy };
    return withAuditDetails(auditDetails, async () => {
      const node = await notBannedNode(deps.repos, challenge.ekId);
      const presented = sha256(evidence.secret);
      const stored = challenge.secretHash;
      if (stored.length !== presented.length || !timingSafeEqual(presented, stored)) {
        throw failed('the activated credential does not match the challenge');
      }
      checkQuote(deps, evidence, challenge.akSpki, challenge.akQualifiedName);
      return {
        method: TPM_METHOD,
        nodeId: tpmNodeId(challenge.ekId),
        role: challenge.role,
        certTtlMs: null,
        auditDetails,
        // The same spend as x509pop's: the nonce row, in the one statement that records the
        // certificate (storage/knex/attestation-statement.ts), so a refusal spends nothing.
        spend: { kind: 'nonce', nonce: evidence.nonce, method: TPM_METHOD },
        // Read for the ban check just above: the attestation does not read it again.
        node,
      };
    });
  },
};

/**
 * A revoked node's TPM is held out, at the challenge and at the answer (CONTRACT: ERR_NODE_REVOKED
 * until `node enroll`): the node row is the ban, shared by every replica and kept across restarts.
 * The issuance checks it again under the node's lock (domain/node-identity.ts).
 */
async function notBannedNode(repos: Repositories, ekId: string): Promise<NodeRecord | null> {
  const node = await repos.nodes.findById(tpmNodeId(ekId));
  if (node) assertNodeActive(node);
  return node;
}

/**
 * Whom the admin trusts: an enrolled EK identifier first (an explicit decision, with its role), else
 * an EK certificate issued by a manufacturer CA. Anything else is one refusal, "unknown TPM", with
 * a short reason that tells the node's operator what to do and nothing secret.
 */
async function admit(
  repos: Repositories,
  ekId: string,
  ek: { spki: Buffer; type: 'rsa' | 'ecc' },
  evidence: TpmChallengeEvidence,
  now: Date,
): Promise<Admission> {
  const enrolled = await repos.tpm.findEnrollment(ekId);
  if (enrolled) return { role: enrolled.role, admittedBy: 'enrollment' };
  if (!evidence.ekCertificate) {
    throw failed('unknown TPM: its EK is not enrolled and it has no EK certificate');
  }
  const anchors = (await repos.tpm.listManufacturerCas()).map(anchorOf);
  const anchor = checkEkCertificate(evidence.ekCertificate, ek, anchors, now);
  return { role: anchor.record.role, admittedBy: `manufacturer_ca:${anchor.record.fingerprint}` };
}

const anchorOf = (record: TpmManufacturerCaRecord) => ({
  record,
  cert: new X509Certificate(record.certificateDer),
  notBefore: record.notBefore,
  notAfter: record.notAfter,
});

/**
 * The quote (TPM 2.0 Library Part 3 §18.4): over the qualifying data of this nonce and this CSR
 * (AttestorDeps.csrDer), signed by the AK whose qualified name under the EK the challenge recorded.
 */
function checkQuote(
  deps: Pick<AttestorDeps, 'csrDer'>,
  evidence: TpmEvidence,
  akSpki: Buffer,
  akQn: Buffer,
): void {
  const { quote, signature, nonce } = evidence;
  if (!quote.extraData.equals(tpmQualifyingData(nonce, deps.csrDer))) {
    throw failed('the quote is not over this challenge and CSR');
  }
  if (!quote.qualifiedSigner.equals(akQn)) {
    throw failed('the quote was not made by the attestation key of the challenge');
  }
  const key = createPublicKey({ key: akSpki, format: 'der', type: 'spki' });
  const type = key.asymmetricKeyType === 'rsa' ? 'rsa' : 'ecc';
  if (!verifyQuoteSignature({ key, type }, quote, signature)) {
    throw failed('the quote signature does not verify with the attestation key');
  }
}
