import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, renameSync, unlinkSync } from 'node:fs';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import {
  type Metadata,
  Server,
  type ServerDuplexStream,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import { AgentError } from '../agent-error';
import type { JwtSvid } from '../agent-api';
import { CaClientError } from '../ca-client';
import { ensurePrivateDirectory } from '../safe-fs';
import { JwtValidationError, validateJwtSvid } from './jwt-validation';
import type { PeerCredentialReader, PeerCredentials } from './peer-credentials';
import {
  type JwtSvidMessage,
  type JwtSvidRequestMessage,
  toStruct,
  type ValidateJwtSvidRequest,
  WORKLOAD_METADATA_KEY,
  workloadApiService,
} from './proto';
import {
  entriesFor,
  jwtBundlesOutcome,
  NO_ENTRY,
  type Outcome,
  x509BundlesOutcome,
  x509SvidOutcome,
} from './responses';
import {
  badResourceNames,
  type DiscoveryRequest,
  type DiscoveryResponse,
  discoveryResponse,
  SECRET_TYPE_URL,
  sdsOutcome,
  sdsService,
} from './sds';
import { cachedCaller, type WorkloadCaller } from './selectors';
import type { WorkloadApiState, WorkloadApiView } from './workload-api-state';

/**
 * The SPIFFE Workload API on a Unix socket (CONTRACT "SPIFFE Workload API"; SPIFFE Workload API
 * and Workload Endpoint specifications), with @grpc/grpc-js.
 *
 * The caller is named by the kernel, never by what it sends: the socket is our own net.Server, and
 * every accepted connection has its peer credentials read (SO_PEERCRED, and SO_PEERPIDFD so that a
 * recycled pid is not taken for the caller: peer-credentials.ts) before a byte of it is read; a
 * connection whose credentials cannot be read is closed. It is then handed to grpc-js through its
 * connection injector. grpc-js tells a handler which connection a call came on only through
 * `getPeer()`, which reads the socket's `remoteAddress`; a Unix socket has none, so each accepted
 * socket gets a unique own `remoteAddress` that names its entry in `#connections`.
 *
 * Bounds, so that one local user cannot take the agent from everyone else: connections
 * (`maxConnections`, and `maxConnectionsPerUid`; more are closed at accept; a connection whose peer
 * has gone is closed within SWEEP_MS even when its HTTP/2 session stopped reading it), concurrent
 * streams per connection (HTTP/2
 * SETTINGS_MAX_CONCURRENT_STREAMS) and per uid across connections (`maxStreamsPerUid`, more get
 * ResourceExhausted), request size (64 KiB), and a slow reader: a stream whose previous message has
 * not drained is sent only the latest state once it does, never a queue of them.
 */

export interface WorkloadApiServerOptions {
  /** The socket's path (CONTRACT default DIR/api.sock). Its directory is made 0755 when missing. */
  socketPath: string;
  state: WorkloadApiState;
  /** Required: without peer credentials there is no Workload API (fail closed). */
  peers: PeerCredentialReader;
  clock: { now(): Date };
  /** A JWT-SVID of one of this node's entries (NodeAgent.fetchJwtSvid). */
  mintJwtSvid(spiffeId: string, audience: string[]): Promise<JwtSvid>;
  maxConnections?: number;
  /** Connections of one uid at once (default 128): one user cannot take every slot. */
  maxConnectionsPerUid?: number;
  maxStreamsPerUid?: number;
  maxStreamsPerConnection?: number;
  /** Something went wrong that is not a caller's refusal (for the agent's log). */
  onError?: (error: Error) => void;
}

interface Connection {
  peer: PeerCredentials;
  socket: Socket;
}

/** How often connections are checked for a peer that has gone (see #sweep). */
const SWEEP_MS = 2000;

const MAX_REQUEST_BYTES = 64 * 1024;
/** sun_path holds 108 bytes on Linux, the terminating NUL included (unix(7)). */
const MAX_SOCKET_PATH_BYTES = 107;

export class WorkloadApiServer {
  readonly socketPath: string;
  readonly #o: Required<Omit<WorkloadApiServerOptions, 'onError'>> &
    Pick<WorkloadApiServerOptions, 'onError'>;
  readonly #grpc: Server;
  readonly #net: NetServer;
  readonly #inject: (socket: Socket) => void;
  readonly #connections = new Map<string, Connection>();
  readonly #streamsByUid = new Map<number, number>();
  readonly #connectionsByUid = new Map<number, number>();
  #sweeper?: NodeJS.Timeout;
  /** How to end each open stream, for stop(). */
  readonly #open = new Set<(error?: GrpcError) => void>();
  #nextConnection = 0;
  #closing = false;
  /** The inode of the socket file we made: only that one is removed at stop. */
  #ino = -1;

  private constructor(o: WorkloadApiServerOptions) {
    this.socketPath = o.socketPath;
    this.#o = {
      maxConnections: 1024,
      maxConnectionsPerUid: 128,
      maxStreamsPerUid: 2048,
      maxStreamsPerConnection: 1024,
      ...o,
    };
    this.#grpc = new Server({
      'grpc.max_concurrent_streams': this.#o.maxStreamsPerConnection,
      'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
      // HTTP/2 keepalive pings find clients that vanished without closing (rare on a Unix socket).
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
    });
    this.#grpc.addService(workloadApiService(), {
      FetchX509SVID: (call: ServerWritableStream<unknown, unknown>) =>
        this.#stream(call, (view, caller) => x509SvidOutcome(view, caller, this.#o.clock.now())),
      FetchX509Bundles: (call: ServerWritableStream<unknown, unknown>) =>
        this.#stream(call, (view, caller) => x509BundlesOutcome(view, caller)),
      FetchJWTBundles: (call: ServerWritableStream<unknown, unknown>) =>
        this.#stream(call, (view, caller) => jwtBundlesOutcome(view, caller)),
      FetchJWTSVID: (call: ServerUnaryCall<JwtSvidRequestMessage, unknown>, done: sendUnaryData<unknown>) =>
        void this.#fetchJwtSvid(call, done),
      ValidateJWTSVID: (
        call: ServerUnaryCall<ValidateJwtSvidRequest, unknown>,
        done: sendUnaryData<unknown>,
      ) => void this.#validateJwtSvid(call, done),
    });
    // Envoy's SDS on the same socket, for the same callers (sds.ts).
    this.#grpc.addService(sdsService(), {
      StreamSecrets: (call: ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>) =>
        this.#streamSecrets(call),
      FetchSecrets: (
        call: ServerUnaryCall<DiscoveryRequest, DiscoveryResponse>,
        done: sendUnaryData<unknown>,
      ) => this.#fetchSecrets(call, done),
    });
    this.#inject = this.#grpc.createConnectionInjector(ServerCredentials.createInsecure()).injectConnection;
    this.#net = createServer((socket) => this.#accept(socket));
  }

  /**
   * Listens on `socketPath`: the directory is made 0755 (or checked: the agent's, writable by no one
   * else), the socket is bound under a temporary name in it, made 0666 and renamed over the path, so
   * a stale socket of a killed agent, or anything planted there, is replaced without being followed.
   */
  static async start(options: WorkloadApiServerOptions): Promise<WorkloadApiServer> {
    const server = new WorkloadApiServer(options);
    await server.#listen();
    return server;
  }

  /** `unix://PATH`, as SPIFFE_ENDPOINT_SOCKET takes it. */
  get address(): string {
    return `unix://${this.socketPath}`;
  }

  get connections(): number {
    return this.#connections.size;
  }

  get streams(): number {
    let n = 0;
    for (const c of this.#streamsByUid.values()) n += c;
    return n;
  }

  async #listen(): Promise<void> {
    const dir = dirname(this.socketPath);
    const temp = join(dir, `.wl${randomBytes(6).toString('hex')}`);
    for (const p of [this.socketPath, temp])
      if (Buffer.byteLength(p) > MAX_SOCKET_PATH_BYTES)
        throw new AgentError(
          'ERR_USAGE',
          `the socket path ${p} is longer than the ${MAX_SOCKET_PATH_BYTES} bytes a Unix socket address holds`,
        );
    ensurePrivateDirectory(dir, 0o755);
    await new Promise<void>((resolve, reject) => {
      this.#net.once('error', reject);
      this.#net.listen(temp, () => {
        this.#net.off('error', reject);
        resolve();
      });
    });
    try {
      // Every local user may connect; who gets what is decided by the peer credentials.
      chmodSync(temp, 0o666);
      this.#ino = lstatSync(temp).ino;
      renameSync(temp, this.socketPath);
    } catch (e) {
      this.#net.close();
      try {
        unlinkSync(temp);
      } catch {
        // Already gone.
      }
      throw new AgentError(
        'ERR_SOCKET',
        `cannot create the Workload API socket ${this.socketPath}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
    this.#net.on('error', (e) => this.#o.onError?.(e));
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS).unref();
  }

  /**
   * Closes the connections whose peer has gone. Node's HTTP/2 session answers a malformed or
   * oversized header block with GOAWAY and then stops reading the connection without closing it
   * (Node 20), so the client's close is never read and the connection would keep its slot for
   * ever; the kernel still knows (POLLRDHUP), and is asked every SWEEP_MS.
   */
  #sweep(): void {
    for (const c of this.#connections.values()) {
      try {
        if (this.#o.peers.hungUp(c.socket)) c.socket.destroy();
      } catch {
        c.socket.destroy();
      }
    }
  }

  #accept(socket: Socket): void {
    if (this.#closing || this.#connections.size >= this.#o.maxConnections) {
      socket.destroy();
      return;
    }
    let peer: PeerCredentials;
    try {
      peer = this.#o.peers.read(socket);
    } catch (e) {
      // No credentials, no service: the caller cannot be told apart from anyone else.
      socket.destroy();
      this.#o.onError?.(
        new AgentError('ERR_PEER_CREDENTIALS', `a connection was refused: ${(e as Error).message}`),
      );
      return;
    }
    const mine = this.#connectionsByUid.get(peer.uid) ?? 0;
    if (mine >= this.#o.maxConnectionsPerUid) {
      this.#o.peers.release(peer);
      socket.destroy();
      return;
    }
    this.#connectionsByUid.set(peer.uid, mine + 1);
    const id = `baton-wlapi-${++this.#nextConnection}`;
    Object.defineProperty(socket, 'remoteAddress', { value: id, configurable: true });
    this.#connections.set(id, { peer, socket });
    socket.once('close', () => {
      this.#connections.delete(id);
      const left = (this.#connectionsByUid.get(peer.uid) ?? 1) - 1;
      if (left > 0) this.#connectionsByUid.set(peer.uid, left);
      else this.#connectionsByUid.delete(peer.uid);
      this.#o.peers.release(peer);
    });
    socket.on('error', () => socket.destroy());
    // Node's HTTP/2 session ends the socket (FIN) when it closes and waits for the peer's FIN; a
    // session that died of a protocol error has stopped reading, so that FIN would never be seen
    // and the connection would hold its slot for ever. Once our side has ended, it is over.
    socket.once('finish', () => setTimeout(() => socket.destroy(), 1000).unref());
    this.#inject(socket);
  }

  /** The caller of `call` as the kernel named its connection, or undefined. */
  #callerOf(call: { getPeer(): string }): { caller: WorkloadCaller; uid: number } | undefined {
    const c = this.#connections.get(call.getPeer());
    if (!c) return undefined;
    const { peer } = c;
    return {
      uid: peer.uid,
      caller: cachedCaller(peer.uid, peer.gid, () => this.#o.peers.executable(peer)),
    };
  }

  /** The checks every call starts with: the metadata, then who is calling. */
  #admit(call: {
    metadata: Metadata;
    getPeer(): string;
  }): { caller: WorkloadCaller; uid: number } | GrpcError {
    const flag = call.metadata.get(WORKLOAD_METADATA_KEY);
    if (flag.length !== 1 || flag[0] !== 'true')
      return {
        code: status.INVALID_ARGUMENT,
        details: `security header missing from request (${WORKLOAD_METADATA_KEY}: true)`,
      };
    const who = this.#callerOf(call);
    if (!who) return { code: status.UNAVAILABLE, details: 'the connection is closing' };
    return who;
  }

  /**
   * A streaming call: the caller's state at once, then again whenever it changes, until the caller
   * goes, the server stops, or the caller is refused (the node revoked, its last entry deleted).
   */
  #stream<T>(
    call: ServerWritableStream<unknown, unknown>,
    outcome: (view: WorkloadApiView, caller: WorkloadCaller) => Outcome<T>,
  ): void {
    const admitted = this.#admit(call);
    if ('code' in admitted) {
      call.emit('error', admitted);
      return;
    }
    this.#follow(call, admitted, (caller) => outcome(this.#o.state.view, caller));
  }

  /**
   * Keeps `call` sent what `outcome` says, now and after each change, until the caller goes, the
   * server stops, or the caller is refused. `encode` turns an outcome's message into what is
   * written (SDS adds a version and nonce). Returns how to re-evaluate at once (SDS, when a request
   * changes the names asked for), or undefined when the stream was refused.
   */
  #follow<T>(
    call: (ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>) & {
      cancelled: boolean;
    },
    who: { caller: WorkloadCaller; uid: number },
    outcome: (caller: WorkloadCaller) => Outcome<T>,
    encode: (message: T) => unknown = (m) => m,
  ): { update(force?: boolean): void; end(error?: GrpcError): void } | undefined {
    const { caller, uid } = who;
    const streams = this.#streamsByUid.get(uid) ?? 0;
    if (streams >= this.#o.maxStreamsPerUid) {
      call.emit('error', {
        code: status.RESOURCE_EXHAUSTED,
        details: 'too many Workload API streams for this user',
      });
      return undefined;
    }
    this.#streamsByUid.set(uid, streams + 1);
    let lastKey: string | undefined;
    let draining = false;
    let ended = false;
    const end = (error?: GrpcError) => {
      if (ended) return;
      ended = true;
      this.#open.delete(end);
      unsubscribe();
      const left = (this.#streamsByUid.get(uid) ?? 1) - 1;
      if (left > 0) this.#streamsByUid.set(uid, left);
      else this.#streamsByUid.delete(uid);
      if (error && !call.cancelled && !call.destroyed) call.emit('error', error);
    };
    const update = (force = false) => {
      if (force) lastKey = undefined;
      if (ended || draining) return;
      if (call.cancelled || call.destroyed) {
        end();
        return;
      }
      let r: Outcome<T>;
      let message: unknown;
      try {
        r = outcome(caller);
        if (r.kind === 'send' && r.key !== lastKey) message = encode(r.message);
      } catch (e) {
        // A bug, not the caller's doing: say so once and end this stream, never leave it hanging.
        this.#o.onError?.(e as Error);
        end({ code: status.INTERNAL, details: 'the agent could not build this message' });
        return;
      }
      if (r.kind === 'deny')
        end({ code: r.invalid ? status.INVALID_ARGUMENT : status.PERMISSION_DENIED, details: r.details });
      else if (r.kind === 'send' && r.key !== lastKey) {
        lastKey = r.key;
        if (!call.write(message)) {
          draining = true;
          call.once('drain', () => {
            draining = false;
            update();
          });
        }
      }
      // 'wait' and 'not-ready': a later change brings the first message.
    };
    const unsubscribe = this.#o.state.subscribe(() => update());
    this.#open.add(end);
    call.on('cancelled', () => end());
    call.on('close', () => end());
    call.on('error', () => end());
    update();
    return { update, end };
  }

  /**
   * Envoy's SDS StreamSecrets (sds.ts): state of the world. Envoy sends no Workload API metadata;
   * the caller is the kernel's, as for every call. A request names the secrets; one that only ACKs
   * or NACKs the last response (its nonce, the same names) needs no answer.
   */
  #streamSecrets(call: ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>): void {
    const who = this.#callerOf(call);
    if (!who) {
      call.emit('error', { code: status.UNAVAILABLE, details: 'the connection is closing' });
      return;
    }
    let names: string[] | undefined;
    let lastNonce = '';
    let version = 0;
    const stream = this.#follow(
      call,
      who,
      (caller): Outcome<{ secrets: unknown[] }> =>
        names === undefined
          ? { kind: 'wait' }
          : sdsOutcome(this.#o.state.view, caller, names, this.#o.clock.now()),
      (m) => {
        const response = discoveryResponse(
          m.secrets as Parameters<typeof discoveryResponse>[0],
          String(++version),
        );
        lastNonce = response.nonce;
        return response;
      },
    );
    if (!stream) return;
    call.on('data', (request: DiscoveryRequest) => {
      if (request.type_url && request.type_url !== SECRET_TYPE_URL) {
        stream.end({ code: status.INVALID_ARGUMENT, details: `type_url must be ${SECRET_TYPE_URL}` });
        return;
      }
      const asked = request.resource_names ?? [];
      const bad = badResourceNames(asked);
      if (bad) {
        stream.end({ code: status.INVALID_ARGUMENT, details: bad });
        return;
      }
      // xDS: a request for a nonce that is not the latest is stale; the latest one is coming.
      if (request.response_nonce && request.response_nonce !== lastNonce) return;
      const next = [...new Set(asked)].sort();
      const changed = names === undefined || JSON.stringify(next) !== JSON.stringify(names);
      names = next;
      if (changed) stream.update(true);
    });
    call.on('end', () => stream.end());
  }

  /** SDS FetchSecrets: the secrets once, or Unavailable while the agent is still issuing them. */
  #fetchSecrets(call: ServerUnaryCall<DiscoveryRequest, DiscoveryResponse>, done: sendUnaryData<unknown>) {
    const who = this.#callerOf(call);
    if (!who) return done({ code: status.UNAVAILABLE, details: 'the connection is closing' });
    const names = call.request.resource_names ?? [];
    const bad = badResourceNames(names);
    if (bad) return done({ code: status.INVALID_ARGUMENT, details: bad });
    const r = sdsOutcome(this.#o.state.view, who.caller, names, this.#o.clock.now());
    if (r.kind === 'send')
      return done(null, discoveryResponse(r.message.secrets, String(this.#o.state.view.version)));
    if (r.kind === 'deny')
      return done({
        code: r.invalid ? status.INVALID_ARGUMENT : status.PERMISSION_DENIED,
        details: r.details,
      });
    done({
      code: status.UNAVAILABLE,
      details: 'the agent is still issuing these secrets: try again shortly',
    });
  }

  async #fetchJwtSvid(call: ServerUnaryCall<JwtSvidRequestMessage, unknown>, done: sendUnaryData<unknown>) {
    const admitted = this.#admit(call);
    if ('code' in admitted) return done(admitted);
    const view = this.#o.state.view;
    const audience = call.request.audience ?? [];
    if (audience.length === 0 || audience.some((a) => a === ''))
      return done({ code: status.INVALID_ARGUMENT, details: 'audience must be specified' });
    if (view.revoked) return done({ code: status.PERMISSION_DENIED, details: view.revoked });
    if (!view.ready)
      return done({ code: status.UNAVAILABLE, details: 'the agent is starting: try again shortly' });
    const entries = entriesFor(view, admitted.caller);
    if (entries.length === 0) return done({ code: status.PERMISSION_DENIED, details: NO_ENTRY });
    const wanted = call.request.spiffe_id ?? '';
    const ids = [...new Set(entries.map((e) => e.spiffeId))].filter((id) => wanted === '' || id === wanted);
    if (ids.length === 0)
      return done({
        code: status.PERMISSION_DENIED,
        details: `no identity issued: the caller is not entitled to ${wanted}`,
      });
    try {
      const minted = await Promise.all(ids.map((id) => this.#o.mintJwtSvid(id, audience)));
      const hints = new Map(entries.map((e) => [e.spiffeId, e.hint]));
      const svids: JwtSvidMessage[] = minted.map((m) => ({
        spiffe_id: m.spiffeId,
        svid: m.token,
        hint: hints.get(m.spiffeId) ?? '',
      }));
      done(null, { svids });
    } catch (e) {
      done(mintRefusal(e));
    }
  }

  async #validateJwtSvid(
    call: ServerUnaryCall<ValidateJwtSvidRequest, unknown>,
    done: sendUnaryData<unknown>,
  ) {
    const admitted = this.#admit(call);
    if ('code' in admitted) return done(admitted);
    const view = this.#o.state.view;
    const { audience = '', svid = '' } = call.request;
    if (audience === '')
      return done({ code: status.INVALID_ARGUMENT, details: 'audience must be specified' });
    if (svid === '') return done({ code: status.INVALID_ARGUMENT, details: 'svid must be specified' });
    if (view.revoked) return done({ code: status.PERMISSION_DENIED, details: view.revoked });
    if (!view.ready || !view.jwks)
      return done({
        code: status.UNAVAILABLE,
        details: 'the agent has no JWT bundle yet: try again shortly',
      });
    if (entriesFor(view, admitted.caller).length === 0)
      return done({ code: status.PERMISSION_DENIED, details: NO_ENTRY });
    try {
      const v = await validateJwtSvid(svid, audience, view.jwks, view.trustDomainId, this.#o.clock.now());
      done(null, { spiffe_id: v.spiffeId, claims: toStruct(v.claims as Record<string, unknown>) });
    } catch (e) {
      if (e instanceof JwtValidationError) return done({ code: status.INVALID_ARGUMENT, details: e.message });
      this.#o.onError?.(e as Error);
      done({ code: status.INTERNAL, details: 'the token could not be validated' });
    }
  }

  /**
   * Stops: no new connections, streams end (the clients see Unavailable and reconnect to the next
   * agent), the socket file is removed if it is still the one we made.
   */
  async stop(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    clearInterval(this.#sweeper);
    try {
      if (lstatSync(this.socketPath).ino === this.#ino) unlinkSync(this.socketPath);
    } catch {
      // Gone already.
    }
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
    for (const end of [...this.#open]) end({ code: status.UNAVAILABLE, details: 'the agent is stopping' });
    // Let the statuses go out before the connections are cut.
    await new Promise((resolve) => setImmediate(resolve));
    this.#grpc.forceShutdown();
    for (const c of this.#connections.values()) c.socket.destroy();
    await closed;
  }
}

interface GrpcError {
  code: status;
  details: string;
}

/** A refused mint as a gRPC status the caller can act on. */
function mintRefusal(e: unknown): GrpcError {
  const code = (e as { code?: string }).code;
  if (e instanceof AgentError && code === 'ERR_NOT_READY')
    return { code: status.UNAVAILABLE, details: e.message };
  if (code === 'ERR_NOT_AUTHORIZED' || code === 'ERR_NODE_REVOKED' || code === 'ERR_CERT_REVOKED')
    return { code: status.PERMISSION_DENIED, details: (e as Error).message };
  if (code === 'ERR_BAD_REQUEST') return { code: status.INVALID_ARGUMENT, details: (e as Error).message };
  if (e instanceof CaClientError && (e.status === 0 || e.status === 429 || e.status >= 500))
    return { code: status.UNAVAILABLE, details: 'the CA cannot be reached: try again shortly' };
  return { code: status.UNAVAILABLE, details: `the CA refused the JWT-SVID: ${(e as Error).message}` };
}
