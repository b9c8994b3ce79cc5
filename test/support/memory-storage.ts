import { AsyncLocalStorage } from 'node:async_hooks';
import type {
  AuditEvent,
  AuditFilter,
  AuditRecord,
  AuditRepository,
  CaRecord,
  CaRepository,
  CertificateFilter,
  CertificateRecord,
  CertificateRepository,
  CrlRecord,
  CrlRepository,
  CrossCertificateRecord,
  EntryRecord,
  EntryRepository,
  EvidenceSpend,
  Installation,
  IssuanceRepository,
  JwtKeyRecord,
  JobLockName,
  JwtKeyRepository,
  ListCursorKeyRepository,
  NodeRecord,
  NodeRepository,
  NonceRepository,
  Page,
  PageKey,
  PageRequest,
  PendingUpstream,
  Repositories,
  RevocationEvent,
  RevocationRepository,
  RevokedEntry,
  Storage,
  TokenRecord,
  TokenRepository,
  TpmChallengeRecord,
  TpmEnrollmentRecord,
  TpmManufacturerCaRecord,
  TpmRepository,
  UpstreamRepository,
} from '../../services/ca/src/domain/ports';
import { BatonError } from '../../services/ca/src/ground/errors';

/**
 * The Storage port in memory, for domain unit tests that need no database. It follows the knex
 * implementation (services/ca/src/storage/knex/) statement by statement, and the storage contract
 * suite (test/contract/storage.contract.test.ts) holds both to the same cases:
 * - the same constraints and codes: a duplicate key is ERR_CONFLICT, a certified key fingerprint
 *   ERR_KEY_REUSED, a NUL character in text ERR_BAD_REQUEST; a foreign key or check violation is
 *   a plain error with PostgreSQL's SQLSTATE in `code` (23503, 23514), as the drivers give it;
 * - sequences (revocation event ids, audit ids, CRL numbers) only grow, also across a rollback;
 * - `transaction(fn)` works on a copy of the state and publishes it when fn resolves; a statement
 *   that fails inside it aborts it (later statements fail, and it rolls back even if fn swallows
 *   the error), as in PostgreSQL;
 * - every result is a copy: mutating one changes nothing stored.
 *
 * Concurrency is simpler than PostgreSQL's row locks, and stricter: writes (a transaction, or one
 * statement outside a transaction) run one at a time, in arrival order; reads outside a
 * transaction see the last committed state at once, never a transaction's uncommitted writes. So
 * every lock the domain takes (lockById, lockBySerial, lockBuilder, the sealer's lock) holds, and
 * a write outside a transaction that PostgreSQL would run beside an unrelated transaction waits
 * for it here. A write outside the transaction issued from inside `transaction(fn)` would wait for
 * fn forever, so it is refused with an error that says so (in PostgreSQL it would not be rolled
 * back with the transaction, which is rarely what the caller meant).
 */

interface NonceRow {
  nonce: string;
  method: string;
  expiresAt: Date;
  usedAt: Date | null;
}

/** Stored records are private copies and never mutated in place: an update replaces the record. */
interface State {
  installation: Installation | null;
  cas: Map<string, CaRecord>;
  certificates: Map<string, CertificateRecord>;
  nodes: Map<string, NodeRecord>;
  tokens: Map<string, TokenRecord>;
  nonces: Map<string, NonceRow>;
  entries: Map<string, EntryRecord>;
  events: Map<number, RevocationEvent>;
  crls: CrlRecord[];
  audit: Map<number, AuditRecord>;
  jwtKeys: Map<string, JwtKeyRecord>;
  cross: Map<string, CrossCertificateRecord>;
  upstream: PendingUpstream | null;
  listCursorKey: Buffer | null;
  tpmEnrollments: Map<string, TpmEnrollmentRecord>;
  tpmCas: Map<string, TpmManufacturerCaRecord>;
  /** tpm_challenges, keyed by nonce: the nonce's own row is in `nonces`. */
  tpmChallenges: Map<string, Omit<TpmChallengeRecord, 'expiresAt'>>;
}

/** PostgreSQL sequences: outside every transaction, never rolled back. */
interface Sequences {
  event: number;
  audit: number;
  crl: bigint;
}

const emptyState = (): State => ({
  installation: null,
  cas: new Map(),
  certificates: new Map(),
  nodes: new Map(),
  tokens: new Map(),
  nonces: new Map(),
  entries: new Map(),
  events: new Map(),
  crls: [],
  audit: new Map(),
  jwtKeys: new Map(),
  cross: new Map(),
  upstream: null,
  listCursorKey: null,
  tpmEnrollments: new Map(),
  tpmCas: new Map(),
  tpmChallenges: new Map(),
});

/** Records are immutable here, so a copy of the collections is a copy of the state. */
const cloneState = (s: State): State => ({
  installation: s.installation,
  cas: new Map(s.cas),
  certificates: new Map(s.certificates),
  nodes: new Map(s.nodes),
  tokens: new Map(s.tokens),
  nonces: new Map(s.nonces),
  entries: new Map(s.entries),
  events: new Map(s.events),
  crls: [...s.crls],
  audit: new Map(s.audit),
  jwtKeys: new Map(s.jwtKeys),
  cross: new Map(s.cross),
  upstream: s.upstream,
  listCursorKey: s.listCursorKey,
  tpmEnrollments: new Map(s.tpmEnrollments),
  tpmCas: new Map(s.tpmCas),
  tpmChallenges: new Map(s.tpmChallenges),
});

// Copies: field by field, as a row read back from the database has exactly these fields.

const date = (d: Date): Date => new Date(d.getTime());
const dateOrNull = (d: Date | null | undefined): Date | null => (d ? date(d) : null);
const bytes = (b: Uint8Array): Buffer => Buffer.from(b);
/** jsonb: what comes back is the JSON of what went in (undefined members dropped, Dates as strings). */
const viaJson = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

const copyInstallation = (i: Installation): Installation => ({
  trustDomain: i.trustDomain,
  publicUrl: i.publicUrl,
  ...(i.publicHttpUrl ? { publicHttpUrl: i.publicHttpUrl } : {}),
  nodeTtlMs: i.nodeTtlMs,
  workloadTtlMs: i.workloadTtlMs,
  adminTtlMs: i.adminTtlMs,
  createdAt: date(i.createdAt),
});

