import { X509Certificate } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { type HttpsOptions, type HttpsResult, https } from './https';
import { type IssuanceBody, type KeyAndCsr, keyAndCsr } from './node-client';

/**
 * The client side of the replica and fault suites: node credentials, calls that record every
 * certificate a client was handed, bounded concurrency, and failover across replicas.
 */

export const certsOf = (chain: string): string[] =>
  chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];

/** The leaf's serial as Baton records it (lowercase hex, whole bytes). */
export function serialOf(pem: string): string {
  const s = new X509Certificate(pem).serialNumber.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
}

export const errorCode = (r: HttpsResult): string | undefined => {
  try {
    return r.json<{ error?: { code?: string } }>().error?.code;
  } catch {
    return undefined;
  }
};

/** A node's credential as its agent would hold it. */
export interface NodeCred {
  nodeId: string;
  cert: string;
  key: string;
  serial: string;
}

/** Something a client received: checked against the certificates table afterwards. */
export interface Received {
  serial: string;
  /** The leaf, DER. */
  der: Buffer;
  kind: 'node' | 'workload';
  replica: string;
}

/**
 * A load generator's bookkeeping: requests per replica and per status, and every certificate a
 * client was handed.
 */
export class Ledger {
  readonly perReplica = new Map<string, number>();
  readonly perStatus = new Map<string, number>();
  readonly received: Received[] = [];
  requests = 0;

  async call(url: string, path: string, opts: HttpsOptions): Promise<HttpsResult> {
    this.requests++;
    this.perReplica.set(url, (this.perReplica.get(url) ?? 0) + 1);
    try {
      const r = await https(`${url}${path}`, opts);
      const key = `${r.status}${r.status >= 400 ? ` ${errorCode(r) ?? ''}` : ''}`.trim();
      this.perStatus.set(key, (this.perStatus.get(key) ?? 0) + 1);
      return r;
    } catch (e) {
      const key = `net ${(e as NodeJS.ErrnoException).code ?? 'error'}`;
      this.perStatus.set(key, (this.perStatus.get(key) ?? 0) + 1);
      throw e;
    }
  }

  /** Records the certificate of a 201 issuance response and returns the body. */
  record(r: HttpsResult, kind: Received['kind'], replica: string): IssuanceBody {
    const body = r.json<IssuanceBody>();
    const leaf = certsOf(body.certificate_chain)[0]!;
    const der = new X509Certificate(leaf).raw;
    if (serialOf(leaf) !== body.serial) throw new Error(`serial mismatch: ${body.serial}`);
    this.received.push({ serial: body.serial, der, kind, replica });
    return body;
  }

  summary(names: Map<string, string>): string {
    const replicas = [...this.perReplica].map(([u, n]) => `${names.get(u) ?? u}=${n}`).join(' ');
    const statuses = [...this.perStatus]
      .sort()
      .map(([s, n]) => `${s}: ${n}`)
      .join(', ');
    return `${this.requests} requests (${replicas}); ${statuses}`;
  }
}

/** Node-side calls of the API with a node credential. */
export const asNode = (
  cred: { cert: string; key: string },
  bundle: string,
  body?: unknown,
): HttpsOptions => ({
  method: body === undefined ? 'GET' : 'POST',
  body: body === undefined ? undefined : JSON.stringify(body),
  ca: bundle,
  cert: cred.cert,
  key: cred.key,
});

/** One attestation with a fresh key (or the given one, to retry); the credential when it succeeded. */
export async function attestOnce(
  ledger: Ledger,
  url: string,
  bundle: string,
  token: string,
  key?: KeyAndCsr,
): Promise<{ r: HttpsResult; cred?: NodeCred }> {
  const k = key ?? (await keyAndCsr());
  const r = await ledger.call(url, '/v1/attest', {
    method: 'POST',
    body: JSON.stringify({ method: 'join_token', token, csr: k.csrPem }),
    ca: bundle,
  });
  if (r.status !== 201) return { r };
  const body = ledger.record(r, 'node', url);
  return {
    r,
    cred: { nodeId: body.node_id!, cert: body.certificate_chain, key: k.keyPem, serial: body.serial },
  };
}

export async function renewOnce(
  ledger: Ledger,
  url: string,
  bundle: string,
  cred: NodeCred,
  key?: KeyAndCsr,
): Promise<{ r: HttpsResult; cred?: NodeCred }> {
  const k = key ?? (await keyAndCsr());
  const r = await ledger.call(url, '/v1/renew', asNode(cred, bundle, { csr: k.csrPem }));
  if (r.status !== 201) return { r };
  const body = ledger.record(r, 'node', url);
  return {
    r,
    cred: { nodeId: cred.nodeId, cert: body.certificate_chain, key: k.keyPem, serial: body.serial },
  };
}

export async function mintOnce(
  ledger: Ledger,
  url: string,
  bundle: string,
  cred: NodeCred,
  spiffeId: string,
  key?: KeyAndCsr,
): Promise<{ r: HttpsResult; serial?: string }> {
  const k = key ?? (await keyAndCsr());
  const r = await ledger.call(
    url,
    '/v1/workload-svids',
    asNode(cred, bundle, { spiffe_id: spiffeId, csr: k.csrPem }),
  );
  if (r.status !== 201) return { r };
  return { r, serial: ledger.record(r, 'workload', url).serial };
}

/** Runs `tasks` with at most `limit` at once. */
export async function pool<T>(limit: number, tasks: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++;
        out[i] = await tasks[i]!();
      }
    }),
  );
  return out;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface FailoverResult<T> {
  /** The last answer, when some replica answered (a 503 only if every try got one). */
  last?: T;
  /** Tries that ended in a network error or a 503 and moved to another replica. */
  failovers: number;
  /** A network error hit a request that may have been processed: its response was lost. */
  ambiguous: boolean;
}

/**
 * What a client with several CA addresses does: try one replica, and on a network error or a 503
 * try the next, a bounded number of times within a deadline.
 */
export async function withFailover<T extends { r: HttpsResult }>(
  urls: () => string[],
  start: number,
  attempt: (url: string) => Promise<T>,
  opts: { tries?: number; deadlineMs?: number } = {},
): Promise<FailoverResult<T>> {
  const tries = opts.tries ?? 6;
  const deadline = performance.now() + (opts.deadlineMs ?? 15_000);
  let failovers = 0;
  let ambiguous = false;
  let last: T | undefined;
  for (let k = 0; k < tries && performance.now() < deadline; k++) {
    const list = urls();
    if (list.length === 0) break;
    const url = list[(start + k) % list.length]!;
    try {
      last = await attempt(url);
      if (last.r.status !== 503) return { last, failovers, ambiguous };
    } catch (e) {
      // ECONNREFUSED never reached a server; any other network error may have been processed.
      if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED') ambiguous = true;
    }
    failovers++;
    await sleep(20 * (k + 1));
  }
  return { last, failovers, ambiguous };
}
