import {
  type AgentCaApi,
  CaClientError,
  type CrlFetch,
  type JwtSvid,
  type JwtSvidParams,
  type JwtSvidRequest,
  type RevocationPage,
  type RevocationsParams,
  type WorkloadEntry,
  type WorkloadIssuance,
} from '../../../clients/rotation/src';
import { parseJwtSvid } from '../../../clients/rotation/src/agent-api';
import type { FakeClock } from '../../../services/ca/src/domain/clock';
import { TEST_TD, TEST_URL } from '../../fixtures/test-ca';
import { FakeCa } from './fake-ca';

export const spiffeIdOf = (path: string) => `spiffe://${TEST_TD}/${path}`;

/**
 * The JWT side of the CA, in memory: `POST /v1/jwt-svids` answered as the server words it (claims
 * sub, aud, exp, iat, iss; expires_at = exp) and read back through the agent's own parser. The
 * signature is a counter, not a signature: nothing here verifies it. A fake, not a mock.
 */
export class FakeJwtIssuer {
  readonly calls: (JwtSvidRequest & { certificateChainPem?: string })[] = [];
  /** Thrown, in order, by the next mints (after the gate). */
  readonly failures: Error[] = [];
  /** The lifetime of the tokens when the request has no ttl. */
  ttlMs = 5 * 60_000;
  /** Where `iat` is, relative to now; null: a token without `iat`. */
  iatOffsetMs: number | null = 0;
  #gate?: Promise<void>;
  #minted = 0;

  constructor(readonly clock: FakeClock) {}

  get count(): number {
    return this.calls.length;
  }

  /** Mints from now on wait (after being counted) until the function returned is called. */
  hold(): () => void {
    let release!: () => void;
    this.#gate = new Promise<void>((r) => {
      release = r;
    });
    return () => {
      this.#gate = undefined;
      release();
    };
  }

  mint = async (p: JwtSvidRequest & { certificateChainPem?: string }): Promise<JwtSvid> => {
    this.calls.push({
      spiffeId: p.spiffeId,
      audience: [...p.audience],
      ...(p.ttl ? { ttl: p.ttl } : {}),
      ...(p.certificateChainPem ? { certificateChainPem: p.certificateChainPem } : {}),
    });
    if (this.#gate) await this.#gate;
    const failure = this.failures.shift();
    if (failure) throw failure;
    const now = this.clock.now().getTime();
    const ttlMs = p.ttl ? Number(/^(\d+)m$/.exec(p.ttl)?.[1] ?? 0) * 60_000 : this.ttlMs;
    const exp = Math.floor((now + ttlMs) / 1000);
    const iat = this.iatOffsetMs === null ? undefined : Math.floor((now + this.iatOffsetMs) / 1000);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const signature = Buffer.alloc(64, ++this.#minted).toString('base64url');
    const token = `${b64({ alg: 'ES256', kid: 'k1', typ: 'JWT' })}.${b64({ sub: p.spiffeId, aud: p.audience, exp, ...(iat === undefined ? {} : { iat }), iss: TEST_URL })}.${signature}`;
    const body = { token, spiffe_id: p.spiffeId, expires_at: new Date(exp * 1000).toISOString() };
    return parseJwtSvid(Buffer.from(JSON.stringify(body)), p, this.clock.now());
  };
}

/**
 * FakeCa (attest, renew) plus the rest of what the NodeAgent asks: `entries` are listed as they
 * are; workload SVIDs are refused as a busy CA would (the JWT tests do not need their files); no
 * CRL changes; the feed answers `feed` once, then nothing.
 */
export class FakeAgentCa extends FakeCa implements AgentCaApi {
  entries: WorkloadEntry[] = [];
  /** Thrown by listEntries instead of the list, while set. */
  entriesError?: Error;
  readonly jwt: FakeJwtIssuer;
  feed: RevocationPage['events'] = [];

  constructor(clock: FakeClock) {
    super(clock);
    this.jwt = new FakeJwtIssuer(clock);
  }

  async listEntries(): Promise<WorkloadEntry[]> {
    if (this.entriesError) throw this.entriesError;
    return this.entries.map((e) => ({ ...e }));
  }

  async issueWorkloadSvid(): Promise<WorkloadIssuance> {
    throw new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503);
  }

  async fetchCrlPem(): Promise<CrlFetch> {
    return { changed: false };
  }

  async revocations(p: RevocationsParams): Promise<RevocationPage> {
    const events = this.feed.filter((e) => e.id > p.since);
    if (events.length > 0) return { events, last: events.at(-1)!.id };
    if (p.waitSeconds === 0) return { events: [], last: p.since };
    // A long-poll with nothing to say: answer when the agent gives up on it.
    await new Promise<void>((resolve) => {
      if (p.signal?.aborted) resolve();
      p.signal?.addEventListener('abort', () => resolve());
    });
    return { events: [], last: p.since };
  }

  mintJwtSvid(p: JwtSvidParams): Promise<JwtSvid> {
    return this.jwt.mint(p);
  }
}

export const entry = (name: string, more: Partial<WorkloadEntry> = {}): WorkloadEntry => ({
  name,
  spiffeId: spiffeIdOf(name),
  parent: 'node1',
  selectors: [],
  dnsNames: [],
  ttlSeconds: 3600,
  ...more,
});