const copyCross = (x: CrossCertificateRecord): CrossCertificateRecord => ({
  caId: x.caId,
  issuerId: x.issuerId,
  certificateDer: bytes(x.certificateDer),
  notBefore: date(x.notBefore),
  notAfter: date(x.notAfter),
  createdAt: date(x.createdAt),
});

const copyCa = (c: CaRecord): CaRecord => ({
  id: c.id,
  kind: c.kind,
  parentId: c.parentId,
  certificateDer: bytes(c.certificateDer),
  notBefore: date(c.notBefore),
  notAfter: date(c.notAfter),
  active: c.active,
  wrappedKey: { alg: c.wrappedKey.alg, kekId: c.wrappedKey.kekId, blob: bytes(c.wrappedKey.blob) },
  createdAt: date(c.createdAt),
});

const copyJwtKey = (k: JwtKeyRecord): JwtKeyRecord => ({
  kid: k.kid,
  caId: k.caId,
  spki: bytes(k.spki),
  wrappedKey: { alg: k.wrappedKey.alg, kekId: k.wrappedKey.kekId, blob: bytes(k.wrappedKey.blob) },
  createdAt: date(k.createdAt),
  retiredAt: dateOrNull(k.retiredAt),
});

const copyCertificate = (c: CertificateRecord): CertificateRecord => ({
  serial: c.serial,
  caId: c.caId,
  kind: c.kind,
  spiffeId: c.spiffeId,
  nodeId: c.nodeId,
  issuedVia: c.issuedVia,
  notBefore: date(c.notBefore),
  notAfter: date(c.notAfter),
  keyFingerprint: c.keyFingerprint,
  der: bytes(c.der),
  status: c.status,
  createdAt: date(c.createdAt),
  revokedAt: dateOrNull(c.revokedAt),
  revocationReason: c.revocationReason ?? null,
});

const copyNode = (n: NodeRecord): NodeRecord => ({
  id: n.id,
  role: n.role,
  status: n.status,
  attestationMethod: n.attestationMethod,
  certTtlMs: n.certTtlMs,
  createdAt: date(n.createdAt),
  lastAttestedAt: date(n.lastAttestedAt),
  lastSeenAt: dateOrNull(n.lastSeenAt),
  revokedAt: dateOrNull(n.revokedAt),
  revocationReason: n.revocationReason,
});

const copyToken = (t: TokenRecord): TokenRecord => ({
  id: t.id,
  secretHash: bytes(t.secretHash),
  role: t.role,
  expiresAt: date(t.expiresAt),
  usesAllowed: t.usesAllowed,
  usesLeft: t.usesLeft,
  nodeName: t.nodeName,
  nodeTtlMs: t.nodeTtlMs,
  createdBy: t.createdBy,
  createdAt: date(t.createdAt),
});

const copyEntry = (e: EntryRecord): EntryRecord => ({
  name: e.name,
  spiffeId: e.spiffeId,
  parentNodeId: e.parentNodeId,
  selectors: viaJson(e.selectors),
  dnsNames: viaJson(e.dnsNames),
  allowWildcardDns: e.allowWildcardDns,
  ttlMs: e.ttlMs,
  ...(e.hint ? { hint: e.hint } : {}),
  createdBy: e.createdBy,
  createdAt: date(e.createdAt),
});

const copyEvent = (e: RevocationEvent): RevocationEvent => ({
  id: e.id,
  kind: e.kind,
  nodeId: e.nodeId,
  serials: viaJson(e.serials),
  reason: e.reason,
  actor: e.actor,
  createdAt: date(e.createdAt),
});

const copyCrl = (c: CrlRecord): CrlRecord => ({
  caId: c.caId,
  crlNumber: c.crlNumber,
  thisUpdate: date(c.thisUpdate),
  nextUpdate: date(c.nextUpdate),
  entries: c.entries,
  der: bytes(c.der),
});

const copyAudit = (a: AuditRecord): AuditRecord => ({
  id: a.id,
  at: date(a.at),
  event: a.event,
  actor: a.actor,
  source: a.source,
  subject: a.subject,
  outcome: a.outcome,
  details: viaJson(a.details),
  sealSeq: a.sealSeq,
  prevHash: a.prevHash ? bytes(a.prevHash) : null,
  hash: a.hash ? bytes(a.hash) : null,
});

const copyEnrollment = (e: TpmEnrollmentRecord): TpmEnrollmentRecord => ({
  ekId: e.ekId,
  role: e.role,
  enrolledBy: e.enrolledBy,
  enrolledAt: date(e.enrolledAt),
});

const copyManufacturerCa = (c: TpmManufacturerCaRecord): TpmManufacturerCaRecord => ({
  fingerprint: c.fingerprint,
  certificateDer: bytes(c.certificateDer),
  subject: c.subject,
  notBefore: date(c.notBefore),
  notAfter: date(c.notAfter),
  role: c.role,
  createdBy: c.createdBy,
  createdAt: date(c.createdAt),
});

const copyChallenge = (c: Omit<TpmChallengeRecord, 'expiresAt'>): Omit<TpmChallengeRecord, 'expiresAt'> => ({
  nonce: c.nonce,
  ekId: c.ekId,
  role: c.role,
  admittedBy: c.admittedBy,
  akSpki: bytes(c.akSpki),
  akQualifiedName: bytes(c.akQualifiedName),
  secretHash: bytes(c.secretHash),
});

// Errors, as storage/knex/db-errors.ts maps PostgreSQL's.

/** A PostgreSQL error the storage layer does not translate (it stays an internal error). */
class DatabaseError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const conflict = (): BatonError => new BatonError('ERR_CONFLICT', 'the record already exists');
const keyReused = (): BatonError =>
  new BatonError('ERR_KEY_REUSED', 'this public key is already certified: use a new key');
const foreignKey = (table: string, constraint: string): DatabaseError =>
  new DatabaseError(
    '23503',
    `insert or update on table "${table}" violates foreign key constraint "${constraint}"`,
  );
const checkConstraint = (ok: boolean, table: string, constraint: string): void => {
  if (!ok)
    throw new DatabaseError(
      '23514',
      `new row for relation "${table}" violates check constraint "${constraint}"`,
    );
};

