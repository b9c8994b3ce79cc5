import type { IncomingHttpHeaders } from 'node:http';
import { Agent, request } from 'node:https';
import { presentedChainPem, trustStorePem } from '../../../common/src/trust-store';
import {
  type AgentCaApi,
  type CrlFetch,
  type FetchCrlParams,
  type JwtBundle,
  type JwtSvid,
  type JwtSvidParams,
  type NodeCredential,
  parseJwtBundle,
  parseJwtSvid,
  parseCrlPem,
  parseEntries,
  parseRevocationPage,
  type RevocationPage,
  type RevocationsParams,
  type WorkloadEntry,
  type WorkloadIssuance,
  type WorkloadSvidParams,
} from './agent-api';
import { parseTpmChallenge, type TpmChallenge } from './tpm/tpm-wire';

/**
 * A small HTTPS JSON client for the node side of the CA API (CONTRACT "HTTP API"). The server is
 * verified normally against a trust bundle the caller passes per call (the bundle changes as the CA
 * rotates); only `fetchBundleUnverified` skips verification, for the pinned bootstrap, which checks
 * what it downloaded against the token's pin before it trusts it.
 */

/** An issuance response (`POST /v1/attest`, `POST /v1/renew`). */
export interface Issuance {
  spiffeId: string;
  serial: string;
  /** Leaf + intermediate, PEM. */
  certificateChainPem: string;
  /** The trust bundle (roots), PEM. */
  bundlePem: string;
  expiresAt: Date;
  refreshAt: Date;
  nodeId: string;
}

export interface AttestParams {
  token: string;
  csrPem: string;
  /** The roots to verify the server against (for the bootstrap: the pinned root only). */
  trustBundlePem: string;
}

/** Step 1 of the TPM exchange (docs/api.md "TPM attestation"): the TPM's public parts. */
export interface TpmChallengeParams {
  /** TPM2B_PUBLIC of the EK. */
  ekPublic: Buffer;
  /** The EK certificate (DER), when the TPM holds one. */
  ekCertificate?: Buffer;
  /** TPM2B_PUBLIC of the AK. */
  akPublic: Buffer;
  trustBundlePem: string;
}

/** Step 3: the activated secret, the quote over this CSR, and the CSR. */
export interface TpmAttestParams {
  nonce: string;
  secret: Buffer;
  /** TPMS_ATTEST and TPMT_SIGNATURE. */
  quote: Buffer;
  quoteSignature: Buffer;
  csrPem: string;
  trustBundlePem: string;
}

/** The TPM attestation calls (both unauthenticated, the server verified against the pinned roots). */
export interface TpmCaApi {
  tpmChallenge(p: TpmChallengeParams): Promise<TpmChallenge>;
  attestTpm(p: TpmAttestParams): Promise<Issuance>;
}

export interface RenewParams {
  csrPem: string;
  /** The current certificate chain and key, presented as the TLS client certificate. */
  certificateChainPem: string;
  keyPem: string;
  trustBundlePem: string;
}

/** What the rotator and the bootstrap need from the CA; CaClient is the HTTPS one, tests use fakes. */
export interface NodeCaApi {
  fetchBundleUnverified(): Promise<string>;
  /**
   * `GET /v1/ca-certificates` WITHOUT verifying the server, as fetchBundleUnverified: the signing
   * CA's certificates, untrusted; the bootstrap keeps only those a pinned root issued
   * (common/src/trust-store.ts). Optional so that test doubles without it still bootstrap.
   */
  fetchCaCertificatesUnverified?(): Promise<string>;
  attest(p: AttestParams): Promise<Issuance>;
  renew(p: RenewParams): Promise<Issuance>;
}

/**
 * A refusal of the server (`status` and its `ERR_…` code) or a transport failure: status 0 and
 * `ERR_SERVER_UNREACHABLE` (network, timeout) or `ERR_SERVER_UNTRUSTED` (TLS verification).
 */
