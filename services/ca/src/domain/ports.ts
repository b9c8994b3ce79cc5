/**
 * The only seam between the domain and the outside (storage, crypto keys). Interfaces are small,
 * per aggregate, and speak domain objects: no knex rows cross this line.
 */

export type { Signer } from '../ground/signer';

/**
 * A CA private key wrapped under the KEK (see pki/kek.ts), or with `alg: 'pkcs11'` a reference to a
 * key kept in a PKCS#11 token: `kekId` the token, `blob` the key's CKA_ID (domain/key-custody.ts).
 * `alg: 'none'` (NO_KEY in domain/upstream-ca.ts): a CA whose key Baton does not hold, an outside
 * root or intermediate of an upstream CA; nothing unwraps it.
 */
export interface WrappedKey {
  alg: 'A256GCM' | 'pkcs11' | 'none';
  kekId: string;
  blob: Buffer;
}

export interface Installation {
  trustDomain: string;
  /** The CA's public (https) URL: the API, the JWT-SVID issuer; CRL and OCSP URLs unless publicHttpUrl. */
  publicUrl: string;
  /**
   * The plain-HTTP publication URL (`ca init --public-http-url`): CRL distribution points and OCSP
   * URLs point here when set (domain/urls.ts publicationUrlOf).
   */
  publicHttpUrl?: string;
  nodeTtlMs: number;
  workloadTtlMs: number;
  adminTtlMs: number;
  createdAt: Date;
}

export type CaKind = 'root' | 'intermediate';

export interface CaRecord {
  id: string;
  kind: CaKind;
  parentId: string | null;
  certificateDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  /**
   * Intermediates: the one that signs new leaves (exactly one is active). Roots: in the trust
   * bundle (two while a root rotation runs; the finish clears it on the old one).
   */
  active: boolean;
  wrappedKey: WrappedKey;
  createdAt: Date;
}

/**
 * `baton ca init --upstream-csr`: the signing CA's key and CSR, waiting for the certificate an
 * outside root signs (`baton ca import`), with the settings `ca init` was given. One row at most.
 */
export interface PendingUpstream {
  /** The settings of `ca init`; the installation's createdAt is the import's time. */
  installation: Omit<Installation, 'createdAt'>;
  /** The CA id the signing CA will have (caIdFor its key): the wrapped key's additional data. */
  caId: string;
  wrappedKey: WrappedKey;
  /** SubjectPublicKeyInfo DER of the signing CA's key: the imported certificate must certify it. */
  spki: Buffer;
  /** The PKCS#10 request written to the --upstream-csr file. */
  csrDer: Buffer;
  createdAt: Date;
}

export interface UpstreamRepository {
  getPending(): Promise<PendingUpstream | null>;
  /** Records the pending upstream CA; ERR_UPSTREAM_PENDING if one is pending already. */
  savePending(p: PendingUpstream): Promise<void>;
  /** Within the import's transaction: deletes the pending row of `caId`; false if there is none. */
  deletePending(caId: string): Promise<boolean>;
}

export type CertificateKind = 'node' | 'workload' | 'admin' | 'server';
export type CertificateStatus = 'valid' | 'superseded' | 'revoked';

export interface CertificateRecord {
  /** Lowercase hex, no leading zeros stripped: exactly the INTEGER's magnitude bytes. */
  serial: string;
  caId: string;
  kind: CertificateKind;
  spiffeId: string;
  /** The node this certificate identifies (node SVIDs). */
  nodeId: string | null;
  /** The node through which a workload certificate was issued, for cascading revocation. */
  issuedVia: string | null;
  notBefore: Date;
  notAfter: Date;
  keyFingerprint: string;
  der: Buffer;
  status: CertificateStatus;
  createdAt: Date;
  /** Set when status is revoked (RFC 5280 §5.3.1 reason code). */
  revokedAt?: Date | null;
  revocationReason?: number | null;
}

/**
 * A second certificate of a CA's key and subject by another issuer (RFC 5280 §3.2 cross-certificate):
 * during a root rotation, the old root's certificate of the new signing CA, so that a peer trusting
 * only the old root verifies leaves the new one signs.
 */
