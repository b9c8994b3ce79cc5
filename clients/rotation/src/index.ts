/**
 * The node side of Baton: pinned bootstrap, the CA client, the identity files and the rotator.
 * Explicit named exports (as jose's src/index.ts): everything else in this folder is internal.
 */
export { AgentError } from './agent-error';
export { writeFileAtomic } from './atomic-file';
export {
  bootstrap,
  type NewNodeIdentity,
  type ParsedJoinToken,
  parseJoinToken,
  pinnedRoots,
} from './bootstrap';
export {
  type AttestParams,
  CaClient,
  CaClientError,
  type CaClientOptions,
  fetchBundleUnverified,
  type Issuance,
  type NodeCaApi,
  type RenewParams,
} from './ca-client';
export {
  type CreateCsrParams,
  type Csr,
  createCsr,
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  type KeyPair,
} from './csr';
export { type NodeIdentityStorage, NodeIdentityStore, type StoredNodeIdentity } from './node-identity-store';
export { certificatePin } from './pem';
export {
  type BackoffOptions,
  backoffDelay,
  type CertValidity,
  nextRefreshAt,
  type RotationState,
  rotationState,
  shouldRotate,
} from './rotation-strategy';
export {
  isTerminal,
  type NodeIdentitySummary,
  NodeRotator,
  type RotationAction,
  type RotatorEvent,
  type RotatorOptions,
  type RunOnceResult,
  type Timers,
  unrefTimers,
} from './rotator';
