import type { Logger } from 'pino';
import { sealAudit } from '../domain/audit';
import type { Clock } from '../domain/clock';
import type { AuditRepository, NonceRepository, Storage } from '../domain/ports';
import { deleteExpiredCertificates, type RetentionRun } from '../domain/retention';
import { F } from '../log-fields';
import type { CrlService } from './crl-service';

export interface BackgroundJobs {
  /** Runs every job once now, retention included (tests, and right after start). */
  runOnce(): Promise<void>;
  /** One retention run now; null when one is running on this replica already. */
  runRetention(): Promise<RetentionRun | null>;
  /** Stops the timers; resolves once a job that is running has ended (after its current batch). */
  stop(): Promise<void>;
}

/** CONTRACT "Fleet scale": the retention job runs at least once a minute. */
export const RETENTION_MAX_PERIOD_MS = 60_000;

/**
 * Work every replica does on a timer; each job is safe to run on several replicas at once because
 * the database serializes it (advisory locks): rebuild CRLs before nextUpdate even when nothing
 * changed, seal new audit rows into the hash chain, follow CA rotation, and delete expired
 * attestation nonces (a plain delete of rows no request can use any more).
 *
 * Certificate retention runs on a timer of its own (every interval, at most a minute), so that a
 * long run never holds back the CRLs or the sealer, and on one replica at a time (domain/retention.ts).
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
  /** Certificate retention (--retain-expired); absent: none. */
  retention?: {
    storage: Pick<Storage, 'certificates' | 'exclusive'>;
    retainMs: number;
    /** How often it runs (start-server.ts: the background interval, at most RETENTION_MAX_PERIOD_MS). */
    periodMs: number;
    onBatch(deleted: number): void;
    onRun(run: RetentionRun | 'failed'): void;
  };
}): BackgroundJobs {
  let running: Promise<void> | null = null;
  let retaining: Promise<RetentionRun | null> | null = null;
  let stopped = false;
  const runJobs = async () => {
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
    }
  };
  const tick = (): Promise<void> => {
    if (!running) running = runJobs().finally(() => (running = null));
    return running;
  };
  const retain = async (): Promise<RetentionRun | null> => {
    const r = p.retention;
    if (!r) return null;
    try {
      const run = await deleteExpiredCertificates(
        { clock: p.clock, storage: r.storage },
        { retainMs: r.retainMs, onBatch: r.onBatch, shouldStop: () => stopped },
      );
      r.onRun(run);
      if (run.ran && run.deleted > 0)
        p.log.info({ [F.rows]: run.deleted, [F.cutoff]: run.cutoff }, 'Expired certificates deleted');
      return run;
    } catch (err) {
      r.onRun('failed');
      p.log.warn({ [F.err]: err }, 'Certificate retention failed');
      return null;
    }
  };
  const runRetention = (): Promise<RetentionRun | null> => {
    if (retaining) return Promise.resolve(null);
    retaining = retain().finally(() => (retaining = null));
    return retaining;
  };
  const timer = setInterval(() => void tick(), p.intervalMs);
  timer.unref();
  const retentionTimer = p.retention
    ? setInterval(() => void runRetention(), p.retention.periodMs)
    : undefined;
  retentionTimer?.unref();
  return {
    runOnce: async () => {
      // A run already under way may have started before the caller's writes: one more after it.
      await running;
      await tick();
      await retaining;
      await runRetention();
    },
    runRetention,
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      clearInterval(retentionTimer);
      await Promise.allSettled([running, retaining]);
    },
  };
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