/** PostgreSQL refuses a NUL in text and in jsonb strings (22021, 22P05): ERR_BAD_REQUEST. */
function hasNul(v: unknown, depth = 0): boolean {
  if (typeof v === 'string') return v.includes('\u0000');
  if (v === null || typeof v !== 'object' || depth > 32) return false;
  if (v instanceof Date || v instanceof Uint8Array) return false;
  if (Array.isArray(v)) return v.some((x) => hasNul(x, depth + 1));
  return Object.entries(v).some(([k, x]) => k.includes('\u0000') || hasNul(x, depth + 1));
}

/** Statement errors that PostgreSQL never saw (a refusal in code): they do not abort a transaction. */
const notAborting = new WeakSet<object>();
const inCode = <E extends Error>(e: E): E => {
  notAborting.add(e);
  return e;
};

const byTime = (a: Date, b: Date): number => a.getTime() - b.getTime();
const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
const sameDnsNames = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Keyset paging as storage/knex/keyset.ts does it: the rows in the list's order, those strictly
 * after the key, limit + 1 of them to know whether a next page exists. `keyOf` gives a row's key;
 * `compare` orders two keys the way the list runs.
 */
function pageIn<T>(
  rows: T[],
  p: PageRequest,
  keyOf: (r: T) => PageKey,
  compare: (a: PageKey, b: PageKey) => number,
  copy: (r: T) => T,
): Page<T> {
  const sorted = rows.map((r) => ({ r, key: keyOf(r) })).sort((a, b) => compare(a.key, b.key));
  const after = p.after;
  const rest = after ? sorted.filter((x) => compare(x.key, after) > 0) : sorted;
  const kept = rest.slice(0, p.limit);
  return {
    items: kept.map((x) => copy(x.r)),
    next: rest.length > p.limit ? kept[kept.length - 1]!.key : null,
  };
}

/** A time as a page key: what PostgreSQL's to_char gives (UTC, microseconds; a Date has none below ms). */
const timeKey = (d: Date): string => `${d.toISOString().slice(0, -1)}000Z`;
/** Key parts compared part by part, text by code unit, numbers as numbers. */
const compareKeys = (a: PageKey, b: PageKey): number => {
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : byText(String(x), String(y));
    if (c !== 0) return c;
  }
  return 0;
};
const newestFirst = (a: PageKey, b: PageKey): number => compareKeys(b, a);

// The repositories, each statement a function of the state it runs on.

/** Runs one statement: `write` statements outside a transaction take the write lock. */
type Run = <T>(write: boolean, args: readonly unknown[], statement: (s: State) => T) => Promise<T>;

function insertCertificate(s: State, c: CertificateRecord): void {
  // The primary key's index is checked before the fingerprint's (created first).
  if (s.certificates.has(c.serial)) throw conflict();
  for (const other of s.certificates.values())
    if (other.keyFingerprint === c.keyFingerprint) throw keyReused();
  checkConstraint(
    ['node', 'workload', 'admin', 'server'].includes(c.kind),
    'certificates',
    'certificates_kind',
  );
  checkConstraint(
    ['valid', 'superseded', 'revoked'].includes(c.status),
    'certificates',
    'certificates_status',
  );
  if (!s.cas.has(c.caId)) throw foreignKey('certificates', 'certificates_ca_id_foreign');
  s.certificates.set(c.serial, copyCertificate(c));
}

function appendAudit(s: State, seq: Sequences, e: AuditEvent): void {
  seq.audit += 1;
  s.audit.set(seq.audit, {
    id: seq.audit,
    at: date(e.at),
    event: e.event,
    actor: e.actor,
    source: e.source,
    subject: e.subject,
    outcome: e.outcome,
    details: viaJson(e.details),
    sealSeq: null,
    prevHash: null,
    hash: null,
  });
}

function insertCa(s: State, c: CaRecord): void {
  if (s.cas.has(c.id)) throw conflict();
  checkConstraint(['root', 'intermediate'].includes(c.kind), 'cas', 'cas_kind');
  if (c.parentId !== null && !s.cas.has(c.parentId)) throw foreignKey('cas', 'cas_parent_id_foreign');
  s.cas.set(c.id, copyCa(c));
}

function caRepository(run: Run): CaRepository {
  return {
    getInstallation: () => run(false, [], (s) => (s.installation ? copyInstallation(s.installation) : null)),
    listCas: () =>
      run(false, [], (s) => [...s.cas.values()].sort((a, b) => byTime(a.createdAt, b.createdAt)).map(copyCa)),
    initialize: (installation, cas) =>
      run(true, [installation, cas], (s) => {
        if (s.installation)
          throw inCode(new BatonError('ERR_ALREADY_INITIALIZED', 'the CA is already initialized'));
        s.installation = copyInstallation(installation);
        for (const ca of cas) insertCa(s, ca);
      }),
    addActiveIntermediate: (ca) =>
      run(true, [ca], (s) => {
        for (const [id, c] of s.cas) if (c.kind === 'intermediate') s.cas.set(id, { ...c, active: false });
        insertCa(s, { ...ca, active: true });
      }),
    listCrossCertificates: () =>
      run(false, [], (s) =>
        [...s.cross.values()].sort((a, b) => byTime(a.createdAt, b.createdAt)).map(copyCross),
      ),
    // Writes run one at a time here, so the lock is the serialization itself.
    lockCaSet: () => run(true, [], () => undefined),
    addRoot: (ca) => run(true, [ca], (s) => insertCa(s, { ...ca, kind: 'root', parentId: null })),
    addCrossCertificate: (x) =>
      run(true, [x], (s) => {
        const key = `${x.caId}/${x.issuerId}`;
        if (s.cross.has(key)) throw conflict();
        if (!s.cas.has(x.caId) || !s.cas.has(x.issuerId))
          throw foreignKey('ca_cross_certificates', 'ca_cross_certificates_ca_id_foreign');
        s.cross.set(key, copyCross(x));
      }),
    retireRoots: (ids) =>
      run(true, [ids], (s) => {
        let n = 0;
        for (const id of ids) {
          const c = s.cas.get(id);
          if (c?.kind === 'root' && c.active) {
            s.cas.set(id, { ...c, active: false });
            n++;
          }
        }
        return n;
      }),
    countCertificatesUnder: (caIds, now) =>
      run(false, [caIds, now], (s) => {
        const live = [...s.certificates.values()].filter(
          (c) => caIds.includes(c.caId) && c.status === 'valid' && c.notAfter.getTime() > now.getTime(),
        );
        return {
          nodes: new Set(live.filter((c) => c.kind === 'node').map((c) => c.nodeId)).size,
          workloadCertificates: live.filter((c) => c.kind === 'workload').length,
        };
      }),
  };
}

