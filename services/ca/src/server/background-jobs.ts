import type { Logger } from 'pino';
import { sealAudit } from '../domain/audit';
import type { AuditRepository } from '../domain/ports';
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
 * changed, seal new audit rows into the hash chain, and follow CA rotation.
 */
export function startBackgroundJobs(p: {
  crls: CrlService;
  audit: AuditRepository;
  log: Logger;
  intervalMs: number;
  /** Reloads the keyring when the CA set changed (rotation on another replica or by the CLI). */
  reloadKeyring: () => Promise<void>;
}): BackgroundJobs {
  let running = false;
  const runOnce = async () => {
    if (running) return;
    running = true;
    try {
      await p.reloadKeyring();
      await p.crls.refreshStale();
      await sealAudit(p.audit);
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