export interface CrossCertificateRecord {
  caId: string;
  issuerId: string;
  certificateDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  createdAt: Date;
}

/** Unexpired, unrevoked, unsuperseded certificates issued by some CAs (`baton ca status`). */
export interface CertificatesUnder {
  /** Distinct nodes with such a node certificate. */
  nodes: number;
  workloadCertificates: number;
}

export interface CaRepository {
  getInstallation(): Promise<Installation | null>;
  listCas(): Promise<CaRecord[]>;
  listCrossCertificates(): Promise<CrossCertificateRecord[]>;
  /**
   * Locks the installation row until the transaction ends: CA set changes (root rotation start and
   * finish) on several replicas run one after the other and each sees the other's result.
   */
  lockCaSet(): Promise<void>;
  /** Adds a root (root rotation); it is in the bundle at once. */
  addRoot(ca: CaRecord): Promise<void>;
  addCrossCertificate(cross: CrossCertificateRecord): Promise<void>;
  /** Takes roots out of the bundle (root rotation finish); how many were in it. */
  retireRoots(ids: readonly string[]): Promise<number>;
  countCertificatesUnder(caIds: readonly string[], now: Date): Promise<CertificatesUnder>;
  /** Records the installation and its CAs at once; ERR_ALREADY_INITIALIZED if one exists. */
  initialize(installation: Installation, cas: CaRecord[]): Promise<void>;
  /** Adds a signing intermediate and makes it the only active one (CA rotation). */
  addActiveIntermediate(ca: CaRecord): Promise<void>;
}

/**
 * A JWT-SVID signing key (ES256, P-256): one per signing intermediate, made with it (`ca init`,
 * `ca rotate`) and retired with it. Its private key is PKCS#8 wrapped under the KEK with the kid
 * as additional data, like a CA key; rows are never deleted (domain/jwt-keys.ts).
 */
export interface JwtKeyRecord {
  /** RFC 7638 JWK thumbprint of the public key (base64url SHA-256). */
  kid: string;
  /** The signing intermediate this key belongs to. */
  caId: string;
  /** SubjectPublicKeyInfo DER of the public key. */
  spki: Buffer;
  wrappedKey: WrappedKey;
  createdAt: Date;
  /** Set when another key took over (rotation); the key stays published MAX_JWT_TTL_MS after. */
  retiredAt: Date | null;
}

export interface JwtKeyRepository {
  /** Every key, retired ones included, oldest first (created_at, then kid). */
  list(): Promise<JwtKeyRecord[]>;
  /** ERR_CONFLICT when the kid exists or the CA already has a key (unique indexes: concurrent inserts, one wins). */
  insert(k: JwtKeyRecord): Promise<void>;
  /** Sets retired_at = `at` on every key but `kid` that has none; returns how many. Retired keys keep their time. */
  retireOthers(kid: string, at: Date): Promise<number>;
}

/**
 * A position in one admin list's order (issue 20, keyset paging): the sort key of the last row a
 * page returned. Each list has its own shape, the same in every implementation:
 * nodes `[id]`, certificates `[created_at, serial]`, entries `[name]`, audit `[at, id]`, where a
 * time is the column's exact value as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds: what
 * PostgreSQL stores, finer than a Date) so that a key never rounds past a row. It travels to the
 * client inside a signed cursor (domain/list-cursor.ts) and comes back unchanged.
 */
export type PageKey = readonly (string | number)[];

export interface PageRequest {
  /** At most this many rows (1 to 1000, domain/admin-lists.ts). */
  limit: number;
  /** Only rows strictly after this position in the list's order; null: from the start. */
  after: PageKey | null;
}

export interface Page<T> {
  items: T[];
  /** The key of the last item when at least one more row follows it; null on the last page. */
  next: PageKey | null;
}

/** The filters of `GET /v1/admin/certificates`, combined with AND. */
export type CertificatePageFilter = Pick<CertificateFilter, 'nodeId' | 'status' | 'expiredAt' | 'validAt'>;

/** The filters of `GET /v1/admin/nodes`, combined with AND. */
export interface NodePageFilter {
  status?: NodeStatus;
  role?: NodeRole;
}