const copyPending = (p: PendingUpstream): PendingUpstream => ({
  installation: {
    trustDomain: p.installation.trustDomain,
    publicUrl: p.installation.publicUrl,
    ...(p.installation.publicHttpUrl ? { publicHttpUrl: p.installation.publicHttpUrl } : {}),
    nodeTtlMs: p.installation.nodeTtlMs,
    workloadTtlMs: p.installation.workloadTtlMs,
    adminTtlMs: p.installation.adminTtlMs,
  },
  caId: p.caId,
  wrappedKey: { alg: p.wrappedKey.alg, kekId: p.wrappedKey.kekId, blob: bytes(p.wrappedKey.blob) },
  spki: bytes(p.spki),
  csrDer: bytes(p.csrDer),
  createdAt: date(p.createdAt),
});

function upstreamRepository(run: Run): UpstreamRepository {
  return {
    getPending: () => run(false, [], (s) => (s.upstream ? copyPending(s.upstream) : null)),
    savePending: (p) =>
      run(true, [p], (s) => {
        if (s.upstream)
          throw inCode(new BatonError('ERR_UPSTREAM_PENDING', 'an upstream CA is already pending'));
        s.upstream = copyPending(p);
      }),
    deletePending: (caId) =>
      run(true, [caId], (s) => {
        if (s.upstream?.caId !== caId) return false;
        s.upstream = null;
        return true;
      }),
  };
}

function jwtKeyRepository(run: Run): JwtKeyRepository {
  return {
    list: () =>
      run(false, [], (s) =>
        [...s.jwtKeys.values()]
          .sort((a, b) => byTime(a.createdAt, b.createdAt) || byText(a.kid, b.kid))
          .map(copyJwtKey),
      ),
    insert: (k) =>
      run(true, [k], (s) => {
        // The primary key (kid), then the unique ca_id, then the foreign key.
        if (s.jwtKeys.has(k.kid)) throw conflict();
        for (const other of s.jwtKeys.values()) if (other.caId === k.caId) throw conflict();
        if (!s.cas.has(k.caId)) throw foreignKey('jwt_keys', 'jwt_keys_ca_id_foreign');
        s.jwtKeys.set(k.kid, copyJwtKey(k));
      }),
    retireOthers: (kid, at) =>
      run(true, [kid, at], (s) => {
        let n = 0;
        for (const [id, k] of s.jwtKeys) {
          if (id !== kid && k.retiredAt === null) {
            s.jwtKeys.set(id, { ...k, retiredAt: date(at) });
            n++;
          }
        }
        return n;
      }),
  };
}

/**
 * What the renewal and attestation statements record for a node: its valid node certificates
 * superseded, the new one inserted, the audit row appended. insertCertificate throws (key reused,
 * serial taken) before the audit row, and the statement's state is then dropped whole, as
 * PostgreSQL rolls back the statement.
 */
function recordNodeCertificate(s: State, seq: Sequences, record: CertificateRecord, audit: AuditEvent): void {
  for (const [serial, c] of s.certificates) {
    if (c.nodeId === record.nodeId && c.kind === 'node' && c.status === 'valid')
      s.certificates.set(serial, { ...c, status: 'superseded' });
  }
  insertCertificate(s, {
    ...record,
    issuedVia: null,
    status: 'valid',
    revokedAt: null,
    revocationReason: null,
  });
  appendAudit(s, seq, audit);
}

function certificateRepository(run: Run): CertificateRepository {
  const find = (serial: string) =>
    run(false, [serial], (s) => {
      const c = s.certificates.get(serial);
      return c ? copyCertificate(c) : null;
    });
  return {
    insert: (record) => run(true, [record], (s) => insertCertificate(s, record)),
    findBySerial: find,
    // Serialized writes stand in for the row lock.
    lockBySerial: find,
    findByKeyFingerprint: (fp) =>
      run(false, [fp], (s) =>
        [...s.certificates.values()].filter((c) => c.keyFingerprint === fp).map(copyCertificate),
      ),
    supersedeForNode: (nodeId, kind) =>
      run(true, [nodeId, kind], (s) => {
        let n = 0;
        for (const [serial, c] of s.certificates) {
          if (c.nodeId === nodeId && c.kind === kind && c.status === 'valid') {
            s.certificates.set(serial, { ...c, status: 'superseded' });
            n++;
          }
        }
        return n;
      }),
    list: (f: CertificateFilter) =>
      run(false, [f], (s) =>
        [...s.certificates.values()]
          .filter(
            (c) =>
              (!f.nodeId || c.nodeId === f.nodeId || c.issuedVia === f.nodeId) &&
              (!f.kind || c.kind === f.kind) &&
              (!f.status || c.status === f.status) &&
              (!f.expiredAt || c.notAfter.getTime() <= f.expiredAt.getTime()) &&
              (!f.validAt || c.notAfter.getTime() > f.validAt.getTime()),
          )
          .sort((a, b) => byTime(b.createdAt, a.createdAt))
          .slice(0, f.limit ?? 1000)
          .map(copyCertificate),
      ),
    page: (f, p) =>
      run(false, [f, p], (s) =>
        pageIn(
          [...s.certificates.values()].filter(
            (c) =>
              (!f.nodeId || c.nodeId === f.nodeId || c.issuedVia === f.nodeId) &&
              (!f.status || c.status === f.status) &&
              (!f.expiredAt || c.notAfter.getTime() <= f.expiredAt.getTime()) &&
              (!f.validAt || c.notAfter.getTime() > f.validAt.getTime()),
          ),
          p,
          (c) => [timeKey(c.createdAt), c.serial],
          newestFirst,
          copyCertificate,
        ),
      ),
    deleteExpired: (expiredBefore, limit) =>
      run(true, [expiredBefore, limit], (s) => {
        // Serialized writes: no row is ever locked by another writer here, so none is skipped.
        const gone = [...s.certificates.values()]
          .filter((c) => c.notAfter.getTime() < expiredBefore.getTime())
          .sort((a, b) => byTime(a.notAfter, b.notAfter))
          .slice(0, limit);
        for (const c of gone) s.certificates.delete(c.serial);
        return gone.length;
      }),
  };
}

