import { Router } from 'express';
import type { PresentedChallenge } from '../../domain/attestation/attestor';
import { recordRefusal } from '../../domain/audit';
import { attestorFor, checkEvidenceReaders, readChallenge } from '../attestation-evidence';
import { auditContext } from '../audit-context';
import type { AppDeps } from '../ports';
import { jsonObject } from '../validate';

/**
 * POST /v1/attest/challenge (unauthenticated) → 201 `{"nonce","expires_at"}`, and for tpm the
 * credential its TPM must activate (`credential_blob`, `encrypted_secret`). Only methods that prove
 * possession of a key offer a challenge; the nonce is stored in the shared database by the
 * attestor, so any replica can take the attestation that follows.
 *
 * x509pop's request is `{"method"}` alone; tpm's brings the EK and AK the credential is made for,
 * read by the method's challenge reader (http/attestation-evidence.ts). A challenge the attestor
 * refuses (an unknown TPM, a revoked node's TPM) is a security event: a `node.attestation_refused`
 * row with `step: challenge` and, for tpm, the EK identifier, so an admin sees which TPM knocked.
 */
export function attestChallengeRoutes(deps: AppDeps): Router {
  // Built at start: an attestor whose evidence the edge cannot read stops the server here.
  checkEvidenceReaders(deps.attestors);
  const r = Router();
  r.post('/v1/attest/challenge', async (req, res) => {
    const request = readChallengeParams(req.body, deps.attestors);
    let c: Awaited<ReturnType<PresentedChallenge['challenge']>>;
    try {
      c = await request.challenge({ clock: deps.clock, repos: deps.storage });
    } catch (e) {
      await recordRefusal(
        deps,
        auditContext(req, 'anonymous'),
        'node.attestation_refused',
        { method: request.method, step: 'challenge' },
        e,
      );
      throw e;
    }
    res.status(201).json({
      nonce: c.nonce,
      expires_at: c.expiresAt.toISOString(),
      ...(c.credential
        ? {
            credential_blob: c.credential.idObject.toString('base64'),
            encrypted_secret: c.credential.encryptedSecret.toString('base64'),
          }
        : {}),
    });
  });
  return r;
}

/** The body `{"method", …}`: a method offered here (named exactly, as on POST /v1/attest) that takes a challenge, and what it brings. */
function readChallengeParams(parsedBody: unknown, attestors: AppDeps['attestors']): PresentedChallenge {
  const b = jsonObject(parsedBody);
  const attestor = attestorFor(attestors, b.method);
  const { method: _method, ...payload } = b;
  return readChallenge(attestor, payload);
}
