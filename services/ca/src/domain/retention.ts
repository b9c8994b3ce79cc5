import type { Clock } from './clock';
import type { Storage } from './ports';

/**
 * Certificate retention (issue 20; CONTRACT "Fleet scale"). A fleet of 10,000 nodes records about
 * five million certificates a day; a row is of no use once its certificate has been expired for a
 * while, so rows whose notAfter is more than `retainMs` in the past are deleted, revoked ones
 * included (they left the CRL at notAfter: RFC 5280 §3.3 lets an entry go once the certificate
 * has expired). What a deleted row takes with it (docs/operations.md "Retention"):
 * - OCSP answers `unknown` for its serial (RFC 6960 §2.2: the responder does not know the
 *   certificate), where it answered `revoked` or `good` before; a relying party rejects the
 *   expired certificate on its dates first.
 * - its key fingerprint: the unique index that refuses a key already certified (CONTRACT
 *   "Certificate profile") covers the rows kept, so a key may be certified again once every row
 *   that certified it is gone.
 * - `baton cert list --status expired` lists only what is kept. Revocation events (the feed of
 *   `GET /v1/revocations`) and audit rows keep the serials they name: they refer to certificates by
 *   value, never by foreign key.
 *
 * One replica at a time runs it (Storage.exclusive: a PostgreSQL advisory lock), in batches of
 * short statements with a turn of the event loop between them, so that it holds no lock for long
 * and requests on the replica running it are not held up (domain/ports.ts deleteExpired).
 */

/** Rows per statement: a batch is a few tens of milliseconds on PostgreSQL. */
export const RETENTION_BATCH = 2000;
/** Batches per run: 100,000 rows a run, and a run at least every minute, is far above 5M a day. */
export const RETENTION_MAX_BATCHES = 50;

export interface RetentionDeps {
  clock: Clock;
  storage: Pick<Storage, 'certificates' | 'exclusive'>;
}

export interface RetentionSettings {
  /** Rows whose notAfter is more than this far in the past go (--retain-expired). */
  retainMs: number;
  batchSize?: number;
  maxBatches?: number;
  /** After each batch: its row count (metrics count as they go, a failed run included). */
  onBatch?: (deleted: number) => void;
  /** Between two batches; default one turn of the event loop (tests hold it to see the lock). */
  between?: () => Promise<void>;
  /** Checked between batches: true ends the run early (the server is stopping). */
  shouldStop?: () => boolean;
}

export type RetentionRun =
  | { ran: false }
  | {
      ran: true;
      /** Rows with notAfter before this went. */
      cutoff: Date;
      deleted: number;
      batches: number;
      /** The last batch came back short: nothing past the window is left (but skipped rows). */
      complete: boolean;
    };

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * One retention run: deletes expired rows, batch after batch, until a batch comes back short or
 * `maxBatches` have run. `{ ran: false }` when another replica holds the lock (it is running).
 */
export async function deleteExpiredCertificates(
  deps: RetentionDeps,
  s: RetentionSettings,
): Promise<RetentionRun> {
  const batch = s.batchSize ?? RETENTION_BATCH;
  const maxBatches = s.maxBatches ?? RETENTION_MAX_BATCHES;
  const cutoff = new Date(deps.clock.now().getTime() - s.retainMs);
  const run = await deps.storage.exclusive('certificate-retention', async () => {
    let deleted = 0;
    let batches = 0;
    for (;;) {
      const n = await deps.storage.certificates.deleteExpired(cutoff, batch);
      deleted += n;
      batches += 1;
      s.onBatch?.(n);
      if (n < batch) return { deleted, batches, complete: true };
      if (batches >= maxBatches || s.shouldStop?.()) return { deleted, batches, complete: false };
      await (s.between ?? nextTurn)();
    }
  });
  return run ? { ran: true, cutoff, ...run.value } : { ran: false };
}