/** The presented node certificate: the node's, this very DER, a node certificate, valid, unexpired. */
function currentPeer(s: State, nodeId: string, serial: string, der: Buffer, now: Date): boolean {
  const c = s.certificates.get(serial);
  return (
    c !== undefined &&
    c.nodeId === nodeId &&
    Buffer.compare(c.der, der) === 0 &&
    c.kind === 'node' &&
    c.status === 'valid' &&
    c.notAfter.getTime() > now.getTime()
  );
}

/** Spends one use of a token or a nonce, if it can be spent at `now`; false (nothing written) if not. */
function spendEvidence(s: State, spend: EvidenceSpend, now: Date): boolean {
  if (spend.kind === 'token') {
    const t = s.tokens.get(spend.tokenId);
    if (!t || t.usesLeft <= 0 || t.expiresAt.getTime() <= now.getTime()) return false;
    s.tokens.set(t.id, { ...t, usesLeft: t.usesLeft - 1 });
    return true;
  }
  const n = s.nonces.get(spend.nonce);
  if (!n || n.method !== spend.method || n.usedAt !== null || n.expiresAt.getTime() <= now.getTime())
    return false;
  s.nonces.set(n.nonce, { ...n, usedAt: date(now) });
  return true;
}

function issuanceRepository(run: Run, seq: Sequences): IssuanceRepository {
  return {
    recordWorkloadGuarded: (record, audit, g) =>
      run(true, [record, audit, g], (s) => {
        const node = s.nodes.get(g.nodeId);
        const e = s.entries.get(g.entry.name);
        const holds =
          node?.status === 'active' &&
          currentPeer(s, node.id, g.peerSerial, g.peerDer, g.now) &&
          e !== undefined &&
          e.parentNodeId === node.id &&
          e.spiffeId === g.entry.spiffeId &&
          sameDnsNames(e.dnsNames, g.entry.dnsNames) &&
          e.ttlMs === g.entry.ttlMs &&
          e.createdAt.getTime() === g.entry.createdAt.getTime();
        if (!holds) return false;
        insertCertificate(s, {
          ...record,
          issuedVia: node.id,
          status: 'valid',
          revokedAt: null,
          revocationReason: null,
        });
        appendAudit(s, seq, audit);
        return true;
      }),
    recordRenewalGuarded: (record, audit, g) =>
      run(true, [record, audit, g], (s) => {
        const node = s.nodes.get(g.nodeId);
        if (node?.status !== 'active' || !currentPeer(s, node.id, g.peerSerial, g.peerDer, g.now))
          return false;
        s.nodes.set(node.id, { ...node, lastSeenAt: date(g.now) });
        recordNodeCertificate(s, seq, record, audit);
        return true;
      }),
    recordAttestation: (record, audit, g) =>
      run(true, [record, audit, g], (s) => {
        const node = s.nodes.get(g.node.id);
        const want = g.node;
        const nodeOk = want.existing
          ? node?.status === 'active' && node.role === want.role && node.certTtlMs === want.certTtlMs
          : node === undefined;
        if (!nodeOk) {
          if (node?.status === 'revoked') return 'node-revoked';
          if (node && node.role !== want.role) return 'node-role';
          return 'node-changed';
        }
        if (!spendEvidence(s, g.spend, g.now)) return 'evidence-spent';
        const at = date(g.now);
        s.nodes.set(
          want.id,
          node
            ? { ...node, lastAttestedAt: at, attestationMethod: g.method }
            : {
                id: want.id,
                role: want.role,
                status: 'active',
                attestationMethod: g.method,
                certTtlMs: want.certTtlMs,
                createdAt: at,
                lastAttestedAt: at,
                lastSeenAt: at,
                revokedAt: null,
                revocationReason: null,
              },
        );
        recordNodeCertificate(s, seq, record, audit);
        return 'recorded';
      }),
    jwtMintAllowed: (g) =>
      run(false, [g], (s) => {
        const node = s.nodes.get(g.nodeId);
        if (node?.status !== 'active' || !currentPeer(s, node.id, g.peerSerial, g.peerDer, g.now))
          return false;
        for (const e of s.entries.values())
          if (e.parentNodeId === node.id && e.spiffeId === g.spiffeId) return true;
        return false;
      }),
  };
}

