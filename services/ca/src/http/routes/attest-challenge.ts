import { Router } from 'express';
import { BatonError } from '../../ground/errors';
import type { AppDeps } from '../app';
import { body } from '../validate';

/**
 * POST /v1/attest/challenge `{"method":"x509pop"}` → 201 `{"nonce","expires_at"}` (unauthenticated).
 * Only methods that prove possession of a key offer a challenge; the nonce is stored in the shared
 * database by the attestor, so any replica can take the attestation that follows.
 */
export function attestChallengeRoutes(deps: AppDeps): Router {
  const r = Router();
  r.post('/v1/attest/challenge', async (req, res) => {
    const { method } = body(req);
    // Names match exactly, as on POST /v1/attest: 'X509POP' is not 'x509pop'.
    const attestor = typeof method === 'string' ? deps.attestors.get(method) : undefined;
    if (!attestor) {
      throw new BatonError(
        'ERR_ATTESTATION_METHOD_UNKNOWN',
        `unknown attestation method; supported: ${[...deps.attestors.keys()].join(', ')}`,
      );
    }
    if (!attestor.challenge)
      throw new BatonError('ERR_BAD_REQUEST', 'method: this method takes no challenge');
    const c = await attestor.challenge({ clock: deps.clock, repos: deps.storage });
    res.status(201).json({ nonce: c.nonce, expires_at: c.expiresAt.toISOString() });
  });
  return r;
}
