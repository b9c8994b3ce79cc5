/**
 * What the agent's Workload API serves, as one immutable view that the agent replaces as things
 * change (CONTRACT "SPIFFE Workload API": the socket serves the same SVIDs the agent keeps for the
 * entries' files). The agent publishes; the server's streams subscribe and are told once per turn
 * of the event loop however many parts changed, so a pass that renews ten SVIDs sends one message.
 *
 * A part that is published with the same content as before is no change: streams only hear of
 * what a caller could see.
 */

/** One workload SVID the agent holds, with its key, for the entry it was issued for. */
export interface HeldSvid {
  entryName: string;
  spiffeId: string;
  /** Lowercase hex, as the agent lists it. */
  serial: string;
  /** DER certificates concatenated, the leaf first (Workload API `x509_svid`). */
  chainDer: Buffer;
  /** PKCS#8 DER (Workload API `x509_svid_key`). */
  keyDer: Buffer;
  notAfter: Date;
}

/** An entry parented to this node, as the last listing gave it. */
export interface ServedEntry {
  name: string;
  spiffeId: string;
  selectors: readonly string[];
  /** Empty when the entry has none. */
  hint: string;
}

export interface WorkloadApiView {
  /** False until the agent's first pass has listed the entries: calls wait, or are Unavailable. */
  ready: boolean;
  /** Set when this node has been revoked: every call is then PermissionDenied. */
  revoked?: string;
  /** `spiffe://<trust domain>`, the key of the bundle maps. */
  trustDomainId: string;
  /** DER roots concatenated (Workload API `bundle`). */
  bundleDer: Buffer;
  /** DER CRLs. */
  crls: readonly Buffer[];
  /** The JWT-SVID signing keys as a JWK Set (JSON), undefined until fetched. */
  jwks?: Buffer;
  entries: readonly ServedEntry[];
  /** By entry name. */
  svids: ReadonlyMap<string, HeldSvid>;
  /** Grows with every published change. */
  version: number;
}

const EMPTY: WorkloadApiView = {
  ready: false,
  trustDomainId: '',
  bundleDer: Buffer.alloc(0),
  crls: [],
  entries: [],
  svids: new Map(),
  version: 0,
};

type Part = Omit<WorkloadApiView, 'version'>;

const sameBuffers = (a: readonly Buffer[], b: readonly Buffer[]) =>
  a.length === b.length && a.every((x, i) => x.equals(b[i]!));

const sameSvids = (a: ReadonlyMap<string, HeldSvid>, b: ReadonlyMap<string, HeldSvid>) =>
  a.size === b.size &&
  [...a].every(([name, s]) => {
    const o = b.get(name);
    return o !== undefined && o.serial === s.serial && o.spiffeId === s.spiffeId;
  });

const SAME: { [K in keyof Part]-?: (a: Part[K], b: Part[K]) => boolean } = {
  ready: (a, b) => a === b,
  revoked: (a, b) => a === b,
  trustDomainId: (a, b) => a === b,
  bundleDer: (a, b) => a.equals(b),
  crls: sameBuffers,
  jwks: (a, b) => (a === undefined || b === undefined ? a === b : a.equals(b)),
  entries: (a, b) => JSON.stringify(a) === JSON.stringify(b),
  svids: sameSvids,
};

export class WorkloadApiState {
  #view: WorkloadApiView = EMPTY;
  readonly #listeners = new Set<() => void>();
  #scheduled = false;

  get view(): WorkloadApiView {
    return this.#view;
  }

  /** Replaces the parts given; listeners hear of it on the next turn when any of them changed. */
  publish(patch: Partial<Part>): void {
    const changed = (Object.keys(patch) as (keyof Part)[]).filter(
      // biome-ignore lint/suspicious/noExplicitAny: each part is compared by its own rule
      (k) => k in SAME && !(SAME[k] as (a: any, b: any) => boolean)(this.#view[k], patch[k]),
    );
    if (changed.length === 0) return;
    const next = { ...this.#view, version: this.#view.version + 1 } as WorkloadApiView;
    // Unchanged parts keep their old object, so a stream can tell by identity what it has sent.
    for (const k of changed) (next as unknown as Record<string, unknown>)[k] = patch[k];
    this.#view = next;
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      for (const listener of [...this.#listeners]) listener();
    });
  }

  /** Calls `listener` after changes; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get subscribers(): number {
    return this.#listeners.size;
  }
}