function nodeRepository(run: Run): NodeRepository {
  const find = (id: string) =>
    run(false, [id], (s) => {
      const n = s.nodes.get(id);
      return n ? copyNode(n) : null;
    });
  const update = (id: string, args: readonly unknown[], change: (n: NodeRecord) => NodeRecord) =>
    run(true, args, (s) => {
      const n = s.nodes.get(id);
      if (n) s.nodes.set(id, change(n));
    });
  return {
    insert: (node) =>
      run(true, [node], (s) => {
        if (s.nodes.has(node.id)) throw conflict();
        checkConstraint(['worker', 'manager'].includes(node.role), 'nodes', 'nodes_role');
        checkConstraint(['active', 'revoked'].includes(node.status), 'nodes', 'nodes_status');
        s.nodes.set(node.id, copyNode(node));
      }),
    findById: find,
    findByCertificate: (serial) =>
      run(false, [serial], (s) => {
        const c = s.certificates.get(serial);
        const n = c?.kind === 'node' && c.nodeId !== null ? s.nodes.get(c.nodeId) : undefined;
        return n ? copyNode(n) : null;
      }),
    lockById: find,
    list: () =>
      run(false, [], (s) =>
        [...s.nodes.values()].sort((a, b) => byTime(a.createdAt, b.createdAt)).map(copyNode),
      ),
    page: (f, p) =>
      run(false, [f, p], (s) =>
        pageIn(
          [...s.nodes.values()].filter(
            (n) => (!f.status || n.status === f.status) && (!f.role || n.role === f.role),
          ),
          p,
          (n) => [n.id],
          compareKeys,
          copyNode,
        ),
      ),
    countActive: (now) =>
      run(false, [now], (s) => {
        const current = new Set<string>();
        for (const c of s.certificates.values()) {
          if (
            c.nodeId !== null &&
            c.kind === 'node' &&
            c.status === 'valid' &&
            c.notAfter.getTime() > now.getTime()
          )
            current.add(c.nodeId);
        }
        return [...s.nodes.values()].filter((n) => n.status === 'active' && current.has(n.id)).length;
      }),
    recordSeen: (id, at) => update(id, [id, at], (n) => ({ ...n, lastSeenAt: date(at) })),
    reinstate: (id, role) =>
      run(true, [id, role], (s) => {
        const n = s.nodes.get(id);
        if (n?.status !== 'revoked') return false;
        checkConstraint(['worker', 'manager'].includes(role), 'nodes', 'nodes_role');
        s.nodes.set(id, { ...n, status: 'active', role, revokedAt: null, revocationReason: null });
        return true;
      }),
    markRevoked: (id, at, reason) =>
      update(id, [id, at, reason], (n) => ({
        ...n,
        status: 'revoked',
        revokedAt: date(at),
        revocationReason: reason,
      })),
  };
}

function tokenRepository(run: Run): TokenRepository {
  return {
    insert: (t) =>
      run(true, [t], (s) => {
        if (s.tokens.has(t.id)) throw conflict();
        checkConstraint(['worker', 'manager'].includes(t.role), 'join_tokens', 'join_tokens_role');
        checkConstraint(t.usesLeft >= 0 && t.usesLeft <= t.usesAllowed, 'join_tokens', 'join_tokens_uses');
        s.tokens.set(t.id, copyToken(t));
      }),
    findById: (id) =>
      run(false, [id], (s) => {
        const t = s.tokens.get(id);
        return t ? copyToken(t) : null;
      }),
    findForAttestation: (id) =>
      run(false, [id], (s) => {
        const t = s.tokens.get(id);
        if (!t) return null;
        const n = t.nodeName === null ? undefined : s.nodes.get(t.nodeName);
        return { token: copyToken(t), boundNode: n ? copyNode(n) : null };
      }),
    spendBoundTo: (nodeName) =>
      run(true, [nodeName], (s) => {
        let n = 0;
        for (const [id, t] of s.tokens) {
          if (t.nodeName === nodeName && t.usesLeft > 0) {
            s.tokens.set(id, { ...t, usesLeft: 0 });
            n++;
          }
        }
        return n;
      }),
  };
}

function nonceRepository(run: Run): NonceRepository {
  return {
    insert: (nonce, method, expiresAt) =>
      run(true, [nonce, method, expiresAt], (s) => {
        if (s.nonces.has(nonce)) throw conflict();
        s.nonces.set(nonce, { nonce, method, expiresAt: date(expiresAt), usedAt: null });
      }),
    purgeExpired: (now, limit) =>
      run(true, [now, limit], (s) => {
        const expired = [...s.nonces.values()]
          .filter((n) => n.expiresAt.getTime() <= now.getTime())
          .slice(0, limit);
        // tpm_challenges.nonce references the nonce ON DELETE CASCADE.
        for (const n of expired) {
          s.nonces.delete(n.nonce);
          s.tpmChallenges.delete(n.nonce);
        }
        return expired.length;
      }),
  };
}

function tpmRepository(run: Run): TpmRepository {
  const role = (r: string, table: string) =>
    checkConstraint(['worker', 'manager'].includes(r), table, `${table}_role`);
  return {
    enroll: (e) =>
      run(true, [e], (s) => {
        checkConstraint(/^[0-9a-f]{64}$/.test(e.ekId), 'tpm_enrollments', 'tpm_enrollments_ek_id');
        role(e.role, 'tpm_enrollments');
        s.tpmEnrollments.set(e.ekId, copyEnrollment(e));
      }),
    findEnrollment: (ekId) =>
      run(false, [ekId], (s) => {
        const e = s.tpmEnrollments.get(ekId);
        return e ? copyEnrollment(e) : null;
      }),
    addManufacturerCa: (ca) =>
      run(true, [ca], (s) => {
        if (s.tpmCas.has(ca.fingerprint)) throw conflict();
        role(ca.role, 'tpm_manufacturer_cas');
        s.tpmCas.set(ca.fingerprint, copyManufacturerCa(ca));
      }),
    listManufacturerCas: () =>
      run(false, [], (s) =>
        [...s.tpmCas.values()]
          .sort((a, b) => byTime(a.createdAt, b.createdAt) || byText(a.fingerprint, b.fingerprint))
          .map(copyManufacturerCa),
      ),
    insertChallenge: (c) =>
      run(true, [c], (s) => {
        if (s.nonces.has(c.nonce)) throw conflict();
        role(c.role, 'tpm_challenges');
        s.nonces.set(c.nonce, { nonce: c.nonce, method: 'tpm', expiresAt: date(c.expiresAt), usedAt: null });
        s.tpmChallenges.set(c.nonce, copyChallenge(c));
      }),
    findChallenge: (nonce, now) =>
      run(false, [nonce, now], (s) => {
        const n = s.nonces.get(nonce);
        const c = s.tpmChallenges.get(nonce);
        if (!n || !c || n.method !== 'tpm' || n.usedAt !== null || n.expiresAt.getTime() <= now.getTime())
          return null;
        return { ...copyChallenge(c), expiresAt: date(n.expiresAt) };
      }),
  };
}

