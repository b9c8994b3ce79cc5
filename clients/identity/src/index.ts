/**
 * The service side of Baton: a workload's or node's own identity read from the agent's files or
 * taken from its Workload API socket, peer authorization by SPIFFE ID, mutual TLS that follows
 * rotation, and revocation enforced on peers (RevocationGuard). Explicit named exports
 * (as jose's src/index.ts): everything else in this folder is internal.
 */
export {
  type Authorizer,
  authorizeAll,
  authorizeAny,
  authorizeIds,
  authorizePeer,
  authorizePrefix,
  authorizeTrustDomain,
  isManagerNode,
  isNode,
  isWorkerNode,
  type Peer,
  peerOf,
} from './authorize';
export { IdentityError, type IdentityErrorCode, isIdentityError } from './errors';
export { Identity, type IdentityEvents, type IdentityOptions, type Timers } from './identity';
export {
  type IdentityFiles,
  type IdentityPaths,
  type IdentitySnapshot,
  readIdentityFiles,
  verifyIdentity,
} from './load';
export { canonicalSerial, type ParsedCrl, parseCrl } from './crl';
export {
  RevocationGuard,
  type RevocationGuardEvents,
  type RevocationGuardOptions,
  type RevocationStatus,
  type StalePolicy,
} from './revocation';
export { parseSpiffeId, type SubjectParts } from './svid';
export {
  bindServer,
  type ClientAuthorization,
  clientTlsOptions,
  createMtlsServer,
  MtlsAgent,
  type MtlsAgentOptions,
  type MtlsRequestOptions,
  type MtlsResponse,
  mtlsAgent,
  mtlsRequest,
  type RevocationEnforcement,
  requestPeer,
  type ServerAuthorization,
  serverTlsOptions,
  type IdentitySource,
  type TlsVersions,
  tlsPeer,
} from './tls';
export {
  type WorkloadApiIdentityEvents,
  WorkloadApiIdentity,
  type WorkloadApiOptions,
  workloadApiTarget,
} from './workload-api-source';
