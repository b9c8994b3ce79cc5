import { AgentError } from './agent-error';
import type { Issuance, NodeCaApi } from './ca-client';

/**
 * The node-mTLS and public calls the agent makes besides attest and renew (CONTRACT "HTTP API"):
 * the entries parented to this node, workload SVIDs, the CRLs and the revocation feed. The types
 * and the parsing of the answers live here; CaClient implements the calls. A malformed answer is
 * an AgentError ERR_BAD_RESPONSE, as bootstrap.ts reports a bad certificate.
 */

/** The node's own credential, presented as the TLS client certificate. */
export interface NodeCredential {
  /** Leaf + intermediate, PEM. */
  certificateChainPem: string;
  keyPem: string;
  /** The roots the server is verified against. */
  trustBundlePem: string;
}

/** One registration entry as `GET /v1/entries` lists it. */
export interface WorkloadEntry {
  name: string;
  spiffeId: string;
  parent: string;
  /** `unix:uid:N`, `unix:gid:N`. */
  selectors: string[];
  dnsNames: string[];
  ttlSeconds: number;
}

export interface WorkloadSvidParams extends NodeCredential {
  spiffeId: string;
  csrPem: string;
}

/** `POST /v1/workload-svids` answers an issuance without a node id. */
export type WorkloadIssuance = Omit<Issuance, 'nodeId'>;

/** `GET /v1/crl.pem`: the CRLs, or "unchanged" when the ETag sent still holds (304). */
export type CrlFetch = { changed: false } | { changed: true; pem: string; etag?: string };

export interface FetchCrlParams {
  trustBundlePem: string;
  /** The ETag of the CRLs already held, sent as If-None-Match (RFC 9110 §13.1.2). */
  etag?: string;
}

/** One event of `GET /v1/revocations`. */
export interface RevocationEvent {
  id: number;
  kind: 'node' | 'certificate';
  /** The revoked node (kind 'node'), or the node of the revoked certificate when it has one. */
  nodeId: string | null;
  serials: string[];
  reason: string;
  at: Date;
}

export interface RevocationPage {
  events: RevocationEvent[];
  /** The id to pass as `since` next time. */
  last: number;
}

export interface RevocationsParams extends NodeCredential {
  since: number;
  /** How long the server may hold the request when there is nothing new: 0 to 30 seconds. */
  waitSeconds: number;
  /** Aborts the request (the daemon stopping). */
  signal?: AbortSignal;
}

/** Everything the agent asks of the CA; CaClient is the HTTPS one. */
export interface AgentCaApi extends NodeCaApi {
  listEntries(p: NodeCredential): Promise<WorkloadEntry[]>;
  issueWorkloadSvid(p: WorkloadSvidParams): Promise<WorkloadIssuance>;
  fetchCrlPem(p: FetchCrlParams): Promise<CrlFetch>;
  revocations(p: RevocationsParams): Promise<RevocationPage>;
}

function json(body: Buffer): Record<string, unknown> {
  try {
    const j = JSON.parse(body.toString('utf8')) as unknown;
    if (j && typeof j === 'object' && !Array.isArray(j)) return j as Record<string, unknown>;
  } catch {
    // Reported below.
  }
  throw new AgentError('ERR_BAD_RESPONSE', 'the CA answered with something that is not JSON');
}

const bad = (what: string) => new AgentError('ERR_BAD_RESPONSE', `the CA's answer has a bad ${what}`);

const strings = (v: unknown, what: string): string[] => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw bad(what);
  return v as string[];
};

export function parseEntries(body: Buffer): WorkloadEntry[] {
  const list = json(body).entries;
  if (!Array.isArray(list)) throw bad('"entries"');
  return list.map((e: Record<string, unknown>) => {
    if (!e || typeof e.name !== 'string' || typeof e.spiffe_id !== 'string') throw bad('entry');
    return {
      name: e.name,
      spiffeId: e.spiffe_id,
      parent: typeof e.parent === 'string' ? e.parent : '',
      selectors: strings(e.selectors, 'entry selector list'),
      dnsNames: strings(e.dns_names, 'entry DNS name list'),
      ttlSeconds: typeof e.ttl_seconds === 'number' ? e.ttl_seconds : 0,
    };
  });
}

export function parseRevocationPage(body: Buffer): RevocationPage {
  const j = json(body);
  if (!Array.isArray(j.events) || !Number.isSafeInteger(j.last)) throw bad('revocation page');
  const events = j.events.map((e: Record<string, unknown>): RevocationEvent => {
    if (!e || !Number.isSafeInteger(e.id) || (e.kind !== 'node' && e.kind !== 'certificate'))
      throw bad('revocation event');
    return {
      id: e.id as number,
      kind: e.kind,
      nodeId: typeof e.node_id === 'string' ? e.node_id : null,
      serials: strings(e.serials, 'revocation serial list').map((s) => s.toLowerCase()),
      reason: typeof e.reason === 'string' ? e.reason : 'unspecified',
      at: new Date(typeof e.at === 'string' ? e.at : Number.NaN),
    };
  });
  return { events, last: j.last as number };
}

const CRL_BLOCK = /-----BEGIN X509 CRL-----\r?\n[A-Za-z0-9+/=\r\n]+-----END X509 CRL-----\r?\n?/g;

/**
 * Keeps crl.pem to what it claims to be: one or more PEM CRL blocks (RFC 7468 §6) and nothing
 * else, so a proxy's error page never lands where nginx reads its CRLs.
 */
export function parseCrlPem(text: string): string {
  const blocks = text.match(CRL_BLOCK) ?? [];
  if (blocks.length === 0 || text.replace(CRL_BLOCK, '').trim() !== '')
    throw new AgentError(
      'ERR_BAD_RESPONSE',
      'the CA answered /v1/crl.pem with something that is not PEM CRLs',
    );
  return blocks.map((b) => (b.endsWith('\n') ? b : `${b}\n`)).join('');
}
