import { Router } from 'express';
import type { AttestationChallenge, AttestorDeps } from '../../domain/attestation/attestor';
import { BatonError } from '../../ground/errors';
import { attestorFor, checkEvidenceReaders } from '../attestation-evidence';
import type { AppDeps } from '../ports';
import { jsonObject } from '../validate';

type Challenger = (deps: Pick<AttestorDeps, 'clock' | 'repos'>) => Promise<AttestationChallenge>;

/**
 * POST /v1/attest/challenge `{"method":"x509pop"}` → 201 `{"nonce","expires_at"}` (unauthenticated).
 * Only methods that prove possession of a key offer a challenge; the nonce is stored in the shared
 * database by the attestor, so any replica can take the attestation that follows.
 */
export function attestChallengeRoutes(deps: AppDeps): Router {
  // Built at start: an attestor whose evidence the edge cannot read stops the server here.
  checkEvidenceReaders(deps.attestors);
  const r = Router();
  r.post('/v1/attest/challenge', async (req, res) => {
    const challenge = readChallengeParams(req.body, deps.attestors);
    const c = await challenge({ clock: deps.clock, repos: deps.storage });
    res.status(201).json({ nonce: c.nonce, expires_at: c.expiresAt.toISOString() });
  });
  return r;
}

/** The body `{"method"}`: a method offered here (named exactly, as on POST /v1/attest) that takes a challenge. */
function readChallengeParams(parsedBody: unknown, attestors: AppDeps['attestors']): Challenger {
  const attestor = attestorFor(attestors, jsonObject(parsedBody).method);
  const challenge = attestor.challenge;
  if (!challenge) throw new BatonError('ERR_BAD_REQUEST', 'method: this method takes no challenge');
  return (d) => challenge.call(attestor, d);
}