export class CaClientError extends Error {
  override readonly name = 'CaClientError';
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
    /** From Retry-After (RFC 9110 §10.2.3) on 429/503 answers. */
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface CaClientOptions {
  /** https://HOST:PORT of the CA. */
  serverUrl: string;
  /** Per request, from connect to the end of the body. Default 30 s. */
  timeoutMs?: number;
  /** What "already expired" is judged against (JWT-SVIDs). Default the system clock. */
  clock?: { now(): Date };
}

/** No legitimate answer is near this: a chain is ~2 KB. It bounds what a hostile server can send. */
const MAX_BODY_BYTES = 1 << 20;
/**
 * crl.pem is the exception: about 70 bytes of PEM per revoked certificate, so 64 MiB holds the
 * CRLs of some 900,000 unexpired revocations (the CA is built for 100,000 in under a second).
 */
const MAX_CRL_BYTES = 64 << 20;

/** OpenSSL verification results that mean "not the server we trust", not "could not connect". */
const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export class CaClient implements AgentCaApi {
  readonly serverUrl: string;
  readonly #timeoutMs: number;
  readonly #clock: { now(): Date };
  /**
   * One keep-alive agent for every verified call. Node pools sockets per (host, ca, cert, key …),
   * so a renewal with a new client certificate or a new bundle never reuses a socket set up with
   * the old ones. Idle sockets are unref'd by the agent and do not keep the process alive.
   */
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 4 });

  constructor(opts: CaClientOptions) {
    this.serverUrl = opts.serverUrl.replace(/\/+$/, '');
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#clock = opts.clock ?? { now: () => new Date() };
  }

  /**
   * GET /v1/bundle over TLS WITHOUT verifying the server: the answer is untrusted until the caller
   * has checked it against a pin. Nothing secret is sent on this connection.
   */
  async fetchBundleUnverified(): Promise<string> {
    const res = await this.#send('GET', '/v1/bundle', { rejectUnauthorized: false, agent: false });
    return res.body.toString('utf8');
  }

  async fetchCaCertificatesUnverified(): Promise<string> {
    const res = await this.#send('GET', '/v1/ca-certificates', { rejectUnauthorized: false, agent: false });
    return res.body.toString('utf8');
  }

  /** GET /v1/bundle, verified against `trustBundlePem`. */
  async fetchBundle(trustBundlePem: string): Promise<string> {
    const res = await this.#send('GET', '/v1/bundle', { ca: trustBundlePem });
    return res.body.toString('utf8');
  }

  async attest(p: AttestParams): Promise<Issuance> {
    const res = await this.#send('POST', '/v1/attest', {
      ca: p.trustBundlePem,
      json: { method: 'join_token', token: p.token, csr: p.csrPem },
    });
    return parseIssuance(res.body);
  }

  /** POST /v1/attest/challenge, method tpm: the CA's credential for the TPM to activate. */
  async tpmChallenge(p: TpmChallengeParams): Promise<TpmChallenge> {
    const res = await this.#send('POST', '/v1/attest/challenge', {
      ca: p.trustBundlePem,
      json: {
        method: 'tpm',
        ek_public: p.ekPublic.toString('base64'),
        ...(p.ekCertificate ? { ek_certificate: p.ekCertificate.toString('base64') } : {}),
        ak_public: p.akPublic.toString('base64'),
      },
    });
    return parseTpmChallenge(parseJson(res.body));
  }

  /** POST /v1/attest, method tpm. */
  async attestTpm(p: TpmAttestParams): Promise<Issuance> {
    const res = await this.#send('POST', '/v1/attest', {
      ca: p.trustBundlePem,
      json: {
        method: 'tpm',
        nonce: p.nonce,
        secret: p.secret.toString('base64'),
        quote: p.quote.toString('base64'),
        quote_signature: p.quoteSignature.toString('base64'),
        csr: p.csrPem,
      },
    });
    return parseIssuance(res.body);
  }

  async renew(p: RenewParams): Promise<Issuance> {
    const res = await this.#send('POST', '/v1/renew', {
      ca: p.trustBundlePem,
      cert: p.certificateChainPem,
      key: p.keyPem,
      json: { csr: p.csrPem },
    });
    return parseIssuance(res.body);
  }

  /** GET /v1/entries over node mTLS: the entries parented to this node. */
  async listEntries(p: NodeCredential): Promise<WorkloadEntry[]> {
    const res = await this.#send('GET', '/v1/entries', mtls(p));
    return parseEntries(res.body);
  }

  /** POST /v1/workload-svids over node mTLS: an SVID of one of this node's entries. */
  async issueWorkloadSvid(p: WorkloadSvidParams): Promise<WorkloadIssuance> {
    const res = await this.#send('POST', '/v1/workload-svids', {
      ...mtls(p),
      json: { spiffe_id: p.spiffeId, csr: p.csrPem },
    });
    const { nodeId: _, ...issued } = parseIssuance(res.body);
    return issued;
  }

  /**
   * POST /v1/jwt-svids over node mTLS: a JWT-SVID of one of this node's entries (CONTRACT
   * "JWT-SVIDs"). Refusals are CaClientErrors as for workload SVIDs; an answer that is not a token
   * for the SPIFFE ID and audience asked, or has already expired, is an AgentError ERR_BAD_RESPONSE.
   */
  async mintJwtSvid(p: JwtSvidParams): Promise<JwtSvid> {
    const res = await this.#send('POST', '/v1/jwt-svids', {
      ...mtls(p),
      json: { spiffe_id: p.spiffeId, audience: p.audience, ...(p.ttl === undefined ? {} : { ttl: p.ttl }) },
    });
    return parseJwtSvid(res.body, p, this.#clock.now());
  }

  /** GET /v1/bundle.jwks (unauthenticated, the server verified): the JWT-SVID keys. */
  async fetchJwtBundle(p: { trustBundlePem: string }): Promise<JwtBundle> {
    const res = await this.#send('GET', '/v1/bundle.jwks', { ca: p.trustBundlePem });
    return parseJwtBundle(res.body);
  }

  /** GET /v1/crl.pem (unauthenticated, the server verified), conditional on `etag`. */
  async fetchCrlPem(p: FetchCrlParams): Promise<CrlFetch> {
    const res = await this.#send('GET', '/v1/crl.pem', {
      ca: p.trustBundlePem,
      headers: p.etag ? { 'if-none-match': p.etag } : undefined,
      notModified: true,
      maxBytes: MAX_CRL_BYTES,
    });
    if (res.status === 304) return { changed: false };
    const etag = res.headers.etag;
    return { changed: true, pem: parseCrlPem(res.body.toString('utf8')), etag: etag || undefined };
  }

  /**
   * GET /v1/revocations?since=N&wait=S over node mTLS: a long-poll, so the deadline is the wait
   * plus the usual timeout.
   */
  async revocations(p: RevocationsParams): Promise<RevocationPage> {
    const wait = Math.min(30, Math.max(0, Math.floor(p.waitSeconds)));
    // entries=1: the server also tells of this node's entries created or deleted.
    const res = await this.#send('GET', `/v1/revocations?since=${p.since}&wait=${wait}&entries=1`, {
      ...mtls(p),
      timeoutMs: this.#timeoutMs + wait * 1000,
      signal: p.signal,
    });
    return parseRevocationPage(res.body);
  }

  /** Closes the pooled connections. */
  close(): void {
    this.#agent.destroy();
  }

  #send(
    method: string,
    path: string,
    o: {
      ca?: string;
      cert?: string;
      key?: string;
      json?: unknown;
      rejectUnauthorized?: boolean;
      agent?: false;
      headers?: Record<string, string>;
      /** Resolve a 304 answer instead of rejecting it (conditional GETs). */
      notModified?: boolean;
      /** Largest answer accepted; default MAX_BODY_BYTES. */
      maxBytes?: number;
      timeoutMs?: number;
      signal?: AbortSignal;
    },
  ): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
    const body = o.json === undefined ? undefined : Buffer.from(JSON.stringify(o.json));
    const url = `${this.serverUrl}${path}`;
    const timeoutMs = o.timeoutMs ?? this.#timeoutMs;
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          headers: {
            accept: o.json === undefined ? '*/*' : 'application/json',
            ...(body ? { 'content-type': 'application/json', 'content-length': String(body.length) } : {}),
            ...o.headers,
          },
          ca: o.ca,
          cert: o.cert,
          key: o.key,
          rejectUnauthorized: o.rejectUnauthorized ?? true,
          minVersion: 'TLSv1.2',
          agent: o.agent ?? this.#agent,
          timeout: timeoutMs,
          signal: o.signal,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > (o.maxBytes ?? MAX_BODY_BYTES)) {
              req.destroy(new CaClientError('ERR_SERVER_UNREACHABLE', `${url}: answer too large`));
              return;
            }
            chunks.push(c);
          });
          res.on('error', (e) => reject(transportError(url, e)));
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const buf = Buffer.concat(chunks);
            if ((status >= 200 && status < 300) || (status === 304 && o.notModified))
              resolve({ status, headers: res.headers, body: buf });
            else reject(refusal(url, status, res.headers, buf));
          });
        },
      );
      // A whole-request deadline: the socket timeout alone would let a slow drip run forever.
      const deadline = setTimeout(
        () =>
          req.destroy(new CaClientError('ERR_SERVER_UNREACHABLE', `${url}: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      deadline.unref();
      req.on('close', () => clearTimeout(deadline));
      req.on('timeout', () =>
        req.destroy(new CaClientError('ERR_SERVER_UNREACHABLE', `${url}: no answer in ${timeoutMs} ms`)),
      );
      req.on('error', (e) => reject(transportError(url, e)));
      req.end(body);
    });
  }
}

/**
 * What a node trusts and presents for `trustBundlePem` and its chain (common/src/trust-store.ts),
 * worked out once per bundle and certificate, not on every request: both change only at a renewal
 * or a bundle refresh, and the work checks signatures.
 */
let lastTls: { key: string; ca: string; cert: string } | undefined;

/** The TLS client options of a node-mTLS call. */
function mtls(p: NodeCredential): { ca: string; cert: string; key: string } {
  const key = `${p.trustBundlePem}\0${p.certificateChainPem}`;
  if (lastTls?.key !== key)
    lastTls = {
      key,
      // The node's own chain may name a CA the bundle's roots certified twice (a root rotation):
      // OpenSSL needs the root's certificate of it among the trusted ones.
      ca: trustStorePem(p.trustBundlePem, p.certificateChainPem),
      // And a cross-certificate of a root dropped from the bundle is not sent any more.
      cert: presentedChainPem(p.certificateChainPem, p.trustBundlePem),
    };
  return { ca: lastTls.ca, cert: lastTls.cert, key: p.keyPem };
}

function transportError(url: string, e: unknown): CaClientError {
  if (e instanceof CaClientError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = String(err?.code ?? '');
  if (err?.name === 'AbortError')
    return new CaClientError('ERR_ABORTED', `${url}: request aborted`, 0, undefined, { cause: e });
  if (TLS_VERIFY_CODES.has(code)) {
    return new CaClientError(
      'ERR_SERVER_UNTRUSTED',
      `${url}: the server's certificate is not trusted (${code})`,
      0,
      undefined,
      { cause: e },
    );
  }
  return new CaClientError(
    'ERR_SERVER_UNREACHABLE',
    `cannot reach the CA at ${url}: ${err?.message ?? String(e)}`,
    0,
    undefined,
    { cause: e },
  );
}

