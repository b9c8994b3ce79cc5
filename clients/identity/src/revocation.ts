import { EventEmitter } from 'node:events';
import { type FSWatcher, watch as fsWatch, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import type { RevocationEvent } from '../../rotation/src/agent-api';
import { CaClient } from '../../rotation/src/ca-client';
import { parseCertificates } from '../../rotation/src/pem';
import { crlsFromPem, reasonName } from './crl';
import { IdentityError } from './errors';
import type { Identity, Timers } from './identity';
import type { IdentitySnapshot } from './load';
import { FeedFollower, sourceError } from './revocation-feed';
import { type HeldCrl, RevocationState } from './revocation-state';
import { type Tracked, TrackedConnections } from './tracked-connections';

/**
 * Revocation enforcement for services: a RevocationGuard keeps the CA's CRLs (from the agent's
 * crl.pem, watched, and/or `GET /v1/crl.pem` with its ETag), each verified against the CAs of the
 * service's own trust bundle, and follows the revocation feed (`GET /v1/revocations`, a long-poll
 * over mTLS with the service's own SVID) so that a revocation reaches it within about a second.
 * The TLS helpers take it as `revocation: guard`: a revoked peer is refused at the handshake, and
 * open connections from a peer are closed as soon as the guard learns of its revocation.
 */

/** What a check does when revocation status cannot be established (see RevocationGuardOptions.onStale). */
export type StalePolicy = 'fail-closed' | 'fail-open';

export interface RevocationGuardOptions {
  /**
   * The service's own identity: its bundle anchors the CRL signatures, its chain supplies the
   * signing intermediate, and it is the client certificate of the feed. Rotations are followed.
   */
  identity: Identity;
  /** A file of PEM CRLs, such as the agent's DIR/crl.pem; watched (fs.watch and the poll). */
  crlFile?: string;
  /** https://HOST:PORT of Baton: `/v1/crl.pem` is fetched from it and its feed followed. */
  serverUrl?: string;
  /** Follow the revocation feed (default true when serverUrl is set). */
  followFeed?: boolean;
  /** `wait` of each long-poll, 1–30 s (default 30). */
  feedWaitSeconds?: number;
  /** Re-read crlFile and re-fetch /v1/crl.pem this often (default 60 000 ms). */
  crlRefreshMs?: number;
  /**
   * Treat the data as stale once the feed has been unreachable this long, counted from the first
   * failed request (default: never; only the CRLs' nextUpdate counts). A long-poll held open by the
   * server is the feed working, however quiet.
   */
  maxFeedOutageMs?: number;
  /**
   * The policy of bound servers and clients that set none of their own. Unset, servers fail closed
   * and clients fail open (see docs/revocation.md).
   */
  onStale?: StalePolicy;
  /** How often staleness is re-evaluated, closing open connections under fail-closed (default 1000 ms). */
  tickMs?: number;
  /** How long start() waits for a first CRL before it rejects (default 10 000 ms). */
  startTimeoutMs?: number;
  clock?: { now(): Date };
  timers?: Timers;
  random?: () => number;
}

export interface RevocationStatus {
  /** Why the data is stale now, if it is. */
  stale?: string;
  crls: {
    issuer: string;
    crlNumber?: string;
    thisUpdate: Date;
    nextUpdate?: Date;
    entries: number;
    source: string;
  }[];
  feed?: { connected: boolean; last: number; downSince?: Date };
  /** Serials learned from the feed. */
  feedSerials: number;
}

export interface RevocationGuardEvents {
  /** Serials not known to be revoked before, from a new CRL or a feed event. */
  revoked: [serials: string[], source: 'crl' | 'feed'];
  /** A connection was closed because its peer is now refused. */
  closed: [error: IdentityError, socket: TLSSocket];
  stale: [reason: string];
  fresh: [];
  /** A source failed or served a CRL that was refused; the guard keeps what it has and retries. */
  error: [error: IdentityError];
}

const unrefTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export class RevocationGuard extends EventEmitter<RevocationGuardEvents> {
  readonly #o: Required<
    Omit<RevocationGuardOptions, 'crlFile' | 'serverUrl' | 'maxFeedOutageMs' | 'onStale'>
  > &
    RevocationGuardOptions;
  readonly #state = new RevocationState();
  readonly #client: CaClient | undefined;
  readonly #abort = new AbortController();
  #closed = false;
  #watcher: FSWatcher | undefined;
  #pollTimer: unknown;
  #tickTimer: unknown;
  #settleTimer: unknown;
  #etag: string | undefined;
  #refreshing: Promise<void> | undefined;
  #refreshAgain = false;
  readonly #feed: FeedFollower | undefined;
  #staleReason: string | undefined;
  /** The last problem reported per source, so that a failure repeating on every retry is reported once. */
  readonly #reported = new Map<string, string>();
  readonly #tracked = new TrackedConnections();
  readonly #onRotated = (current: IdentitySnapshot): void => this.#trust(current);

  private constructor(o: RevocationGuardOptions) {
    super();
    this.#o = {
      followFeed: o.serverUrl !== undefined,
      feedWaitSeconds: 30,
      crlRefreshMs: 60_000,
      tickMs: 1000,
      startTimeoutMs: 10_000,
      clock: { now: () => new Date() },
      timers: unrefTimers,
      random: Math.random,
      ...o,
    };
    this.#client = o.serverUrl ? new CaClient({ serverUrl: o.serverUrl, timeoutMs: 10_000 }) : undefined;
    this.#feed =
      this.#client && this.#o.followFeed
        ? new FeedFollower({
            client: this.#client,
            credential: () => o.identity.current(),
            waitSeconds: this.#o.feedWaitSeconds,
            clock: this.#o.clock,
            timers: this.#o.timers,
            random: this.#o.random,
            signal: this.#abort.signal,
            onEvents: (events) => this.#onEvents(events),
            onError: (e) => this.#report(this.#feed!.url, e),
            onUp: () => this.#reported.delete(this.#feed!.url),
          })
        : undefined;
    this.#trust(o.identity.current());
  }

  /**
   * A guard with its first CRLs loaded and the feed's history read (or tried), watching from then
   * on. Rejects with ERR_REVOCATION_SOURCE when no CRL could be loaded within startTimeoutMs.
   */
  static async start(opts: RevocationGuardOptions): Promise<RevocationGuard> {
    if (!opts.crlFile && !opts.serverUrl)
      throw new TypeError('RevocationGuard: give a crlFile, a serverUrl, or both');
    if (opts.followFeed && !opts.serverUrl)
      throw new TypeError('RevocationGuard: followFeed needs a serverUrl');
    if (opts.feedWaitSeconds !== undefined && !(opts.feedWaitSeconds >= 1 && opts.feedWaitSeconds <= 30))
      throw new RangeError('RevocationGuard: feedWaitSeconds must be 1 to 30');
    const guard = new RevocationGuard(opts);
    const deadline = Date.now() + guard.#o.startTimeoutMs;
    for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
      await guard.refresh();
      if (guard.#state.crls.length > 0) break;
      if (Date.now() >= deadline) {
        guard.close();
        throw new IdentityError(
          'ERR_REVOCATION_SOURCE',
          `no CRL could be loaded from ${[opts.crlFile, opts.serverUrl].filter(Boolean).join(' or ')}`,
        );
      }
      await sleep(delay);
    }
    guard.#watch();
    if (guard.#feed) {
      const caughtUp = guard.#feed.start();
      // The history is usually one page; a slow CA must not hold the service's start for long.
      await Promise.race([
        caughtUp,
        sleep(Math.min(guard.#o.startTimeoutMs, 5000), undefined, { ref: false }),
      ]);
    }
    guard.#evaluate();
    return guard;
  }

  /**
   * Why `chain` (the peer's verified certificates, leaf first) is refused now, or undefined when it
   * may connect: ERR_PEER_REVOKED when the leaf or an intermediate is revoked, whatever the policy;
   * ERR_REVOCATION_STALE when its status is unknown and the policy fails closed.
   */
  refusal(chain: X509Certificate[], policy: StalePolicy): IdentityError | undefined {
    const now = this.#o.clock.now();
    const r = this.#state.check(chain, now);
    if (r.revoked) {
      const reason = typeof r.revoked.reason === 'number' ? reasonName(r.revoked.reason) : r.revoked.reason;
      return new IdentityError(
        'ERR_PEER_REVOKED',
        `certificate ${r.revoked.serial} (${r.revoked.subject.replace(/\n/g, ', ')}) is revoked: ${reason}, per the ${r.revoked.source === 'crl' ? 'CRL' : 'revocation feed'}`,
      );
    }
    const stale = r.stale ?? this.#feedOutage(now);
    if (stale && policy === 'fail-closed')
      return new IdentityError('ERR_REVOCATION_STALE', `revocation data is stale (${stale}); failing closed`);
    return undefined;
  }

  /** The policy for a side that set none: the guard's, else closed for servers and open for clients. */
  policyFor(side: 'server' | 'client', own?: StalePolicy): StalePolicy {
    return own ?? this.#o.onStale ?? (side === 'server' ? 'fail-closed' : 'fail-open');
  }

  /**
   * Checks a connection's peer and keeps watching it: the connection is destroyed (after
   * `onClose`) as soon as the peer is refused. Throws the refusal if it is refused already.
   */
  admit(
    socket: TLSSocket,
    chain: X509Certificate[],
    policy: StalePolicy,
    onClose?: Tracked['onClose'],
  ): void {
    const refused = this.refusal(chain, policy);
    if (refused) throw refused;
    if (this.#closed) return;
    this.#tracked.add({ socket, chain, policy, onClose });
  }

  /** Connections being watched. */
  get connections(): number {
    return this.#tracked.size;
  }

  status(): RevocationStatus {
    return {
      stale: this.#staleNow(),
      crls: this.#state.crls.map((h: HeldCrl) => ({
        issuer: h.ca.subject.replace(/\n/g, ', '),
        crlNumber: h.crl.crlNumber?.toString(),
        thisUpdate: h.crl.thisUpdate,
        nextUpdate: h.crl.nextUpdate,
        entries: h.crl.revoked.size,
        source: h.source,
      })),
      feed: this.#feed
        ? { connected: this.#feed.connected, last: this.#feed.last, downSince: this.#feed.downSince }
        : undefined,
      feedSerials: this.#state.feedSerials,
    };
  }

  /** Reads the CRL file and fetches /v1/crl.pem now (one refresh at a time; a request during one queues another). */
  refresh(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#refreshing) {
      this.#refreshAgain = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      do {
        this.#refreshAgain = false;
        if (this.#o.crlFile) this.#readFile(this.#o.crlFile);
        if (this.#client) await this.#fetch(this.#client);
      } while (this.#refreshAgain && !this.#closed);
      this.#evaluate();
    })().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  /** Stops watching and following; bound connections stay open and are no longer watched. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    this.#watcher?.close();
    for (const h of [this.#pollTimer, this.#tickTimer, this.#settleTimer]) this.#o.timers.clearTimeout(h);
    this.#o.identity.off('rotated', this.#onRotated);
    this.#client?.close();
    this.#tracked.clear();
  }

  #trust(id: IdentitySnapshot): void {
    this.#state.setRoots(parseCertificates(id.bundlePem));
    this.#state.learnChain(parseCertificates(id.certChainPem));
  }

  #readFile(path: string): void {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      this.#report(path, new IdentityError('ERR_REVOCATION_SOURCE', `cannot read ${path}: ${code}`));
      return;
    }
    this.#load(path, crlsFromPem(text));
  }

  async #fetch(client: CaClient): Promise<void> {
    const url = `${client.serverUrl}/v1/crl.pem`;
    try {
      const r = await client.fetchCrlPem({
        trustBundlePem: this.#o.identity.current().bundlePem,
        etag: this.#etag,
      });
      if (!r.changed) {
        this.#reported.delete(url);
        return;
      }
      this.#load(url, crlsFromPem(r.pem));
      this.#etag = r.etag;
    } catch (e) {
      if (!this.#closed) this.#report(url, sourceError(url, e));
    }
  }

  #load(source: string, ders: Buffer[]): void {
    if (ders.length === 0) {
      this.#report(source, new IdentityError('ERR_CRL_INVALID', `${source} holds no CRL`));
      return;
    }
    const r = this.#state.loadCrls(source, ders);
    if (r.problems.length === 0) this.#reported.delete(source);
    else this.#report(source, new IdentityError('ERR_CRL_INVALID', `${source}: ${r.problems.join('; ')}`));
    if (r.newlyRevoked.length > 0) this.#revoked(r.newlyRevoked, 'crl');
  }

  #revoked(serials: string[], source: 'crl' | 'feed'): void {
    this.emit('revoked', serials, source);
    this.#recheck(this.#tracked.withSerials(serials));
  }

  /** Closes every connection of `which` whose peer is refused now. */
  #recheck(which: Tracked[]): void {
    for (const t of which) {
      const refused = this.refusal(t.chain, t.policy);
      if (!refused) continue;
      this.#tracked.delete(t);
      try {
        t.onClose?.(refused);
        this.emit('closed', refused, t.socket);
      } finally {
        t.socket.destroy();
      }
    }
  }

  #feedOutage(now: Date): string | undefined {
    return this.#feed?.outage(now, this.#o.maxFeedOutageMs);
  }

  #staleNow(): string | undefined {
    const now = this.#o.clock.now();
    return this.#state.staleness(now) ?? this.#feedOutage(now);
  }

  /** Emits stale/fresh on a change and re-checks open connections then. */
  #evaluate(): void {
    const reason = this.#staleNow();
    if (reason === this.#staleReason) return;
    const was = this.#staleReason;
    this.#staleReason = reason;
    if (reason) this.emit('stale', reason);
    else if (was) this.emit('fresh');
    this.#recheck(this.#tracked.all());
  }

  #watch(): void {
    const t = this.#o.timers;
    const file = this.#o.crlFile;
    if (file) {
      try {
        this.#watcher = fsWatch(dirname(file), { persistent: false }, (_event, name) => {
          if (name && name.toString() !== basename(file)) return;
          // The agent renames a complete file into place; a short settle coalesces its events.
          t.clearTimeout(this.#settleTimer);
          this.#settleTimer = t.setTimeout(() => {
            if (this.#closed) return;
            this.#readFile(file);
            this.#evaluate();
          }, 50);
        });
        this.#watcher.on('error', () => this.#watcher?.close());
      } catch {
        // No fs.watch here (ENOSPC, a vanished directory): the poll below still reads the file.
      }
    }
    const poll = (): void => {
      this.#pollTimer = t.setTimeout(() => {
        if (this.#closed) return;
        void this.refresh().finally(poll);
      }, this.#o.crlRefreshMs);
    };
    poll();
    const tick = (): void => {
      this.#tickTimer = t.setTimeout(() => {
        if (this.#closed) return;
        this.#evaluate();
        tick();
      }, this.#o.tickMs);
    };
    tick();
    this.#o.identity.on('rotated', this.#onRotated);
  }

  #onEvents(events: RevocationEvent[]): void {
    if (events.length === 0) return;
    const fresh: string[] = [];
    for (const e of events) fresh.push(...this.#state.addFeedSerials(e.serials, e.reason));
    if (fresh.length > 0) this.#revoked(fresh, 'feed');
    // The CRLs have changed too; fetching them makes the data complete (the feed names serials
    // only) and stretches nextUpdate.
    void this.refresh();
  }

  /**
   * Reports a source's problem once until it changes or the source recovers. Unlike a plain
   * EventEmitter, an 'error' without a listener is dropped: the guard keeps what it holds.
   */
  #report(source: string, err: IdentityError): void {
    if (this.#reported.get(source) === err.message) return;
    this.#reported.set(source, err.message);
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}