/** The filters of `GET /v1/admin/audit`, combined with AND. */
export type AuditPageFilter = Omit<AuditFilter, 'limit'>;

/**
 * The HMAC key of admin list cursors (domain/list-cursor.ts): one for every replica, so it lives in
 * the database they share.
 */
export interface ListCursorKeyRepository {
  /**
   * The stored key. When there is none yet, `candidate` is stored first; of concurrent first
   * calls (several replicas at once) one candidate wins and every caller gets that one.
   */
  getOrCreate(candidate: Buffer, at: Date): Promise<Buffer>;
}

export interface CertificateFilter {
  nodeId?: string;
  kind?: CertificateKind;
  status?: CertificateStatus;
  /** 'expired' filters on notAfter <= now. */
  expiredAt?: Date;
  validAt?: Date;
  limit?: number;
}

export interface CertificateRepository {
  /**
   * ERR_CONFLICT when the serial exists (the caller draws a new one); ERR_KEY_REUSED when the
   * public key is already certified (one key, one identity, enforced by a unique index).
   */
  insert(record: CertificateRecord): Promise<void>;
  findBySerial(serial: string): Promise<CertificateRecord | null>;
  /** Reads and row-locks a certificate for the rest of the transaction (SELECT … FOR UPDATE). */
  lockBySerial(serial: string): Promise<CertificateRecord | null>;
  /** Certificates that certify this key, any identity (key reuse checks). */
  findByKeyFingerprint(fingerprint: string): Promise<CertificateRecord[]>;
  /** Moves the node's valid certificates of `kind` to superseded; returns how many. */
  supersedeForNode(nodeId: string, kind: CertificateKind): Promise<number>;
  /** Unpaged, newest first, at most `limit` (default 1000): a node's own view and tests. */
  list(filter: CertificateFilter): Promise<CertificateRecord[]>;
  /**
   * One page, newest first: by created_at descending, then serial descending (serials are unique,
   * so the order is total). `nodeId`: the node's own certificates and those issued through it.
   */
  page(filter: CertificatePageFilter, page: PageRequest): Promise<Page<CertificateRecord>>;
  /**
   * Retention (domain/retention.ts): deletes up to `limit` certificates whose notAfter is before
   * `expiredBefore`, whatever their status, earliest notAfter first; returns how many. One short
   * statement that picks rows by the not_after index and deletes them by primary key, skipping
   * rows another transaction holds (FOR UPDATE SKIP LOCKED): it never waits on a renewal or a
   * revocation, and they never wait on it for long (only on rows past notAfter, which they skip).
   */
  deleteExpired(expiredBefore: Date, limit: number): Promise<number>;
}

/** What a workload issuance re-checks in the database, in the very statement that records it. */
export interface WorkloadGuard {
  /** The node the request's client certificate names, and that certificate's serial and DER. */
  nodeId: string;
  peerSerial: string;
  /** The presented certificate must be the very one recorded under peerSerial (domain/caller.ts). */
  peerDer: Buffer;
  now: Date;
  /** The entry the certificate was built from: it must still exist, unchanged, parented to the node. */
  entry: EntryRecord;
}

