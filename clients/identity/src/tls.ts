import { constants, X509Certificate } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, RequestListener } from 'node:http';
import {
  Agent,
  type AgentOptions,
  createServer,
  request,
  type RequestOptions,
  type Server,
} from 'node:https';
import type { Duplex } from 'node:stream';
import {
  type ConnectionOptions,
  createSecureContext,
  type DetailedPeerCertificate,
  type PeerCertificate,
  type SecureContext,
  type SecureContextOptions,
  type SecureVersion,
  type TLSSocket,
  type TlsOptions,
  type Server as TlsServer,
} from 'node:tls';
import { presentedChainPem, trustStorePem } from '../../../common/src/trust-store';
import { type Authorizer, authorizePeer, type Peer, peerOf } from './authorize';
import { IdentityError, isIdentityError } from './errors';
import type { IdentitySnapshot } from './load';
import type { RevocationGuard, StalePolicy } from './revocation';

/**
 * TLS for services that hold an identity (an IdentitySource): mutual TLS where both sides verify
 * the other's chain against the bundle and then authorize its SPIFFE ID (SPIFFE X.509-SVID §5), and
 * where a rotation reaches new connections without touching open ones.
 */

/**
 * What the TLS helpers need of an identity: the verified snapshot in use now, read at each new
 * connection, and 'rotated' after a swap. Identity (the agent's files) and WorkloadApiIdentity (the
 * Workload API socket) are both one; 'error' reports a refused candidate while the current one stays.
 */
export interface IdentitySource {
  current(): IdentitySnapshot;
  on(event: 'rotated', listener: (current: IdentitySnapshot, previous: IdentitySnapshot) => void): unknown;
  on(event: 'error', listener: (error: IdentityError) => void): unknown;
  off(event: 'rotated', listener: (current: IdentitySnapshot, previous: IdentitySnapshot) => void): unknown;
  off(event: 'error', listener: (error: IdentityError) => void): unknown;
}

export interface TlsVersions {
  /**
   * Default 'TLSv1.3': every Baton client and server speaks it, and TLS 1.3 encrypts the client
   * certificate (RFC 8446 §4.4.2), which in TLS 1.2 crosses the network in clear.
   */
  minVersion?: SecureVersion;
  maxVersion?: SecureVersion;
}

const DEFAULT_MIN_VERSION: SecureVersion = 'TLSv1.3';

function contextOptions(id: IdentitySnapshot, v: TlsVersions): SecureContextOptions {
  return {
    // Only what leads to a root we trust now: a cross-certificate of an old root is not sent once
    // the bundle has dropped that root (common/src/trust-store.ts presentedChainPem).
    cert: presentedChainPem(id.certChainPem, id.bundlePem),
    key: id.keyPem,
    // The bundle's roots, and the CA certificates of our own chain that they issued: a peer's
    // chain may list another root's certificate of the CA first (root rotation), which OpenSSL
    // would follow without trying the next one (common/src/trust-store.ts).
    ca: trustStorePem(id.bundlePem, id.certChainPem),
    minVersion: v.minVersion ?? DEFAULT_MIN_VERSION,
    ...(v.maxVersion ? { maxVersion: v.maxVersion } : {}),
  };
}

/**
 * A server's secure context: every option it needs, since tls.Server#setSecureContext (each
 * rotation) resets whatever it is not given.
 *
 * No TLS session resumption. A resumed session carries the client certificate and OpenSSL's
 * verdict on it forward without checking them again: a client whose SVID expired after it saved a
 * ticket was served on it, and with only the leaf in a resumed session (no chain), a revoked
 * intermediate went unchecked (issue 14). SSL_OP_NO_TICKET turns stateless tickets off (RFC 5077;
 * in TLS 1.3, RFC 8446 §4.6.1, OpenSSL then issues stateful ones); stateful sessions, TLS 1.2
 * session IDs included, need a session store, which Node's server has only while someone listens
 * for 'newSession' or 'resumeSession'. bindServer refuses a resumed session should one happen all
 * the same. Every handshake is then a full one, and the library's agent already never offers a
 * session (maxCachedSessions 0).
 */
function serverContextOptions(id: IdentitySnapshot, v: TlsVersions): SecureContextOptions {
  return { ...contextOptions(id, v), secureOptions: constants.SSL_OP_NO_TICKET };
}

/** One SecureContext per snapshot and version range, built on first use (parsing keys per connection is waste). */
const contexts = new WeakMap<IdentitySnapshot, Map<string, SecureContext>>();

