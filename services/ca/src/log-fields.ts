/** Log field names, one place (spire telemetry/names.go). Never add a field for a secret. */
export const F = {
  requestId: 'req_id',
  method: 'method',
  route: 'route',
  status: 'status',
  durationMs: 'duration_ms',
  errorCode: 'error_code',
  serial: 'serial',
  spiffeId: 'spiffe_id',
  nodeId: 'node_id',
  caId: 'ca_id',
  url: 'url',
  trustDomain: 'trust_domain',
  /** Which ECDSA verifier checks CSRs: `native` (services/ca/native) or `node:crypto`. */
  csrVerifier: 'csr_verifier',
  remoteAddress: 'remote_addr',
  peer: 'peer_spiffe_id',
  notAfter: 'not_after',
  /** How many rows a job deleted. */
  rows: 'rows',
  /** Rows recorded (audit) or expired (certificates) before this time were the job's. */
  cutoff: 'cutoff',
  err: 'err',
} as const;
