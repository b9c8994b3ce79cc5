import { X509Certificate } from 'node:crypto';
import type { AuditContext } from '../../../../services/ca/src/domain/audit';
import type { NodeClaim } from '../../../../services/ca/src/domain/caller';
import type { FakeClock } from '../../../../services/ca/src/domain/clock';
import { type IssuedLeaf, issueLeaf } from '../../../../services/ca/src/domain/issue';
import type { Keyring } from '../../../../services/ca/src/domain/keyring';
import type { NodeIdentityDeps } from '../../../../services/ca/src/domain/node-identity';
import type {
  EntryRecord,
  Installation,
  NodeRecord,
  NodeRole,
  Storage,
} from '../../../../services/ca/src/domain/ports';
import { nodeSpiffeId } from '../../../../services/ca/src/domain/trust-domain';
import { toPem } from '../../../../common/src/der';
import { readCsr, type UnverifiedCsr } from '../../../../services/ca/src/pki/csr';
import { describePublicKey, generateP256, spkiOf } from '../../../../services/ca/src/pki/keys';
import { TEST_TD, TEST_URL, testCa } from '../../../fixtures/test-ca';
import { createMemoryStorage } from '../../../support/memory-storage';
import { keyAndCsr } from '../../../support/node-client';

/**
 * One installation for a use-case test: a CA hierarchy (testCa), the in-memory ports initialized
 * with it, and a FakeClock that only moves when a test says so. No HTTP, no database.
 */
export interface World {
  storage: Storage;
  clock: FakeClock;
  ca: ReturnType<typeof testCa>;
  keyring: Keyring;
  installation: Installation;
}

export const START = '2026-12-01T10:00:00.000Z';
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
export const AUDIT: AuditContext = { actor: 'spiffe://test.example.org/admin/tester', source: '192.0.2.7' };

export async function world(o: { nodeTtlMs?: number; workloadTtlMs?: number } = {}): Promise<World> {
  const ca = testCa({ now: START });
  const installation: Installation = {
    trustDomain: TEST_TD,
    publicUrl: TEST_URL,
    nodeTtlMs: o.nodeTtlMs ?? 2 * HOUR,
    workloadTtlMs: o.workloadTtlMs ?? 10 * 60_000,
    adminTtlMs: HOUR,
    createdAt: ca.clock.now(),
  };
  const storage = createMemoryStorage();
  await storage.cas.initialize(installation, ca.records);
  for (const key of ca.jwtKeys) await storage.jwtKeys.insert(key);
  return { storage, clock: ca.clock, ca, keyring: ca.keyring, installation };
}

/** The deps renewNode, attestNode and issueWorkloadSvid take. */
export const nodeDeps = (w: World, o: Partial<NodeIdentityDeps> = {}): NodeIdentityDeps => ({
  clock: w.clock,
  storage: w.storage,
  keyring: w.keyring,
  installation: w.installation,
  random: () => 0.5,
  ...o,
});

let counter = 0;

/** An active node with a current node certificate, as an attestation leaves it. */
export async function addNode(
  w: World,
  o: { role?: NodeRole; certTtlMs?: number | null; id?: string } = {},
): Promise<{ node: NodeRecord; cert: IssuedLeaf; claim: NodeClaim }> {
  const id = o.id ?? `node${++counter}`;
  const now = w.clock.now();
  const node: NodeRecord = {
    id,
    role: o.role ?? 'worker',
    status: 'active',
    attestationMethod: 'join_token',
    certTtlMs: o.certTtlMs ?? null,
    createdAt: now,
    lastAttestedAt: now,
    lastSeenAt: null,
    revokedAt: null,
    revocationReason: null,
  };
  await w.storage.nodes.insert(node);
  const cert = await issueLeaf(
    { clock: w.clock, issuer: w.keyring.signing, certificates: w.storage.certificates },
    {
      kind: 'node',
      spiffeId: nodeSpiffeId(TEST_TD, id),
      subject: { O: TEST_TD, OU: node.role, CN: id },
      key: describePublicKey(spkiOf(generateP256().publicKey)),
      ttlMs: HOUR,
      nodeId: id,
    },
  );
  return { node, cert, claim: claimFor(node.id, cert) };
}

