import type { Logger } from 'pino';
import { sealAudit } from '../domain/audit';
import type { Clock } from '../domain/clock';
import type { AuditRepository, NonceRepository } from '../domain/ports';
import { F } from '../log-fields';
import type { CrlService } from './crl-service';

export interface BackgroundJobs {
  /** Runs every job once now (tests, and right after start). */
  runOnce(): Promise<void>;
  stop(): void;
}

/**
 * Work every replica does on a timer; each job is safe to run on several replicas at once because
 * the database serializes it (advisory locks): rebuild CRLs before nextUpdate even when nothing
 * changed, seal new audit rows into the hash chain, follow CA rotation, and delete expired
 * attestation nonces (a plain delete of rows no request can use any more).
 */
export function startBackgroundJobs(p: {
  crls: CrlService;
  audit: AuditRepository;
  nonces: NonceRepository;
  clock: Clock;
  log: Logger;
  intervalMs: number;
  /** Reloads the keyring when the CA set changed (rotation on another replica or by the CLI). */
  reloadKeyring: () => Promise<void>;
  /** Writes the JWT-SVID mint counts of the minutes that have ended (domain/jwt-mint-tally.ts). */
  flushMints?: () => Promise<unknown>;
}): BackgroundJobs {
  let running = false;
  const runOnce = async () => {
    if (running) return;
    running = true;
    // On its own: a failure of the jobs below must not hold the mint counts back, nor the reverse.
    await p
      .flushMints?.()
      .catch((err: unknown) => p.log.warn({ [F.err]: err }, 'Audit of JWT-SVID mints failed'));
    try {
      await p.reloadKeyring();
      await p.crls.refreshStale();
      await sealAudit(p.audit);
      await purgeNonces(p.nonces, p.clock.now());
    } catch (err) {
      p.log.warn({ [F.err]: err }, 'Background job failed');
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void runOnce(), p.intervalMs);
  timer.unref();
  return { runOnce, stop: () => clearInterval(timer) };
}

/** Up to 10 batches of 10,000 rows per run (every 10 s by default): it keeps up with 10,000 challenges a second. */
export const NONCE_PURGE_BATCH = 10_000;
export const NONCE_PURGE_BATCHES = 10;

/** Deletes expired nonces in batches until a batch comes back short, or the batches are spent. */
export async function purgeNonces(nonces: NonceRepository, now: Date): Promise<number> {
  let total = 0;
  for (let i = 0; i < NONCE_PURGE_BATCHES; i++) {
    const n = await nonces.purgeExpired(now, NONCE_PURGE_BATCH);
    total += n;
    if (n < NONCE_PURGE_BATCH) break;
  }
  return total;
}
