/**
 * The only seam between the domain and the outside (storage, crypto keys). Interfaces are small,
 * per aggregate, and speak domain objects: no knex rows cross this line.
 */

/** Signs the DER to be signed; `algorithmIdentifier` is the matching DER AlgorithmIdentifier. */
export interface Signer {
  readonly algorithmIdentifier: Buffer;
  sign(data: Uint8Array): Buffer;
}

/** A CA private key wrapped under the KEK (see pki/kek.ts). */
export interface WrappedKey {
  alg: 'A256GCM';
  kekId: string;
  blob: Buffer;
}

export interface Installation {
  trustDomain: string;
  /** The CA's public URL: CRL distribution points and OCSP URLs point here. */
  publicUrl: string;
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
  /** The intermediate that signs new leaves; exactly one is active. Roots are always trusted. */
  active: boolean;
  wrappedKey: WrappedKey;
  createdAt: Date;
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
}

export interface CaRepository {
  getInstallation(): Promise<Installation | null>;
  listCas(): Promise<CaRecord[]>;
  /** Records the installation and its CAs at once; ERR_ALREADY_INITIALIZED if one exists. */
  initialize(installation: Installation, cas: CaRecord[]): Promise<void>;
}

export interface CertificateRepository {
  /** ERR_CONFLICT when the serial exists (the caller draws a new one). */
  insert(record: CertificateRecord): Promise<void>;
  findBySerial(serial: string): Promise<CertificateRecord | null>;
  /** Certificates that certify this key, any identity (key reuse checks). */
  findByKeyFingerprint(fingerprint: string): Promise<CertificateRecord[]>;
}

export interface Repositories {
  cas: CaRepository;
  certificates: CertificateRepository;
}

export interface Storage extends Repositories {
  /** Runs `fn` in one database transaction: all its writes land, or none. */
  transaction<T>(fn: (tx: Repositories) => Promise<T>): Promise<T>;
  /** Resolves when the database answers (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