function secureContextFor(id: IdentitySnapshot, v: TlsVersions): SecureContext {
  const key = `${v.minVersion ?? DEFAULT_MIN_VERSION}/${v.maxVersion ?? ''}`;
  const byVersion = contexts.get(id) ?? new Map<string, SecureContext>();
  contexts.set(id, byVersion);
  const ctx = byVersion.get(key) ?? createSecureContext(contextOptions(id, v));
  byVersion.set(key, ctx);
  return ctx;
}

/** The verified, authorized peer of each connection, recorded at the handshake. */
const peers = new WeakMap<TLSSocket, Peer>();

/** RFC 5280 §6.1: a path is short; this bounds a walk up a chain that loops. */
const MAX_CHAIN = 8;

/**
 * The verified chain of a peer, leaf first, as far as node:crypto links it (issuerCertificate):
 * leaf, intermediate(s), and the root when the verifier found it.
 */
function chainOf(leaf: X509Certificate): X509Certificate[] {
  const chain = [leaf];
  for (let c = leaf.issuerCertificate; c && chain.length < MAX_CHAIN; c = c.issuerCertificate) {
    if (chain.some((x) => x.fingerprint256 === c!.fingerprint256)) break;
    chain.push(c);
  }
  return chain;
}

/** The same from a detailed PeerCertificate: Node passes getPeerCertificate(true) to checkServerIdentity. */
function chainOfPeerCertificate(cert: PeerCertificate): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  for (
    let c: DetailedPeerCertificate | undefined = cert as DetailedPeerCertificate;
    c?.raw && chain.length < MAX_CHAIN;
    c = c.issuerCertificate
  ) {
    if (seen.has(c.fingerprint256)) break;
    seen.add(c.fingerprint256);
    chain.push(new X509Certificate(c.raw));
  }
  return chain;
}

export interface RevocationEnforcement {
  /**
   * Refuse peers whose certificate (or intermediate) is revoked, and close open connections from
   * a peer as soon as the guard learns of its revocation.
   */
  revocation?: RevocationGuard;
  /**
   * When revocation status is unknown (CRLs past nextUpdate, no CRL for the peer's issuer, the
   * feed down past the guard's bound). Default: the guard's onStale, else 'fail-closed' for
   * servers and 'fail-open' for clients (docs/revocation.md).
   */
  onStale?: StalePolicy;
}

/**
 * The peer of a TLS connection: the one recorded when a bound server authorized it, else read
 * from its verified certificate. undefined when the peer is unverified or not an SVID.
 */
export function tlsPeer(socket: TLSSocket): Peer | undefined {
  const known = peers.get(socket);
  if (known) return known;
  const cert = socket.authorized ? socket.getPeerX509Certificate() : undefined;
  if (!cert) return undefined;
  try {
    return peerOf(cert);
  } catch {
    return undefined;
  }
}