function refusal(url: string, status: number, headers: IncomingHttpHeaders, body: Buffer): CaClientError {
  let code = status >= 500 ? 'ERR_CA_UNAVAILABLE' : 'ERR_BAD_REQUEST';
  let message = `${url}: HTTP ${status}`;
  try {
    const e = (JSON.parse(body.toString('utf8')) as { error?: { code?: unknown; message?: unknown } }).error;
    if (typeof e?.code === 'string' && /^ERR_[A-Z0-9_]+$/.test(e.code)) code = e.code;
    if (typeof e?.message === 'string') message = e.message.slice(0, 300);
  } catch {
    // Not our JSON error body (a proxy page, say): keep the status line.
  }
  return new CaClientError(code, message, status, retryAfterMs(headers['retry-after']));
}

/** RFC 9110 §10.2.3: delay-seconds or an HTTP-date. Only the seconds form is relative to our clock. */
function retryAfterMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new CaClientError('ERR_BAD_RESPONSE', 'the CA answered with something that is not JSON');
  }
}

function parseIssuance(body: Buffer): Issuance {
  const j = (parseJson(body) ?? {}) as Record<string, unknown>;
  const str = (k: string): string => {
    const v = j[k];
    if (typeof v !== 'string' || v === '')
      throw new CaClientError('ERR_BAD_RESPONSE', `the CA's answer lacks "${k}"`);
    return v;
  };
  const date = (k: string): Date => {
    const d = new Date(str(k));
    if (!Number.isFinite(d.getTime()))
      throw new CaClientError('ERR_BAD_RESPONSE', `the CA's answer has a bad "${k}"`);
    return d;
  };
  const spiffeId = str('spiffe_id');
  return {
    spiffeId,
    serial: str('serial'),
    certificateChainPem: str('certificate_chain'),
    bundlePem: str('bundle'),
    expiresAt: date('expires_at'),
    refreshAt: date('refresh_at'),
    nodeId: typeof j.node_id === 'string' ? j.node_id : nodeIdOf(spiffeId),
  };
}

/** `spiffe://<td>/node/<id>` → `<id>` (CONTRACT "Certificate profile"). */
export function nodeIdOf(spiffeId: string): string {
  const m = /^spiffe:\/\/[^/]+\/node\/([^/]+)$/.exec(spiffeId);
  return m?.[1] ?? '';
}

/** GET `<serverUrl>/v1/bundle` without verifying the server (see CaClient.fetchBundleUnverified). */
export function fetchBundleUnverified(serverUrl: string, opts: { timeoutMs?: number } = {}): Promise<string> {
  return new CaClient({ serverUrl, timeoutMs: opts.timeoutMs }).fetchBundleUnverified();
}
