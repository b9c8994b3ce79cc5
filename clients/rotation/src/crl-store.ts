import { join } from 'node:path';
import type { AgentCaApi } from './agent-api';
import type { AgentState } from './agent-state';
import { writeFileAtomic } from '../../../common/src/atomic-file';
import { readOwnTextOrUndefined } from './safe-fs';

/**
 * DIR/crl.pem: every current CRL of the CA (root and intermediates, RFC 5280 §5), as
 * `GET /v1/crl.pem` serves them, for servers that check revocation from a file (nginx
 * `ssl_crl`, HAProxy `crl-file`, Envoy `crl`). The answer comes over TLS verified against the
 * node's bundle; the CRL signatures are for the consumer to check, as it does.
 *
 * Conditional: the ETag of the CRLs held goes out as If-None-Match and a 304 changes nothing.
 * crl.pem is replaced before the ETag is remembered, so a crash in between costs one download,
 * never a stale file that the server calls current.
 */
export interface CrlResult {
  action: 'updated' | 'unchanged';
  /** How many CRLs crl.pem holds now (when updated). */
  crls?: number;
}

/** A 1,000,000-entry CRL is about 40 MB of PEM; a crl.pem past this bound is not one the agent wrote. */
const MAX_CRL_PEM_BYTES = 256 * 1024 * 1024;

export class CrlStore {
  readonly path: string;
  /** Refreshes run one at a time: the daemon's loop and its revocation feed both ask for them. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly dir: string,
    readonly state: AgentState,
  ) {
    this.path = join(dir, 'crl.pem');
  }

  refresh(client: Pick<AgentCaApi, 'fetchCrlPem'>, trustBundlePem: string): Promise<CrlResult> {
    const run = this.#queue.then(() => this.#refresh(client, trustBundlePem));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #refresh(client: Pick<AgentCaApi, 'fetchCrlPem'>, trustBundlePem: string): Promise<CrlResult> {
    const current = () => readOwnTextOrUndefined(this.path, { maxBytes: MAX_CRL_PEM_BYTES });
    const held = current() !== undefined ? this.state.read().crlEtag : undefined;
    const r = await client.fetchCrlPem({ trustBundlePem, etag: held });
    if (!r.changed) return { action: 'unchanged' };
    // A server that sends no ETag answers 200 every time: an identical body is no update.
    const same = current() === r.pem;
    if (!same) writeFileAtomic(this.path, r.pem, 0o644);
    if (r.etag !== held) this.state.update({ crlEtag: r.etag });
    return same
      ? { action: 'unchanged' }
      : { action: 'updated', crls: r.pem.match(/BEGIN X509 CRL/g)!.length };
  }
}
