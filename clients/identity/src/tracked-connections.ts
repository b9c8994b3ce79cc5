import type { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { canonicalSerial } from './crl';
import type { IdentityError } from './errors';
import type { StalePolicy } from './revocation';

/** A connection the RevocationGuard watches: its peer's verified chain and the policy it was admitted under. */
export interface Tracked {
  socket: TLSSocket;
  chain: X509Certificate[];
  policy: StalePolicy;
  /** Called with the reason before the guard destroys the connection. */
  onClose?: (error: IdentityError) => void;
}

/**
 * Open connections indexed by the serials of their peer's chain (leaf and intermediates), so that
 * a feed event naming a serial finds its connections without a scan. A connection leaves the
 * index when its socket closes, whoever closes it.
 */
export class TrackedConnections {
  readonly #all = new Set<Tracked>();
  readonly #bySerial = new Map<string, Set<Tracked>>();

  add(t: Tracked): void {
    this.#all.add(t);
    const serials = t.chain.map((c) => canonicalSerial(c.serialNumber));
    for (const s of serials) this.#bySerial.set(s, (this.#bySerial.get(s) ?? new Set()).add(t));
    t.socket.once('close', () => this.delete(t, serials));
  }

  delete(t: Tracked, serials = t.chain.map((c) => canonicalSerial(c.serialNumber))): void {
    this.#all.delete(t);
    for (const s of serials) {
      const set = this.#bySerial.get(s);
      set?.delete(t);
      if (set?.size === 0) this.#bySerial.delete(s);
    }
  }

  /** The connections whose peer chain holds one of `serials`. */
  withSerials(serials: Iterable<string>): Tracked[] {
    const hit = new Set<Tracked>();
    for (const s of serials) for (const t of this.#bySerial.get(s) ?? []) hit.add(t);
    return [...hit];
  }

  all(): Tracked[] {
    return [...this.#all];
  }

  get size(): number {
    return this.#all.size;
  }

  clear(): void {
    this.#all.clear();
    this.#bySerial.clear();
  }
}