/** What the HTTP edge makes of a presented node certificate (http/peer-cert.ts, caller.ts). */
export const claimFor = (nodeId: string, cert: IssuedLeaf): NodeClaim => ({
  kind: 'node',
  nodeId,
  peer: {
    serial: cert.record.serial,
    spiffeId: cert.record.spiffeId,
    subject: { O: TEST_TD, CN: nodeId },
    der: cert.record.der,
  },
});

export async function addEntry(
  w: World,
  parent: NodeRecord,
  o: Partial<EntryRecord> = {},
): Promise<EntryRecord> {
  const name = o.name ?? `entry${++counter}`;
  const entry: EntryRecord = {
    name,
    spiffeId: `spiffe://${TEST_TD}/svc/${name}`,
    parentNodeId: parent.id,
    selectors: [{ type: 'unix', key: 'uid', value: 1000 }],
    dnsNames: [`${name}.internal`],
    allowWildcardDns: false,
    ttlMs: null,
    createdBy: 'test',
    createdAt: w.clock.now(),
    ...o,
  };
  await w.storage.entries.insert(entry);
  return entry;
}

/** A CSR for a fresh key, read as the HTTP edge reads it (signature not yet verified). */
export async function csrOf(pem?: string): Promise<UnverifiedCsr> {
  return readCsr(pem ?? (await keyAndCsr('ignored-by-the-ca')).csrPem);
}

/** A CSR (PEM) whose signature no longer verifies: the last byte of its ECDSA `s` flipped. */
export async function badSignatureCsrPem(): Promise<string> {
  const der = Buffer.from(readCsr((await keyAndCsr()).csrPem).der);
  der[der.length - 1] ^= 0x01;
  return toPem('CERTIFICATE REQUEST', der);
}

export const badSignatureCsr = async (): Promise<UnverifiedCsr> => readCsr(await badSignatureCsrPem());

/** A leaf, a PEM or a DER, read by node:crypto (not by our own reader). */
export const x509 = (c: IssuedLeaf | string | Buffer): X509Certificate =>
  new X509Certificate(typeof c === 'string' || Buffer.isBuffer(c) ? c : c.certificatePem);

/**
 * Everything the use cases write, in a comparable form: `expect(await dump(s)).toEqual(before)`
 * proves a refusal wrote nothing.
 */
export async function dump(s: Storage) {
  const cas = await s.cas.listCas();
  return {
    cas: cas.map((c) => [c.id, c.active]),
    certificates: (await s.certificates.list({ limit: 10_000 }))
      .map((c) => [c.serial, c.status, c.revokedAt?.toISOString() ?? null])
      .sort(),
    nodes: (await s.nodes.list()).map((n) => [n.id, n.status, n.lastSeenAt?.toISOString() ?? null]),
    audit: (await s.audit.list({ limit: 10_000 })).map((a) => [a.event, a.outcome, a.subject]),
    events: await s.revocations.eventsSince(0, 10_000),
    crls: await Promise.all(cas.map(async (c) => (await s.crls.latest(c.id))?.crlNumber ?? null)),
    jwtKeys: (await s.jwtKeys.list()).map((k) => [k.kid, k.caId, k.retiredAt?.toISOString() ?? null]),
  };
}

/**
 * The same storage, but the guarded one-statement inserts of the fast paths (workload, renewal),
 * and the JWT-SVID guard's read, refuse (as they do when a concurrent change wins the race), so a use case takes its
 * general path.
 */
export function withoutFastPaths(s: Storage): Storage & { refused: string[] } {
  const refused: string[] = [];
  return {
    ...s,
    refused,
    issuances: {
      recordWorkloadGuarded: async () => {
        refused.push('workload');
        return false;
      },
      recordRenewalGuarded: async () => {
        refused.push('renewal');
        return false;
      },
      jwtMintAllowed: async () => {
        refused.push('jwt');
        return false;
      },
      // An attestation has no general path: its one statement is the only way it records.
      recordAttestation: (r, a, g) => s.issuances.recordAttestation(r, a, g),
    },
  };
}

/** The audit rows of one event, oldest first. */
export async function auditRows(s: Storage, event: string) {
  return (await s.audit.list({ event, limit: 10_000 })).reverse();
}