/** The peer of an HTTP request on a server made by createMtlsServer (or bound by bindServer). */
export function requestPeer(req: IncomingMessage): Peer {
  const peer = tlsPeer(req.socket as TLSSocket);
  if (!peer) throw new IdentityError('ERR_PEER_UNVERIFIED', 'the request has no verified peer');
  return peer;
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/**
 * Options for tls.createServer / https.createServer: the current identity, the bundle as the only
 * trust anchors, a client certificate required and verified, and no session resumption, so that
 * every connection verifies its client's chain again (see serverContextOptions). TLS options
 * cannot authorize a peer by themselves (Node has no verify callback on servers) nor follow a
 * rotation: pass the server to bindServer, or use createMtlsServer, which does both.
 */
export function serverTlsOptions(identity: IdentitySource, versions: TlsVersions = {}): TlsOptions {
  return {
    ...serverContextOptions(identity.current(), versions),
    requestCert: true,
    rejectUnauthorized: true,
  };
}

export interface ServerAuthorization extends TlsVersions, RevocationEnforcement {
  authorize: Authorizer;
  /**
   * Called with the reason when a connection is refused, before it is destroyed: for logs and
   * metrics. With `revocation`, also when an open connection is closed because its peer was revoked
   * (ERR_PEER_REVOKED) or its status became unknown under fail-closed (ERR_REVOCATION_STALE).
   */
  onRefused?: (error: IdentityError, socket: TLSSocket) => void;
}

/**
 * Binds a tls.Server or https.Server to `identity`: every connection whose peer `authorize`
 * refuses is destroyed right after the handshake, before a byte of application data is read (an
 * unauthorized client gets no HTTP response), with `revocation` a revoked one too and open
 * connections closed when their peer is revoked later, and each rotation becomes the server's secure
 * context for new connections while open ones keep theirs (tls.Server#setSecureContext), without
 * session resumption. A resumed session is refused (ERR_PEER_UNVERIFIED): build the server with
 * serverTlsOptions, which resumes none. Returns a function that unbinds; closing the server
 * unbinds too.
 */
export function bindServer(
  server: TlsServer,
  identity: IdentitySource,
  opts: ServerAuthorization,
): () => void {
  const onSecureConnection = (socket: TLSSocket): void => {
    try {
      // A resumed session was not verified on this connection: its certificate may have expired
      // or left the bundle since, and it has no chain to check for revocation. Servers built with
      // serverTlsOptions never resume; one built otherwise gets a refusal rather than a pass.
      if (socket.isSessionReused()) {
        throw new IdentityError('ERR_PEER_UNVERIFIED', 'peer not verified: resumed TLS session');
      }
      const cert = socket.authorized ? socket.getPeerX509Certificate() : undefined;
      if (!cert) {
        throw new IdentityError(
          'ERR_PEER_UNVERIFIED',
          `peer not verified: ${socket.authorizationError ?? 'no certificate'}`,
        );
      }
      const peer = authorizePeer(cert, opts.authorize);
      if (opts.revocation) {
        const guard = opts.revocation;
        guard.admit(socket, chainOf(cert), guard.policyFor('server', opts.onStale), (err) =>
          opts.onRefused?.(err, socket),
        );
      }
      peers.set(socket, peer);
    } catch (e) {
      const err = isIdentityError(e) ? e : new IdentityError('ERR_PEER_UNVERIFIED', String(e));
      try {
        opts.onRefused?.(err, socket);
      } finally {
        // Whatever the hook does, the connection goes.
        socket.destroy();
      }
    }
  };
  const onRotated = (current: IdentitySnapshot): void =>
    server.setSecureContext(serverContextOptions(current, opts));
  // Prepended so it runs before https' own 'secureConnection' listener starts the HTTP parser.
  server.prependListener('secureConnection', onSecureConnection);
  identity.on('rotated', onRotated);
  const unbind = (): void => {
    server.off('secureConnection', onSecureConnection);
    identity.off('rotated', onRotated);
  };
  server.once('close', unbind);
  return unbind;
}

/** An https.Server for `identity` that authorizes every client and follows rotations (see bindServer). */
export function createMtlsServer(
  identity: IdentitySource,
  opts: ServerAuthorization,
  requestListener?: RequestListener,
): Server {
  const server = createServer(serverTlsOptions(identity, opts), requestListener);
  bindServer(server, identity, opts);
  return server;
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

export interface ClientAuthorization extends TlsVersions, RevocationEnforcement {
  authorize: Authorizer;
}

/**
 * SPIFFE X.509-SVID §5: the server is authorized by the SPIFFE ID of its verified SVID, not by
 * the host name it was reached at (RFC 9110 §4.3.4 host name checks do not apply to SVIDs, whose
 * one name is a URI). Node calls this only once the chain has verified against `ca`.
 */
function spiffeServerCheck(
  opts: ClientAuthorization,
): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    try {
      authorizePeer(new X509Certificate(cert.raw), opts.authorize);
      const guard = opts.revocation;
      return guard?.refusal(chainOfPeerCertificate(cert), guard.policyFor('client', opts.onStale));
    } catch (e) {
      return isIdentityError(e) ? e : new IdentityError('ERR_PEER_UNVERIFIED', String(e));
    }
  };
}

/**
 * Options for tls.connect or https.request with the current identity. With https.request, pass
 * `agent: false` or an mtlsAgent: Node's global agent pools sockets by host and TLS material,
 * not by checkServerIdentity, so a pooled socket could skip this authorizer. Pass no `session`
 * either: Node skips checkServerIdentity (this authorizer and the revocation check) on a resumed
 * session. Baton's servers resume none, but other servers may.
 */
export function clientTlsOptions(identity: IdentitySource, opts: ClientAuthorization): ConnectionOptions {
  return {
    ...contextOptions(identity.current(), opts),
    rejectUnauthorized: true,
    checkServerIdentity: spiffeServerCheck(opts),
  };
}