export interface IssuanceRepository {
  /**
   * Records a workload certificate and its audit row in one statement (one commit, one round trip),
   * only while the guard holds: the peer certificate is the node's current one (valid, unexpired),
   * the node is active, read FOR SHARE so that a revocation committing meanwhile either waits for
   * this insert and then revokes the new certificate too, or wins and nothing is written; the entry
   * is unchanged. Returns false, having written nothing, when the guard does not hold.
   */
  recordWorkloadGuarded(record: CertificateRecord, audit: AuditEvent, guard: WorkloadGuard): Promise<boolean>;
  /**
   * A node renewal in one statement: locks the node (FOR UPDATE, active) then the presented
   * certificate (FOR UPDATE, the node's, valid, unexpired), the order of a node revocation;
   * supersedes the node's valid node certificates, records when the node was seen, inserts the
   * new certificate and its audit row. False, having written nothing, when the guard does not
   * hold (of two concurrent renewals of one certificate, the second finds it superseded).
   */
  recordRenewalGuarded(record: CertificateRecord, audit: AuditEvent, guard: RenewalGuard): Promise<boolean>;
  /**
   * Whether a node may mint a JWT-SVID for `guard.spiffeId` now, in one read that writes and locks
   * nothing: the caller rule for a node (domain/caller.ts: the presented certificate is the node
   * certificate recorded under its serial, byte for byte, valid and unexpired at `now`; the node is
   * active) and an entry with that SPIFFE ID parented to the node. Concurrent calls may share one
   * statement, each row judged on its own. False when any part does not hold: the use case then
   * asks the caller module, which names the reason.
   */
  jwtMintAllowed(guard: JwtMintGuard): Promise<boolean>;
  /**
   * An attestation in one statement (one round trip, one commit): locks the node row if there is
   * one (FOR UPDATE, the lock order of a node revocation), then the evidence's row; only when the
   * node is as `guard.node` says (new and still absent, or existing, active, with that role and
   * lifetime and unchanged since the statement's snapshot) and the evidence can be spent, it spends
   * it (one use of the token, or the nonce), inserts the node or records its attestation,
   * supersedes its valid node certificates, inserts the certificate and its audit row. Anything
   * else writes nothing and says why. A key already certified is ERR_KEY_REUSED and a serial taken
   * ERR_CONFLICT, with nothing written either. N concurrent attestations on a 1-use token, from any
   * number of replicas: exactly one 'recorded'.
   */
  recordAttestation(
    record: CertificateRecord,
    audit: AuditEvent,
    guard: AttestationGuard,
  ): Promise<AttestationOutcome>;
}

/**
 * What an attestation spends, as data the statement that records the certificate carries: one use
 * of a join token, or a single-use nonce of `attestation_nonces` issued for `method`.
 */
export type EvidenceSpend =
  | { kind: 'token'; tokenId: string }
  | { kind: 'nonce'; nonce: string; method: string };

/** The node an attestation's certificate was built for, as the recording statement must find it. */
export interface AttestedNode {
  id: string;
  role: NodeRole;
  /** The lifetime the certificate was built with: an existing node's own, a new node's to record. */
  certTtlMs: number | null;
  /** true: the node exists and is attested again (updated); false: it is created. */
  existing: boolean;
}

export interface AttestationGuard {
  spend: EvidenceSpend;
  node: AttestedNode;
  /** The attestation method, recorded on the node. */
  method: string;
  now: Date;
}

/**
 * The answer of IssuanceRepository.recordAttestation. Anything but 'recorded' wrote nothing:
 * 'evidence-spent' the token or nonce is unknown, expired or used up; 'node-revoked' and
 * 'node-role' the node is revoked or has another role; 'node-changed' the node is not as the
 * certificate was built for it any more (created, attested or renewed meanwhile): build again.
 */
export type AttestationOutcome =
  | 'recorded'
  | 'evidence-spent'
  | 'node-revoked'
  | 'node-role'
  | 'node-changed';

/** What a JWT-SVID mint checks in the database before it signs (IssuanceRepository.jwtMintAllowed). */
export interface JwtMintGuard {
  nodeId: string;
  peerSerial: string;
  /** The presented certificate must be the very one recorded under peerSerial (domain/caller.ts). */
  peerDer: Buffer;
  now: Date;
  /** An entry parented to the node must have exactly this SPIFFE ID. */
  spiffeId: string;
}

export interface RenewalGuard {
  nodeId: string;
  peerSerial: string;
  /** The presented certificate must be the very one recorded under peerSerial (domain/caller.ts). */
  peerDer: Buffer;
  now: Date;
}

export type NodeRole = 'worker' | 'manager';
export const NODE_ROLES: readonly NodeRole[] = ['worker', 'manager'];
export type NodeStatus = 'active' | 'revoked';

export interface NodeRecord {
  id: string;
  role: NodeRole;
  status: NodeStatus;
  attestationMethod: string;
  /** Node certificate lifetime chosen at join (token --node-ttl); null: the installation default. */
  certTtlMs: number | null;
  createdAt: Date;
  lastAttestedAt: Date;
  lastSeenAt: Date | null;
  revokedAt: Date | null;
  revocationReason: number | null;
}

