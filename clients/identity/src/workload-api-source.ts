import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import {
  type Client,
  type ClientReadableStream,
  credentials,
  Metadata,
  makeGenericClientConstructor,
  type ServiceClientConstructor,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import { toPem } from '../../../common/src/der';
import { DerError, readConcatenated } from '../../../common/src/der-reader';
import { WORKLOAD_PROTO_FILE, workloadApiService } from '../../rotation/src/workload-api/proto';
import { IdentityError, isIdentityError } from './errors';
import type { IdentityEvents, Timers } from './identity';
import { type IdentityFiles, type IdentitySnapshot, sameFiles, verifyIdentity } from './load';
import type { IdentitySource } from './tls';

/**
 * A service's own X.509-SVID from the SPIFFE Workload API (SPIFFE Workload API, X.509-SVID
 * profile): one FetchX509SVID stream on the agent's Unix socket, whose every message is the whole
 * current state (STYLE 20). Each message's SVID is verified exactly as the agent's files are
 * (verifyIdentity) before it replaces the current one, so tls.ts swaps contexts the same way for
 * both sources.
 */

export interface WorkloadApiOptions {
  /**
   * The agent's socket: 'unix:///path', 'unix:/path' or a plain path. Default the
   * SPIFFE_ENDPOINT_SOCKET environment variable (SPIFFE Workload Endpoint, "Locating the Endpoint").
   */
  socket?: string;
  /** Use the SVID of this SPIFFE ID when the caller is entitled to several. */
  spiffeId?: string;
  /** Use the SVID with this hint (the X509SVID `hint` field). With spiffeId, both must match. */
  hint?: string;
  /** Judges certificate validity; default the system clock. */
  clock?: { now(): Date };
  /** How long connect() waits for a first verified SVID (default 5000 ms). */
  startTimeoutMs?: number;
  /** First reconnect delay after the stream ends or fails (default 200 ms); doubles up to maxRetryMs. */
  retryMs?: number;
  /** Longest reconnect delay (default 5000 ms); also the delay after PermissionDenied. */
  maxRetryMs?: number;
  /**
   * Failed connection attempts in a row before 'error' (ERR_WORKLOAD_API_UNAVAILABLE) is emitted
   * (default 3): an agent restart is no error.
   */
  errorAfterAttempts?: number;
  /** Reconnect timers (default unref'd). The start deadline uses them too when given. */
  timers?: Timers;
}

type Resolved = Required<Omit<WorkloadApiOptions, 'socket' | 'spiffeId' | 'hint'>> &
  Pick<WorkloadApiOptions, 'spiffeId' | 'hint'>;

const unrefTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** A service awaiting its first identity has nothing else keeping it alive yet. */
const refTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

const DEFAULTS: Omit<Resolved, 'spiffeId' | 'hint'> = {
  clock: { now: () => new Date() },
  startTimeoutMs: 5000,
  retryMs: 200,
  maxRetryMs: 5000,
  errorAfterAttempts: 3,
  timers: unrefTimers,
};

export interface WorkloadApiIdentityEvents extends IdentityEvents {
  /** The CRLs of the stream changed (DER, as the agent sent them). */
  crls: [crls: readonly Buffer[]];
}

/** The decoded X509SVID message (keepCase, defaults: every field present). */
interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

interface X509SvidResponse {
  svids: X509SvidMessage[];
  crl: Buffer[];
}

/** The one method used of the client that loadPackageDefinition builds from workload.proto. */
type WorkloadApiClient = Client & {
  FetchX509SVID(request: object, metadata: Metadata): ClientReadableStream<X509SvidResponse>;
};

/** SPIFFE Workload Endpoint: the header that tells a Workload API call from a stray request (SSRF). */
const SECURITY_HEADER = 'workload.spiffe.io';
let clientConstructor: ServiceClientConstructor | undefined;

/** The agent's own service definition (clients/rotation workload-api/proto.ts), as a client. */
function workloadApiClient(): ServiceClientConstructor {
  if (clientConstructor) return clientConstructor;
  if (!existsSync(WORKLOAD_PROTO_FILE))
    throw new IdentityError('ERR_WORKLOAD_API_UNAVAILABLE', `${WORKLOAD_PROTO_FILE} not found`);
  clientConstructor = makeGenericClientConstructor(workloadApiService(), 'SpiffeWorkloadAPI');
  return clientConstructor;
}

/** A gRPC target for a Unix socket address; the Workload API is local only here (no tcp://). */
export function workloadApiTarget(address: string | undefined): string {
  if (!address) {
    throw new IdentityError(
      'ERR_WORKLOAD_API_ADDRESS',
      'no Workload API socket: pass `socket` or set SPIFFE_ENDPOINT_SOCKET',
    );
  }
  let path = address;
  if (address.startsWith('unix:')) {
    const rest = address.slice('unix:'.length);
    // unix:///p has an empty authority; unix:/p none. Any other authority names no local file.
    path = rest.startsWith('//') ? (rest.startsWith('///') ? rest.slice(2) : '') : rest;
    if (!isAbsolute(path)) {
      throw new IdentityError(
        'ERR_WORKLOAD_API_ADDRESS',
        `${address}: a unix: address needs an absolute path`,
      );
    }
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(address)) {
    throw new IdentityError('ERR_WORKLOAD_API_ADDRESS', `${address}: only unix: sockets are supported`);
  }
  return `unix://${resolve(path)}`;
}

/** Concatenated DER certificates (X509SVID.x509_svid, .bundle) as PEM, in their order. */
function certificatesPem(der: Buffer, field: string): string {
  let pem = '';
  try {
    for (const el of readConcatenated(der, field)) {
      if (el.tag !== 0x30) throw new DerError(`malformed ${field}: not a certificate`);
      pem += toPem('CERTIFICATE', el.raw);
    }
  } catch (e) {
    if (e instanceof DerError) throw new IdentityError('ERR_CHAIN_INVALID', e.message);
    throw e;
  }
  return pem;
}

/** The SVID of the selection: by spiffeId and/or hint, else the first (the Workload API's default). */
function pickSvid(svids: X509SvidMessage[], o: Resolved): X509SvidMessage {
  const svid = svids.find(
    (s) =>
      (o.spiffeId === undefined || s.spiffe_id === o.spiffeId) && (o.hint === undefined || s.hint === o.hint),
  );
  if (svid) return svid;
  const wanted = [o.spiffeId, o.hint !== undefined ? `hint "${o.hint}"` : undefined]
    .filter(Boolean)
    .join(', ');
  throw new IdentityError(
    'ERR_WORKLOAD_API_RESPONSE',
    svids.length === 0 ? 'the message holds no SVID' : `the message holds no SVID for ${wanted}`,
  );
}

const filesOf = (svid: X509SvidMessage): IdentityFiles => ({
  cert: certificatesPem(svid.x509_svid, 'x509_svid'),
  key: toPem('PRIVATE KEY', svid.x509_svid_key),
  bundle: certificatesPem(svid.bundle, 'bundle'),
});

const sameCrls = (a: readonly Buffer[], b: readonly Buffer[]): boolean =>
  a.length === b.length && a.every((c, i) => c.equals(b[i]!));

interface Start {
  resolve(id: WorkloadApiIdentity): void;
  reject(e: IdentityError): void;
  deadline: unknown;
  timers: Timers;
  /** Why the start has no identity yet: the latest refusal or connection failure. */
  last: IdentityError;
}

/**
 * An identity kept by the Workload API stream. A refused SVID leaves the current one in place and
 * is reported on 'error'; when the stream ends or fails (agent restart), it reconnects with
 * backoff and the current identity keeps serving. PermissionDenied after the start is reported
 * and retried every maxRetryMs: the entry may come back.
 *
 * Events: 'rotated' (current, previous); 'error' (IdentityError), dropped without a listener, as
 * Identity's; 'crls' when the stream's CRLs change.
 */
export class WorkloadApiIdentity extends EventEmitter<WorkloadApiIdentityEvents> implements IdentitySource {
  /** The gRPC target, `unix:///path`. */
  readonly target: string;
  readonly #o: Resolved;
  #current: IdentitySnapshot | undefined;
  #crls: readonly Buffer[] = [];
  #client: Client | undefined;
  #call: ClientReadableStream<X509SvidResponse> | undefined;
  #retryTimer: unknown;
  #failures = 0;
  #reported: string | undefined;
  #start: Start | undefined;
  #closed = false;

  private constructor(target: string, o: Resolved) {
    super();
    this.target = target;
    this.#o = o;
  }

  /**
   * Opens the stream and resolves with the first verified SVID. Rejects with an IdentityError:
   * ERR_WORKLOAD_API_DENIED at once on PermissionDenied; otherwise, after startTimeoutMs, the last
   * refusal of a candidate or ERR_WORKLOAD_API_UNAVAILABLE.
   */
  static connect(opts: WorkloadApiOptions = {}): Promise<WorkloadApiIdentity> {
    return new Promise((resolveStart, rejectStart) => {
      const target = workloadApiTarget(opts.socket ?? process.env.SPIFFE_ENDPOINT_SOCKET);
      const o: Resolved = { ...DEFAULTS, ...opts };
      const id = new WorkloadApiIdentity(target, o);
      const timers = opts.timers ?? refTimers;
      id.#start = {
        resolve: resolveStart,
        reject: rejectStart,
        timers,
        last: new IdentityError('ERR_WORKLOAD_API_UNAVAILABLE', `no X.509-SVID from ${target} yet`),
        deadline: timers.setTimeout(() => id.#failStart(id.#start!.last), o.startTimeoutMs),
      };
      id.#open();
    });
  }

  /** The identity in use now. Read it at the moment of use: a rotation replaces it. */
  current(): IdentitySnapshot {
    if (!this.#current) throw new IdentityError('ERR_WORKLOAD_API_UNAVAILABLE', 'no X.509-SVID yet');
    return this.#current;
  }

  /** The CRLs of the latest message (DER), for a caller that enforces them. */
  crls(): readonly Buffer[] {
    return this.#crls;
  }

  /** Cancels the stream and closes the channel. The current identity stays readable. */
  close(): void {
    this.#closed = true;
    this.#o.timers.clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#stopCall();
  }

  #open(): void {
    this.#retryTimer = undefined;
    if (this.#closed) return;
    let client: Client;
    try {
      const Ctor = workloadApiClient();
      client = new Ctor(this.target, credentials.createInsecure());
    } catch (e) {
      this.#failStart(isIdentityError(e) ? e : new IdentityError('ERR_WORKLOAD_API_UNAVAILABLE', String(e)));
      return;
    }
    const metadata = new Metadata();
    metadata.set(SECURITY_HEADER, 'true');
    const call = (client as WorkloadApiClient).FetchX509SVID({}, metadata);
    this.#client = client;
    this.#call = call;
    call.on('data', (m: X509SvidResponse) => this.#onMessage(m));
    // 'status' follows every end, OK or not; 'error' repeats it for non-OK ones.
    call.on('error', () => undefined);
    call.on('status', (s: StatusObject) => {
      if (this.#call === call) this.#onEnd(s);
    });
  }

  #stopCall(): void {
    const call = this.#call;
    const client = this.#client;
    this.#call = undefined;
    this.#client = undefined;
    call?.cancel();
    client?.close();
  }

  #onMessage(m: X509SvidResponse): void {
    if (this.#closed) return;
    // The stream works: a later failure starts the backoff afresh.
    this.#failures = 0;
    let next: IdentitySnapshot | undefined;
    try {
      const svid = pickSvid(m.svids, this.#o);
      const files = filesOf(svid);
      if (!this.#current || !sameFiles(this.#current, files)) {
        next = verifyIdentity(files, this.#o.clock.now());
        if (next.spiffeId !== svid.spiffe_id) {
          throw new IdentityError(
            'ERR_WORKLOAD_API_RESPONSE',
            `the SVID for ${svid.spiffe_id} is a certificate of ${next.spiffeId}`,
          );
        }
      }
      this.#reported = undefined;
    } catch (e) {
      if (!isIdentityError(e)) throw e;
      this.#refuse(e);
      next = undefined;
    }
    this.#takeCrls(m.crl);
    if (!next) return;
    const previous = this.#current;
    this.#current = next;
    if (this.#start) {
      const start = this.#start;
      this.#start = undefined;
      start.timers.clearTimeout(start.deadline);
      start.resolve(this);
    } else if (previous) {
      this.emit('rotated', next, previous);
    }
  }

  #takeCrls(crls: Buffer[]): void {
    if (sameCrls(this.#crls, crls)) return;
    this.#crls = Object.freeze([...crls]);
    if (!this.#start) this.emit('crls', this.#crls);
  }

  #onEnd(s: StatusObject): void {
    this.#stopCall();
    if (this.#closed) return;
    if (s.code === status.PERMISSION_DENIED) {
      const err = new IdentityError(
        'ERR_WORKLOAD_API_DENIED',
        `${this.target}: permission denied: ${s.details}`,
      );
      if (this.#start) {
        this.#failStart(err);
        return;
      }
      this.#refuse(err);
      this.#retryIn(this.#o.maxRetryMs);
      return;
    }
    this.#failures++;
    // OK is the agent ending the stream (a restart): reconnect, no failure to report yet.
    const err = new IdentityError(
      'ERR_WORKLOAD_API_UNAVAILABLE',
      `${this.target}: ${s.code === status.OK ? 'stream ended' : `${status[s.code] ?? s.code}: ${s.details}`}`,
    );
    if (this.#start) this.#start.last = err;
    // Once per outage: the details of each failed attempt differ (refused, reset, timed out).
    else if (this.#failures === this.#o.errorAfterAttempts) this.#report(err);
    this.#retryIn(Math.min(this.#o.retryMs * 2 ** (this.#failures - 1), this.#o.maxRetryMs));
  }

  #retryIn(ms: number): void {
    this.#retryTimer = this.#o.timers.setTimeout(() => this.#open(), ms);
  }

  /** Before the start a refusal is only remembered for the rejection; after it, reported. */
  #refuse(err: IdentityError): void {
    if (this.#start) this.#start.last = err;
    else this.#report(err);
  }

  /** Each distinct refusal is reported once, until an SVID is taken again. */
  #report(err: IdentityError): void {
    const key = `${err.code}:${err.message}`;
    if (key === this.#reported) return;
    this.#reported = key;
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  #failStart(err: IdentityError): void {
    const start = this.#start;
    if (!start) return;
    this.#start = undefined;
    start.timers.clearTimeout(start.deadline);
    this.close();
    start.reject(err);
  }
}
