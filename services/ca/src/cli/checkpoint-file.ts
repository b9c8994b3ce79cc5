import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AdminClientConfig } from '../config';
import {
  type AuditCheckpoint,
  type ChainObservation,
  checkpointChainProblem,
  checkpointSignatureProblem,
  parseCheckpoint,
} from '../domain/audit-checkpoint';
import { BatonError } from '../ground/errors';

/**
 * `baton audit verify --checkpoint FILE` (issue 20): the file read and its signature checked
 * against the admin dir's bundle before the chain is walked, then the walk's view of its row.
 * Every failure is one line naming the checkpoint by its file and seal_seq.
 */

/** The trust domain of the admin credential (its URI SAN spiffe://<td>/admin/<name>) and its bundle. */
async function adminTrust(cfg: AdminClientConfig): Promise<{ bundlePem: string; trustDomain: string }> {
  try {
    const [cert, bundlePem] = await Promise.all([
      readFile(join(cfg.adminDir, 'cert.pem'), 'utf8'),
      readFile(join(cfg.adminDir, 'bundle.pem'), 'utf8'),
    ]);
    const uri = /URI:spiffe:\/\/([^/,\s]+)\//.exec(new X509Certificate(cert).subjectAltName ?? '');
    if (uri) return { bundlePem, trustDomain: uri[1]! };
  } catch {
    // Said below.
  }
  throw new BatonError(
    'ERR_NOT_AUTHENTICATED',
    `no admin credential in ${cfg.adminDir} to check a checkpoint with`,
  );
}

/** A checkpoint file, read and its signature checked before the chain is walked. */
export interface CheckpointCheck {
  checkpoint: AuditCheckpoint;
  /** How messages name it: the file and its seal_seq. */
  name: string;
}

/**
 * Reads `--checkpoint FILE` and checks its signature against the admin dir's bundle; returns the
 * failure line for stderr when it does not hold (exit 1), or the checkpoint.
 */
export async function readCheckpoint(
  file: string,
  cfg: AdminClientConfig,
): Promise<{ ok: CheckpointCheck } | { failure: string }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    return {
      failure: `audit checkpoint ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    };
  }
  let cp: AuditCheckpoint;
  try {
    cp = parseCheckpoint(text);
  } catch (e) {
    return { failure: `audit checkpoint ${file}: not a checkpoint: ${(e as Error).message}` };
  }
  const name = `audit checkpoint ${file} (seal_seq ${cp.seq})`;
  const problem = checkpointSignatureProblem(cp, await adminTrust(cfg));
  return problem ? { failure: `${name}: ${problem}` } : { ok: { checkpoint: cp, name } };
}

/** The failure line when the walked chain no longer holds the checkpoint, or null. */
export function checkpointFailure(c: CheckpointCheck, seen: ChainObservation): string | null {
  const problem = checkpointChainProblem(c.checkpoint, seen);
  return problem ? `${c.name} does not hold: ${problem}` : null;
}