export interface NodeRepository {
  /** ERR_CONFLICT when the id exists. */
  insert(node: NodeRecord): Promise<void>;
  findById(id: string): Promise<NodeRecord | null>;
  /** The node a node certificate identifies (no lock). */
  findByCertificate(serial: string): Promise<NodeRecord | null>;
  /** Reads and row-locks a node for the rest of the transaction. */
  lockById(id: string): Promise<NodeRecord | null>;
  /** Every node, oldest first, unpaged (tests and small installations; the API pages). */
  list(): Promise<NodeRecord[]>;
  /** One page of nodes by id (the database's text order; ids are unique). */
  page(filter: NodePageFilter, page: PageRequest): Promise<Page<NodeRecord>>;
  /** Nodes that are active and hold a valid node certificate unexpired at `now` (a metric). */
  countActive(now: Date): Promise<number>;
  recordSeen(id: string, at: Date): Promise<void>;
  markRevoked(id: string, at: Date, reason: number): Promise<void>;
  /**
   * Lifts a revocation: a revoked node becomes active again with `role`, its revocation time and
   * reason cleared (its certificates stay revoked). Only `baton node enroll` of a TPM does this
   * (domain/tpm-enrollment.ts). False, having changed nothing, when the node is not revoked.
   */
  reinstate(id: string, role: NodeRole): Promise<boolean>;
}

export interface TokenRecord {
  id: string;
  /** SHA-256 of the secret; the secret itself is never stored. */
  secretHash: Buffer;
  role: NodeRole;
  expiresAt: Date;
  usesAllowed: number;
  usesLeft: number;
  nodeName: string | null;
  nodeTtlMs: number | null;
  createdBy: string;
  createdAt: Date;
}

/** A join token and the node its name binds (null: unbound, or no such node yet). */
export interface TokenForAttestation {
  token: TokenRecord;
  boundNode: NodeRecord | null;
}

export interface TokenRepository {
  insert(token: TokenRecord): Promise<void>;
  findById(id: string): Promise<TokenRecord | null>;
  /**
   * The token and, when it binds a node name, that node's record (null: no such node yet), in one
   * read: all an attestation needs to know before it signs. Uses are spent by
   * IssuanceRepository.recordAttestation.
   */
  findForAttestation(id: string): Promise<TokenForAttestation | null>;
  /** Spends every remaining use of the tokens bound to this node name; returns how many tokens. */
  spendBoundTo(nodeName: string): Promise<number>;
}

/** Single-use server nonces (challenges); one is spent by IssuanceRepository.recordAttestation. */
export interface NonceRepository {
  insert(nonce: string, method: string, expiresAt: Date): Promise<void>;
  /** Deletes up to `limit` nonces that expired before `now`, used or not; returns how many. */
  purgeExpired(now: Date, limit: number): Promise<number>;
}

/** An EK admitted by `baton node enroll --tpm-ek-id` (issue 19). */
export interface TpmEnrollmentRecord {
  /** The EK identifier: 64 lowercase hex digits (pki/tpm/names.ts ekIdentifier). */
  ekId: string;
  role: NodeRole;
  /** Who enrolled it last, and when (an enrollment again replaces both, and the role). */
  enrolledBy: string;
  enrolledAt: Date;
}

/** A TPM manufacturer CA added by `baton tpm ca add`: every TPM whose EK certificate it issued may join. */
export interface TpmManufacturerCaRecord {
  /** Lowercase hex SHA-256 of the certificate DER. */
  fingerprint: string;
  certificateDer: Buffer;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  /** The role of the nodes it admits. */
  role: NodeRole;
  createdBy: string;
  createdAt: Date;
}

/**
 * A TPM attestation challenge (POST /v1/attest/challenge, method `tpm`): what the answer is checked
 * against. Its nonce is an `attestation_nonces` row like x509pop's, spent the same way
 * (NonceRepository.use); the secret itself is never stored, only its hash.
 */
export interface TpmChallengeRecord {
  nonce: string;
  expiresAt: Date;
  ekId: string;
  role: NodeRole;
  /** What admitted the EK: `enrollment`, or `manufacturer_ca:<fingerprint>`. */
  admittedBy: string;
  /** SubjectPublicKeyInfo DER of the attestation key: it verifies the quote. */
  akSpki: Buffer;
  /** The AK's qualified name under the EK: the quote's qualifiedSigner must be exactly this. */
  akQualifiedName: Buffer;
  /** SHA-256 of the credential MakeCredential protected. */
  secretHash: Buffer;
}