function entryRepository(run: Run): EntryRepository {
  return {
    insert: (e) =>
      run(true, [e], (s) => {
        if (s.entries.has(e.name)) throw conflict();
        for (const other of s.entries.values())
          if (other.parentNodeId === e.parentNodeId && other.spiffeId === e.spiffeId) throw conflict();
        if (!s.nodes.has(e.parentNodeId)) throw foreignKey('entries', 'entries_parent_node_id_foreign');
        s.entries.set(e.name, copyEntry(e));
      }),
    findByName: (name) =>
      run(false, [name], (s) => {
        const e = s.entries.get(name);
        return e ? copyEntry(e) : null;
      }),
    list: (f = {}) =>
      run(false, [f], (s) =>
        [...s.entries.values()]
          .filter((e) => !f.parentNodeId || e.parentNodeId === f.parentNodeId)
          .sort((a, b) => byText(a.name, b.name))
          .map(copyEntry),
      ),
    page: (p) =>
      run(false, [p], (s) => pageIn([...s.entries.values()], p, (e) => [e.name], compareKeys, copyEntry)),
    findForNode: (parentNodeId, spiffeId) =>
      run(false, [parentNodeId, spiffeId], (s) => {
        for (const e of s.entries.values())
          if (e.parentNodeId === parentNodeId && e.spiffeId === spiffeId) return copyEntry(e);
        return null;
      }),
    delete: (name) => run(true, [name], (s) => s.entries.delete(name)),
  };
}

function revocationRepository(run: Run, seq: Sequences): RevocationRepository {
  return {
    revokeCertificates: (target, at, reason) =>
      run(true, [target, at, reason], (s) => {
        const hit = (c: CertificateRecord) =>
          'serial' in target
            ? c.serial === target.serial
            : c.nodeId === target.nodeId || c.issuedVia === target.nodeId;
        const revoked: string[] = [];
        for (const [serial, c] of s.certificates) {
          if (
            (c.status === 'valid' || c.status === 'superseded') &&
            c.notAfter.getTime() > at.getTime() &&
            hit(c)
          ) {
            s.certificates.set(serial, {
              ...c,
              status: 'revoked',
              revokedAt: date(at),
              revocationReason: reason,
            });
            revoked.push(serial);
          }
        }
        return revoked;
      }),
    appendEvent: (e) =>
      run(true, [e], (s) => {
        checkConstraint(
          ['node', 'certificate', 'entry'].includes(e.kind),
          'revocation_events',
          'revocation_events_kind',
        );
        seq.event += 1;
        const event = copyEvent({ ...e, id: seq.event });
        s.events.set(event.id, event);
        return copyEvent(event);
      }),
    eventsSince: (id, limit) =>
      run(false, [id, limit], (s) =>
        [...s.events.values()]
          .filter((e) => e.id > id)
          .sort((a, b) => a.id - b.id)
          .slice(0, limit)
          .map(copyEvent),
      ),
    lastEventId: () => run(false, [], (s) => Math.max(0, ...s.events.keys())),
    revokedForCa: (caId, now) =>
      run(false, [caId, now], (s) =>
        [...s.certificates.values()]
          .filter((c) => c.caId === caId && c.status === 'revoked' && c.notAfter.getTime() > now.getTime())
          .sort((a, b) => byText(a.serial, b.serial))
          .map(
            (c): RevokedEntry => ({
              serial: c.serial,
              // A revoked row always has revoked_at, except one inserted already revoked without it.
              revokedAt: new Date(c.revokedAt?.getTime() ?? 0),
              reason: c.revocationReason ?? 0,
            }),
          ),
      ),
  };
}

function crlRepository(run: Run, seq: Sequences): CrlRepository {
  return {
    latest: (caId) =>
      run(false, [caId], (s) => {
        let best: CrlRecord | null = null;
        for (const c of s.crls) if (c.caId === caId && (!best || c.crlNumber > best.crlNumber)) best = c;
        return best ? copyCrl(best) : null;
      }),
    // Inside a transaction the write lock is held already; outside one, an advisory transaction
    // lock is released as soon as it is taken.
    lockBuilder: () => run(false, [], () => undefined),
    nextNumber: () =>
      run(false, [], () => {
        seq.crl += 1n;
        return seq.crl;
      }),
    insert: (crl) =>
      run(true, [crl], (s) => {
        if (s.crls.some((c) => c.crlNumber === crl.crlNumber)) throw conflict();
        if (!s.cas.has(crl.caId)) throw foreignKey('crls', 'crls_ca_id_foreign');
        s.crls.push(copyCrl(crl));
      }),
  };
}

function auditRepository(run: Run, seq: Sequences): AuditRepository {
  return {
    append: (e) => run(true, [e], (s) => appendAudit(s, seq, e)),
    seal: (limit, hashOf) =>
      run(true, [limit], (s) => {
        let seal = 0;
        let prev: Buffer | null = null;
        for (const r of s.audit.values()) {
          if (r.sealSeq !== null && r.sealSeq > seal) {
            seal = r.sealSeq;
            prev = r.hash;
          }
        }
        const rows = [...s.audit.values()]
          .filter((r) => r.sealSeq === null)
          .sort((a, b) => a.id - b.id)
          .slice(0, limit);
        const sealed: AuditRecord[] = [];
        for (const r of rows) {
          seal += 1;
          // What the knex sealer hands over: the row as read (without its chain columns), numbered.
          let hash: Buffer;
          try {
            hash = bytes(hashOf({ ...copyAudit(r), sealSeq: seal, prevHash: null, hash: null }, prev));
          } catch (e) {
            throw e instanceof Error ? inCode(e) : e;
          }
          sealed.push({ ...r, sealSeq: seal, prevHash: prev ? bytes(prev) : null, hash });
          prev = hash;
        }
        for (const r of sealed) s.audit.set(r.id, r);
        return sealed.length;
      }),
    list: (f: AuditFilter) =>
      run(false, [f], (s) =>
        [...s.audit.values()]
          .filter(
            (r) =>
              (!f.actor || r.actor === f.actor) &&
              (!f.subject || r.subject === f.subject) &&
              (!f.event || r.event === f.event) &&
              (!f.since || r.at.getTime() >= f.since.getTime()) &&
              (!f.until || r.at.getTime() < f.until.getTime()),
          )
          .sort((a, b) => b.id - a.id)
          .slice(0, Math.min(f.limit ?? 100, 10_000))
          .map(copyAudit),
      ),
    page: (f, p) =>
      run(false, [f, p], (s) =>
        pageIn(
          [...s.audit.values()].filter(
            (r) =>
              (!f.actor || r.actor === f.actor) &&
              (!f.subject || r.subject === f.subject) &&
              (!f.event || r.event === f.event) &&
              (!f.since || r.at.getTime() >= f.since.getTime()) &&
              (!f.until || r.at.getTime() < f.until.getTime()),
          ),
          p,
          (r) => [timeKey(r.at), r.id],
          newestFirst,
          copyAudit,
        ),
      ),
    sealedAfter: (after, limit) =>
      run(false, [after, limit], (s) =>
        [...s.audit.values()]
          .filter((r) => r.sealSeq !== null && r.sealSeq > after)
          .sort((a, b) => (a.sealSeq ?? 0) - (b.sealSeq ?? 0))
          .slice(0, limit)
          .map(copyAudit),
      ),
    countUnsealed: () =>
      run(false, [], (s) => [...s.audit.values()].filter((r) => r.sealSeq === null).length),
    head: () =>
      run(false, [], (s) => {
        const sealed = chainOf(s);
        return sealed.length ? copyAudit(sealed[sealed.length - 1]!) : null;
      }),
    pruneCut: (before, limit) =>
      run(false, [before, limit], (s) => {
        const chain = chainOf(s);
        const head = chain[chain.length - 1]?.sealSeq ?? null;
        const firsts = chain.slice(0, limit);
        if (head === null || firsts.length === 0) return null;
        const stop = firsts.find((r) => r.at.getTime() >= before.getTime() || r.sealSeq! >= head);
        const first = firsts[0]!.sealSeq!;
        const through = stop ? stop.sealSeq! - 1 : firsts[firsts.length - 1]!.sealSeq!;
        return through < first ? null : { first, through, complete: stop !== undefined };
      }),
    deleteSealedThrough: (through, limit) =>
      run(true, [through, limit], (s) => {
        const gone = chainOf(s)
          .filter((r) => r.sealSeq! <= through)
          .slice(0, limit);
        for (const r of gone) s.audit.delete(r.id);
        return gone.length;
      }),
  };
}

