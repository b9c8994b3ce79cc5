/**
 * The one error class of the identity library, with a stable code (as jose's JOSEError): callers
 * and tests branch on `code`, never on the message.
 */
export type IdentityErrorCode =
  /** A file of the identity could not be read. */
  | 'ERR_IDENTITY_FILES'
  /** key.pem does not hold the private key of the first certificate of cert.pem. */
  | 'ERR_KEY_MISMATCH'
  /** The chain does not lead to a root of the bundle. */
  | 'ERR_CHAIN_INVALID'
  /** A certificate of the chain is expired or not yet valid. */
  | 'ERR_CERT_EXPIRED'
  /** The leaf is not an X.509-SVID (SPIFFE X.509-SVID §2, §5.2). */
  | 'ERR_NOT_SVID'
  /** A peer presented no certificate, or one that the TLS stack did not verify. */
  | 'ERR_PEER_UNVERIFIED'
  /** A verified peer whose SPIFFE ID the authorizer refused. */
  | 'ERR_PEER_NOT_AUTHORIZED'
  /** The peer's certificate, or a CA certificate of its chain, is revoked (a CRL or the revocation feed). */
  | 'ERR_PEER_REVOKED'
  /** The revocation status of the peer is unknown (stale or missing CRLs, feed down) and the policy fails closed. */
  | 'ERR_REVOCATION_STALE'
  /** A CRL does not parse, or is not signed by a CA of the trust bundle or a known intermediate. */
  | 'ERR_CRL_INVALID'
  /** A revocation source (CRL file, /v1/crl.pem, the feed) could not be read or reached. */
  | 'ERR_REVOCATION_SOURCE'
  /** No Workload API socket was given (option or SPIFFE_ENDPOINT_SOCKET), or it is not a unix: address. */
  | 'ERR_WORKLOAD_API_ADDRESS'
  /** The Workload API could not be reached, or its stream kept failing, or gave no usable SVID in time. */
  | 'ERR_WORKLOAD_API_UNAVAILABLE'
  /** The agent answered PermissionDenied: no registration entry matches the calling process. */
  | 'ERR_WORKLOAD_API_DENIED'
  /** A Workload API message holds no SVID of the selection, or one whose spiffe_id is not its certificate's. */
  | 'ERR_WORKLOAD_API_RESPONSE';

export class IdentityError extends Error {
  override readonly name = 'IdentityError';
  constructor(
    readonly code: IdentityErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export const isIdentityError = (e: unknown): e is IdentityError => e instanceof IdentityError;