export interface TpmRepository {
  /** Admits an EK, or replaces the role and enroller of one already admitted (an upsert). */
  enroll(e: TpmEnrollmentRecord): Promise<void>;
  findEnrollment(ekId: string): Promise<TpmEnrollmentRecord | null>;
  /** ERR_CONFLICT when a CA with this fingerprint exists. */
  addManufacturerCa(ca: TpmManufacturerCaRecord): Promise<void>;
  /** Every manufacturer CA, oldest first (then by fingerprint). */
  listManufacturerCas(): Promise<TpmManufacturerCaRecord[]>;
  /**
   * Records a challenge: its `attestation_nonces` row (method `tpm`, unused, expiring at
   * `expiresAt`) and its own row, in one statement, so that neither exists without the other.
   * ERR_CONFLICT when the nonce exists. Purging the nonce (NonceRepository.purgeExpired) deletes
   * the challenge with it.
   */
  insertChallenge(c: TpmChallengeRecord): Promise<void>;
  /** The challenge of nonce `nonce` if it is a `tpm` nonce, unused and unexpired at `now`; else null. */
  findChallenge(nonce: string, now: Date): Promise<TpmChallengeRecord | null>;
}

/** A selector the agent matches workloads by (`unix:uid:N`, `unix:gid:N`, `unix:path:/abs`). */
export type Selector =
  | { type: 'unix'; key: 'uid' | 'gid'; value: number }
  | { type: 'unix'; key: 'path'; value: string };

export interface EntryRecord {
  name: string;
  spiffeId: string;
  parentNodeId: string;
  selectors: Selector[];
  dnsNames: string[];
  allowWildcardDns: boolean;
  /** null: the installation's workload TTL. */
  ttlMs: number | null;
  /** The Workload API `hint` (which SVID to use when a caller gets several); absent: none. */
  hint?: string;
  createdBy: string;
  createdAt: Date;
}

export interface EntryRepository {
  /** ERR_CONFLICT when the name, or the SPIFFE ID under that parent, exists. */
  insert(entry: EntryRecord): Promise<void>;
  findByName(name: string): Promise<EntryRecord | null>;
  list(filter?: { parentNodeId?: string }): Promise<EntryRecord[]>;
  /** One page of every entry by name (the database's text order; names are unique). */
  page(page: PageRequest): Promise<Page<EntryRecord>>;
  findForNode(parentNodeId: string, spiffeId: string): Promise<EntryRecord | null>;
  /** true when it existed. */
  delete(name: string): Promise<boolean>;
}

export interface RevokedEntry {
  serial: string;
  revokedAt: Date;
  reason: number;
}

export interface RevocationEvent {
  id: number;
  /**
   * `entry`: an entry parented to `nodeId` was created or deleted (no serials): the node's agent
   * lists its entries at once. Only feed callers that ask for them see these (`entries=1`).
   */
  kind: 'node' | 'certificate' | 'entry';
  nodeId: string | null;
  serials: string[];
  reason: number;
  actor: string;
  createdAt: Date;
}

export interface RevocationRepository {
  /**
   * Marks revoked every unexpired, not yet revoked certificate that is `serial`, or that identifies
   * `nodeId` or was issued through it. Returns the serials it revoked.
   */
  revokeCertificates(
    target: { serial: string } | { nodeId: string },
    at: Date,
    reason: number,
  ): Promise<string[]>;
  appendEvent(e: Omit<RevocationEvent, 'id'>): Promise<RevocationEvent>;
  eventsSince(id: number, limit: number): Promise<RevocationEvent[]>;
  lastEventId(): Promise<number>;
  /** Revoked certificates of a CA that have not expired at `now` (RFC 5280 §5: expired ones drop off). */
  revokedForCa(caId: string, now: Date): Promise<RevokedEntry[]>;
}

export interface CrlRecord {
  caId: string;
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: number;
  der: Buffer;
}

