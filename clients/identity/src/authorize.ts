import type { X509Certificate } from 'node:crypto';
import { IdentityError } from './errors';
import { isTrustDomain, parseSpiffeId, readSvid, type SubjectParts } from './svid';

/**
 * Peer authorization by SPIFFE ID. TLS has already verified the peer's chain against the bundle
 * (authentication); an Authorizer decides whether that identity may talk to us (authorization), as
 * go-spiffe's tlsconfig.Authorizer. SPIFFE X.509-SVID §5: a peer is identified by the SPIFFE ID in
 * its one URI SAN, never by a host name.
 */

/** A peer whose certificate verified, reduced to what authorization looks at. */
export interface Peer {
  spiffeId: string;
  subject: SubjectParts;
  cert: X509Certificate;
}

/** Returns true to accept the peer. Must not throw; a throw counts as a refusal. */
export type Authorizer = (peer: Peer) => boolean;

/**
 * The Peer of a verified certificate. Refuses a certificate that is not a leaf SVID: zero or
 * several URI SANs (SPIFFE X.509-SVID §2 "MUST reject"), a CA certificate, a root path (§5.2).
 */
export function peerOf(cert: X509Certificate): Peer {
  const { spiffeId, subject } = readSvid(cert);
  return { spiffeId, subject, cert };
}

/** peerOf + the authorizer: the Peer, or an IdentityError saying why it is refused. */
export function authorizePeer(cert: X509Certificate, authorize: Authorizer): Peer {
  const peer = peerOf(cert);
  let ok = false;
  try {
    ok = authorize(peer) === true;
  } catch {
    ok = false;
  }
  if (!ok) throw new IdentityError('ERR_PEER_NOT_AUTHORIZED', `peer ${peer.spiffeId} is not authorized`);
  return peer;
}

function requireSpiffeId(id: string, what: string): void {
  if (!parseSpiffeId(id))
    throw new TypeError(`${what}: "${id}" is not a SPIFFE ID (spiffe://<trust domain>/<path>)`);
}

/** Exactly these SPIFFE IDs. */
export function authorizeIds(ids: Iterable<string>): Authorizer {
  const allowed = new Set(ids);
  for (const id of allowed) requireSpiffeId(id, 'authorizeIds');
  return (peer) => allowed.has(peer.spiffeId);
}

/**
 * The SPIFFE IDs under a path. Matching is per path segment, so `spiffe://td/ns` accepts
 * `spiffe://td/ns` and `spiffe://td/ns/api` but not `spiffe://td/nsevil`; with a trailing slash
 * (`spiffe://td/ns/`) only IDs strictly below it.
 */
export function authorizePrefix(prefix: string): Authorizer {
  const strict = prefix.endsWith('/');
  const base = strict ? prefix.slice(0, -1) : prefix;
  requireSpiffeId(base, 'authorizePrefix');
  return (peer) => peer.spiffeId.startsWith(`${base}/`) || (!strict && peer.spiffeId === base);
}

/** Any SPIFFE ID of the trust domain `td` (SPIFFE-ID §2.1 compares trust domains exactly). */
export function authorizeTrustDomain(td: string): Authorizer {
  if (!isTrustDomain(td)) throw new TypeError(`authorizeTrustDomain: "${td}" is not a trust domain name`);
  return (peer) => parseSpiffeId(peer.spiffeId)?.trustDomain === td;
}

/** Accepts a peer that one of `authorizers` accepts. With none, accepts nobody. */
export function authorizeAny(...authorizers: Authorizer[]): Authorizer {
  return (peer) => authorizers.some((a) => a(peer));
}

/** Accepts a peer that every one of `authorizers` accepts. With none, accepts nobody. */
export function authorizeAll(...authorizers: Authorizer[]): Authorizer {
  return (peer) => authorizers.length > 0 && authorizers.every((a) => a(peer));
}

const NODE_PATH = /^\/node\/[^/]+$/;

/** A node SVID of `td` with role `role` (CONTRACT: spiffe://<td>/node/<id>, O=<td>, OU=<role>). */
function isNodeWithRole(td: string, roles: readonly string[]): Authorizer {
  if (!isTrustDomain(td)) throw new TypeError(`"${td}" is not a trust domain name`);
  return (peer) => {
    const id = parseSpiffeId(peer.spiffeId);
    return (
      id?.trustDomain === td &&
      NODE_PATH.test(id.path) &&
      peer.subject.O === td &&
      peer.subject.OU !== undefined &&
      roles.includes(peer.subject.OU)
    );
  };
}

/**
 * A manager (conductor) node of `td`. The role is read from OU, which Baton takes only from the
 * join token or the node record, never from the CSR (CONTRACT "Certificate profile").
 */
export const isManagerNode = (td: string): Authorizer => isNodeWithRole(td, ['manager']);

/** Any node of `td`, manager or worker; not an admin or a workload. */
export const isNode = (td: string): Authorizer => isNodeWithRole(td, ['manager', 'worker']);

/** A worker node of `td`. */
export const isWorkerNode = (td: string): Authorizer => isNodeWithRole(td, ['worker']);