/** As storage/knex/list-cursor-key-repository.ts: a read while the key exists (a list read writes nothing). */
function listCursorKeyRepository(run: Run): ListCursorKeyRepository {
  return {
    getOrCreate: async (candidate, _at) => {
      const stored = await run(false, [], (s) => (s.listCursorKey ? bytes(s.listCursorKey) : null));
      if (stored) return stored;
      return run(true, [candidate], (s) => {
        s.listCursorKey ??= bytes(candidate);
        return bytes(s.listCursorKey);
      });
    },
  };
}
/** The sealed rows in chain order. */
const chainOf = (s: State): AuditRecord[] =>
  [...s.audit.values()].filter((r) => r.sealSeq !== null).sort((a, b) => a.sealSeq! - b.sealSeq!);

function repositories(run: Run, seq: Sequences): Repositories {
  return {
    revocations: revocationRepository(run, seq),
    crls: crlRepository(run, seq),
    audit: auditRepository(run, seq),
    entries: entryRepository(run),
    cas: caRepository(run),
    upstream: upstreamRepository(run),
    certificates: certificateRepository(run),
    issuances: issuanceRepository(run, seq),
    nodes: nodeRepository(run),
    tokens: tokenRepository(run),
    nonces: nonceRepository(run),
    jwtKeys: jwtKeyRepository(run),
    listCursorKey: listCursorKeyRepository(run),
    tpm: tpmRepository(run),
  };
}

/** One writer at a time, in arrival order. */
class WriteLock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

const badText = (): BatonError => new BatonError('ERR_BAD_REQUEST', 'a text field holds a NUL character');

/**
 * A fresh, empty store; `seed` records an installation and its CAs up front (as `initialize`).
 * Each call is a database of its own.
 */
export function createMemoryStorage(seed?: { installation: Installation; cas: CaRecord[] }): Storage {
  let committed = emptyState();
  const seq: Sequences = { event: 0, audit: 0, crl: 0n };
  const lock = new WriteLock();
  const heldLocks = new Set<JobLockName>();
  /** Set while a transaction's fn runs: a write outside it from in there would wait for itself. */
  const insideTransaction = new AsyncLocalStorage<true>();
  const refuseNested = (what: string) => {
    if (insideTransaction.getStore())
      throw new Error(
        `memory storage: ${what} outside the transaction, from inside storage.transaction(fn), would wait for fn forever; use the repositories fn was given`,
      );
  };

  const autocommit: Run = async (write, args, statement) => {
    if (hasNul(args)) throw badText();
    if (!write) return statement(committed);
    refuseNested('a write');
    return lock.run(async () => {
      const work = cloneState(committed);
      const result = statement(work);
      committed = work;
      return result;
    });
  };

  if (seed) {
    const s = emptyState();
    s.installation = copyInstallation(seed.installation);
    for (const ca of seed.cas) insertCa(s, ca);
    committed = s;
  }

  return {
    ...repositories(autocommit, seq),
    transaction: async <T>(fn: (tx: Repositories) => Promise<T>): Promise<T> => {
      refuseNested('a transaction');
      return lock.run(async () => {
        const work = cloneState(committed);
        let open = true;
        let aborted = false;
        const inTx: Run = async (_write, args, statement) => {
          if (!open) throw new Error('Transaction query already complete');
          if (aborted)
            throw new DatabaseError(
              '25P02',
              'current transaction is aborted, commands ignored until end of transaction block',
            );
          try {
            if (hasNul(args)) throw badText();
            return statement(work);
          } catch (e) {
            if (!(e instanceof Error && notAborting.has(e))) aborted = true;
            throw e;
          }
        };
        try {
          const result = await insideTransaction.run(true, () => fn(repositories(inTx, seq)));
          // PostgreSQL answers COMMIT of an aborted transaction with a rollback, not an error.
          if (!aborted) committed = work;
          return result;
        } finally {
          open = false;
        }
      });
    },
    exclusive: async <T>(name: JobLockName, fn: () => Promise<T>): Promise<{ value: T } | null> => {
      // An advisory lock of this database: held by one caller at a time, never waited for.
      if (heldLocks.has(name)) return null;
      heldLocks.add(name);
      try {
        return { value: await fn() };
      } finally {
        heldLocks.delete(name);
      }
    },
    ping: async () => undefined,
    close: async () => undefined,
  };
}