export interface CrlRepository {
  latest(caId: string): Promise<CrlRecord | null>;
  /** Within a transaction: waits for and holds the one CRL-builder lock (all replicas). */
  lockBuilder(): Promise<void>;
  /** The next CRL number from the shared sequence: only grows, never repeats. */
  nextNumber(): Promise<bigint>;
  insert(crl: CrlRecord): Promise<void>;
}

export interface AuditEvent {
  at: Date;
  event: string;
  /** SPIFFE ID of the caller, `cli:<user>` for direct database commands, or `anonymous`. */
  actor: string;
  source: string | null;
  subject: string | null;
  outcome: 'success' | 'failure';
  details: Record<string, unknown>;
}

export interface AuditRecord extends AuditEvent {
  id: number;
  sealSeq: number | null;
  prevHash: Buffer | null;
  hash: Buffer | null;
}

export interface AuditFilter {
  actor?: string;
  subject?: string;
  event?: string;
  since?: Date;
  until?: Date;
  limit?: number;
}

export interface AuditRepository {
  append(e: AuditEvent): Promise<void>;
  /**
   * Seals up to `limit` unsealed rows into the hash chain, holding the one sealer lock; `hashOf`
   * computes a row's hash from its content and the previous hash. Returns how many it sealed.
   */
  seal(limit: number, hashOf: (row: AuditRecord, prevHash: Buffer | null) => Buffer): Promise<number>;
  /** Newest first by id, at most `limit` (default 100, at most 10000): tests and internal reads. */
  list(filter: AuditFilter): Promise<AuditRecord[]>;
  /** One page, newest first: by `at` descending, then id descending (ids are unique). */
  page(filter: AuditPageFilter, page: PageRequest): Promise<Page<AuditRecord>>;
  /** Sealed rows in chain order, from seal_seq > after, at most `limit`. */
  sealedAfter(after: number, limit: number): Promise<AuditRecord[]>;
  countUnsealed(): Promise<number>;
  /** The newest sealed row (the chain head), or null before the first seal. */
  head(): Promise<AuditRecord | null>;
  /**
   * What a prune of the rows recorded before `before` may delete now (domain/audit-retention.ts):
   * among the oldest `limit` sealed rows in chain order, the run from the first one up to the
   * first whose `at` is not before `before`, never the chain head. `complete`: the run ended at
   * such a row or the head (the prune is done after it), not at `limit`. Null when there is none.
   */
  pruneCut(before: Date, limit: number): Promise<AuditPruneCut | null>;
  /** Deletes up to `limit` sealed rows with seal_seq <= `through`, lowest first; returns how many. */
  deleteSealedThrough(through: number, limit: number): Promise<number>;
}

/** Chain positions (seal_seq) of a prune: rows `first` to `through`, both included. */
export interface AuditPruneCut {
  first: number;
  through: number;
  complete: boolean;
}

/**
 * Named locks for work that one replica at a time should do (the retention job): held across
 * replicas on one database, never in a process's memory.
 */
export type JobLockName = 'certificate-retention';

export interface Repositories {
  revocations: RevocationRepository;
  crls: CrlRepository;
  audit: AuditRepository;
  entries: EntryRepository;
  cas: CaRepository;
  upstream: UpstreamRepository;
  certificates: CertificateRepository;
  issuances: IssuanceRepository;
  nodes: NodeRepository;
  tokens: TokenRepository;
  nonces: NonceRepository;
  jwtKeys: JwtKeyRepository;
  listCursorKey: ListCursorKeyRepository;
  tpm: TpmRepository;
}

export interface Storage extends Repositories {
  /** Runs `fn` in one database transaction: all its writes land, or none. */
  transaction<T>(fn: (tx: Repositories) => Promise<T>): Promise<T>;
  /**
   * Runs `fn` while holding lock `name`, one holder at a time across every replica of the
   * database; `null`, without running `fn`, when another holder has it (it does not wait). `fn`'s
   * statements are its own short ones, not one transaction: the lock is not a transaction's.
   */
  exclusive<T>(name: JobLockName, fn: () => Promise<T>): Promise<{ value: T } | null>;
  /** Resolves when the database answers (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
