import type { X509BundlesResponse, X509SvidResponse } from './proto';
import { entryMatches, type WorkloadCaller } from './selectors';
import type { HeldSvid, ServedEntry, WorkloadApiView } from './workload-api-state';

/**
 * What one caller is owed from the agent's current view (pure: the server writes it). Each answer
 * carries a `key` that changes exactly when the message would: a stream sends again only when its
 * key moves, so a change to someone else's entry is not a message to this caller.
 */

export type Outcome<T> =
  | { kind: 'send'; message: T; key: string }
  /** Entries match but no SVID is held yet (the agent is issuing): send nothing for now. */
  | { kind: 'wait' }
  /** The agent has not listed its entries yet. */
  | { kind: 'not-ready' }
  /** Refused: PermissionDenied, or InvalidArgument when `invalid` (the request asked for the wrong thing). */
  | { kind: 'deny'; details: string; invalid?: boolean };

export const NO_ENTRY =
  'no identity issued: the caller matches no registration entry of this node (see docs/workload-api.md)';

/** The entries whose selectors all match the caller, in listing order. */
export function entriesFor(view: WorkloadApiView, caller: WorkloadCaller): ServedEntry[] {
  return view.entries.filter((e) => entryMatches(e.selectors, caller));
}

/** Refusals common to every call: a revoked node, a view not ready, a caller with no entry. */
export function gate(view: WorkloadApiView, entries: ServedEntry[]): Outcome<never> | undefined {
  if (view.revoked) return { kind: 'deny', details: view.revoked };
  if (!view.ready) return { kind: 'not-ready' };
  if (entries.length === 0) return { kind: 'deny', details: NO_ENTRY };
  return undefined;
}

/** The SVIDs of `entries` the agent holds and that are still valid at `now`. */
export function heldFor(view: WorkloadApiView, entries: ServedEntry[], now: Date): HeldSvid[] {
  const out: HeldSvid[] = [];
  for (const e of entries) {
    const held = view.svids.get(e.name);
    if (held && held.spiffeId === e.spiffeId && held.notAfter.getTime() > now.getTime()) out.push(held);
  }
  return out;
}

/** FetchX509SVID: every held SVID of the caller's entries, with the bundle and CRLs. */
export function x509SvidOutcome(
  view: WorkloadApiView,
  caller: WorkloadCaller,
  now: Date,
): Outcome<X509SvidResponse> {
  const entries = entriesFor(view, caller);
  const refused = gate(view, entries);
  if (refused) return refused;
  const held = heldFor(view, entries, now);
  if (held.length === 0) return { kind: 'wait' };
  const hints = new Map(entries.map((e) => [e.name, e.hint]));
  return {
    kind: 'send',
    key: `${held.map((s) => `${s.serial}:${hints.get(s.entryName)}`).join(',')}|${bufferId(view.bundleDer)}|${bufferId(view.crls)}`,
    message: {
      svids: held.map((s) => ({
        spiffe_id: s.spiffeId,
        x509_svid: s.chainDer,
        x509_svid_key: s.keyDer,
        bundle: view.bundleDer,
        hint: hints.get(s.entryName) ?? '',
      })),
      crl: [...view.crls],
      federated_bundles: {},
    },
  };
}

/** FetchX509Bundles: the trust domain's roots and the CRLs, for a caller with an entry. */
export function x509BundlesOutcome(
  view: WorkloadApiView,
  caller: WorkloadCaller,
): Outcome<X509BundlesResponse> {
  const refused = gate(view, entriesFor(view, caller));
  if (refused) return refused;
  return {
    kind: 'send',
    key: `${bufferId(view.bundleDer)}|${bufferId(view.crls)}`,
    message: { crl: [...view.crls], bundles: { [view.trustDomainId]: view.bundleDer } },
  };
}

/** FetchJWTBundles: the JWT-SVID signing keys, once the agent has them. */
export function jwtBundlesOutcome(
  view: WorkloadApiView,
  caller: WorkloadCaller,
): Outcome<{ bundles: Record<string, Buffer> }> {
  const refused = gate(view, entriesFor(view, caller));
  if (refused) return refused;
  if (!view.jwks) return { kind: 'wait' };
  return {
    kind: 'send',
    key: String(bufferId(view.jwks)),
    message: { bundles: { [view.trustDomainId]: view.jwks } },
  };
}

/**
 * A stable id per object: the view keeps an unchanged part's object across versions
 * (WorkloadApiState.publish), so identity says whether a part changed.
 */
const ids = new WeakMap<object, number>();
let nextId = 0;
export function bufferId(o: object): number {
  let id = ids.get(o);
  if (id === undefined) {
    id = ++nextId;
    ids.set(o, id);
  }
  return id;
}
