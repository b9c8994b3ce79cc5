import { join } from 'node:path';
import { writeFileAtomic } from '../../../common/src/atomic-file';
import { readOwnTextOrUndefined } from './safe-fs';

/**
 * DIR/state.json: what the agent keeps between runs besides the identities, so that a restart
 * neither downloads unchanged CRLs again nor misses the revocations made while it was down.
 * Written atomically; a missing or unreadable file is an empty state (both fields are caches of
 * something the agent can fetch again).
 */
export interface AgentStateData {
  /** The ETag of the CRLs in DIR/crl.pem. */
  crlEtag?: string;
  /** The id of the last revocation event handled. */
  revocationsLast?: number;
}

interface StateFile {
  crl_etag?: string;
  revocations_last?: number;
}

export class AgentState {
  readonly path: string;

  constructor(readonly dir: string) {
    this.path = join(dir, 'state.json');
  }

  read(): AgentStateData {
    try {
      // The agent's own file, read without following or waiting on anything planted (safe-fs).
      const text = readOwnTextOrUndefined(this.path, { maxBytes: 64 * 1024 });
      if (text === undefined) return {};
      const s = JSON.parse(text) as StateFile;
      return {
        crlEtag: typeof s.crl_etag === 'string' ? s.crl_etag : undefined,
        revocationsLast: Number.isSafeInteger(s.revocations_last) ? s.revocations_last : undefined,
      };
    } catch {
      return {};
    }
  }

  update(patch: AgentStateData): void {
    const next = { ...this.read(), ...patch };
    const file: StateFile = { crl_etag: next.crlEtag, revocations_last: next.revocationsLast };
    writeFileAtomic(this.path, `${JSON.stringify(file, null, 2)}\n`, 0o644);
  }
}