export interface MtlsAgentOptions extends ClientAuthorization {
  /** https.Agent pool settings; keepAlive is always on. */
  maxSockets?: number;
  maxFreeSockets?: number;
  keepAliveMsecs?: number;
  /** Idle socket timeout (ms). */
  timeout?: number;
}

/**
 * A keep-alive https.Agent whose every new connection presents the identity current at that
 * moment: createConnection passes a fresh secureContext, so a rotation reaches new connections and
 * leaves pooled ones alone. With `revocation`, a revoked server is refused at the handshake and
 * pooled connections to it are closed when the guard learns of it. TLS session caching is off: Node skips checkServerIdentity on a resumed
 * session, and authorization must run on every handshake.
 */
export class MtlsAgent extends Agent {
  readonly identity: IdentitySource;
  readonly #versions: TlsVersions;
  readonly #revocation: RevocationGuard | undefined;
  readonly #onStale: StalePolicy | undefined;

  constructor(identity: IdentitySource, opts: MtlsAgentOptions) {
    const agentOptions: AgentOptions = {
      keepAlive: true,
      maxCachedSessions: 0,
      rejectUnauthorized: true,
      checkServerIdentity: spiffeServerCheck(opts),
      ...(opts.maxSockets !== undefined ? { maxSockets: opts.maxSockets } : {}),
      ...(opts.maxFreeSockets !== undefined ? { maxFreeSockets: opts.maxFreeSockets } : {}),
      ...(opts.keepAliveMsecs !== undefined ? { keepAliveMsecs: opts.keepAliveMsecs } : {}),
      ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
    };
    super(agentOptions);
    this.identity = identity;
    this.#versions = { minVersion: opts.minVersion, maxVersion: opts.maxVersion };
    this.#revocation = opts.revocation;
    this.#onStale = opts.revocation?.policyFor('client', opts.onStale);
  }

  override createConnection(
    options: RequestOptions,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    // tls.connect uses secureContext as is and ignores cert/key/ca/minVersion beside it.
    const secureContext = secureContextFor(this.identity.current(), this.#versions);
    const socket = super.createConnection({ ...options, secureContext } as RequestOptions, callback);
    const guard = this.#revocation;
    if (guard && socket) {
      // checkServerIdentity has refused a revoked server already; from here the guard watches the
      // pooled connection and closes it when the server's certificate is revoked.
      const tls = socket as TLSSocket;
      tls.once('secureConnect', () => {
        const cert = tls.getPeerX509Certificate();
        if (!cert) return;
        try {
          guard.admit(tls, chainOf(cert), this.#onStale!);
        } catch (e) {
          tls.destroy(e as Error);
        }
      });
    }
    return socket;
  }
}

/** A keep-alive agent for `identity` that authorizes servers with `authorize` (see MtlsAgent). */
export function mtlsAgent(identity: IdentitySource, opts: MtlsAgentOptions): MtlsAgent {
  return new MtlsAgent(identity, opts);
}

export interface MtlsResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** With an agent, `revocation` and `onStale` are the agent's; these apply to a one-off connection. */
interface MtlsRequestCommon extends TlsVersions, RevocationEnforcement {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Deadline for the whole exchange, connect to last byte; default 30 s. */
  timeoutMs?: number;
}

/** Either an authorizer (one connection for this request) or an mtlsAgent that carries one. */
export type MtlsRequestOptions = MtlsRequestCommon &
  ({ authorize: Authorizer; agent?: undefined } | { agent: MtlsAgent; authorize?: undefined });

/** One HTTPS request over mutual TLS; resolves with the whole response, whatever its status. */
export function mtlsRequest(
  identity: IdentitySource,
  url: string | URL,
  opts: MtlsRequestOptions,
): Promise<MtlsResponse> {
  if (opts.agent && opts.agent.identity !== identity) {
    throw new TypeError('mtlsRequest: the agent was made for another identity');
  }
  const tlsOptions: RequestOptions = opts.agent
    ? { agent: opts.agent }
    : { ...clientTlsOptions(identity, { ...opts, authorize: opts.authorize }), agent: false };
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { ...tlsOptions, method: opts.method ?? 'GET', headers: opts.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', fail);
        res.on('end', () => {
          clearTimeout(deadline);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        });
      },
    );
    const deadline = setTimeout(
      () => req.destroy(new Error('mtlsRequest: no complete response in time')),
      opts.timeoutMs ?? 30_000,
    );
    function fail(err: Error): void {
      clearTimeout(deadline);
      reject(err);
    }
    req.on('error', fail);
    req.end(opts.body);
  });
}
