/**
 * The node side of Baton: pinned bootstrap, the CA client, the identity files and the rotator.
 * Explicit named exports (as jose's src/index.ts): everything else in this folder is internal.
 */
export type {
  AgentCaApi,
  JwtBundle,
  CrlFetch,
  FetchCrlParams,
  JwtSvid,
  JwtSvidParams,
  JwtSvidRequest,
  NodeCredential,
  RevocationEvent,
  RevocationPage,
  RevocationsParams,
  WorkloadEntry,
  WorkloadIssuance,
  WorkloadSvidParams,
} from './agent-api';
export { AgentError } from './agent-error';
export { AgentState, type AgentStateData } from './agent-state';
export { writeFileAtomic } from '../../../common/src/atomic-file';
export {
  bootstrap,
  type NewNodeIdentity,
  type NodeAttestor,
  type ParsedJoinToken,
  parseJoinToken,
  pinnedRoots,
  tokenAttestor,
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
  type TpmAttestParams,
  type TpmCaApi,
  type TpmChallengeParams,
} from './ca-client';
export {
  type CreateCsrParams,
  type Csr,
  createCsr,
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  type KeyPair,
} from '../../../common/src/csr';
export { type CrlResult, CrlStore } from './crl-store';
export { JWT_SVID_CACHE_MAX_ENTRIES, JwtSvidCache, type JwtSvidCacheOptions } from './jwt-svid-cache';
export {
  type AgentEvent,
  type AgentRunResult,
  explainRefusal,
  NodeAgent,
  type NodeAgentOptions,
} from './node-agent';
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
export {
  EK_TYPES,
  type EkType,
  NodeTpm,
  type TpmEndorsement,
  type TpmQuote,
  TpmSession,
} from './tpm/node-tpm';
export { TpmAttestor, type TpmAttestorOptions } from './tpm/tpm-attestor';
export {
  credentialFile,
  ekIdentifier,
  nodeIdOfEk,
  parseTpmChallenge,
  qualifyingData,
  type TpmChallenge,
} from './tpm/tpm-wire';
export { DEFAULT_TCTI, resolveTcti, Tpm2Tools, type Tpm2ToolsOptions } from './tpm/tpm2-tools';
export { RevocationFollower, type RevocationFollowerOptions } from './revocation-follower';
export {
  isNodeCredentialRefusal,
  type ReconcileResult,
  type WorkloadAction,
  type WorkloadResult,
  WorkloadRotator,
  type WorkloadRotatorOptions,
} from './workload-rotator';
export {
  type PeerCredentialReader,
  type PeerCredentials,
  loadPeerCredentialReader,
} from './workload-api/peer-credentials';
export { WORKLOAD_PROTO_FILE, workloadApiService } from './workload-api/proto';
export { WorkloadApiServer, type WorkloadApiServerOptions } from './workload-api/server';
export {
  type HeldSvid,
  type ServedEntry,
  WorkloadApiState,
  type WorkloadApiView,
} from './workload-api/workload-api-state';
export {
  type FileOwner,
  type NewWorkload,
  realWorkloadFileOps,
  type StoredWorkload,
  WORKLOAD_NAME_RE,
  type WorkloadFileOps,
  WorkloadStore,
} from './workload-store';
