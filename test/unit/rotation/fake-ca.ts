import { X509Certificate } from 'node:crypto';
import {
  type AttestParams,
  CaClientError,
  type Issuance,
  type NodeCaApi,
  type RenewParams,
} from '../../../clients/rotation/src';
import type { FakeClock } from '../../../services/ca/src/domain/clock';
import { issueLeaf } from '../../../services/ca/src/domain/issue';
import { refreshAt } from '../../../services/ca/src/domain/refresh';
import { nodeSpiffeId } from '../../../services/ca/src/domain/trust-domain';
import { parseCsr } from '../../../services/ca/src/pki/csr';
import { memoryCertificates, TEST_TD, testCa } from '../../fixtures/test-ca';

/**
 * A CA in memory that speaks NodeCaApi: real certificates from the real issuer, token and
 * supersede bookkeeping kept in arrays. A fake, not a mock: it has no expectations, it just answers.
 * `failures` are thrown (in order) before the next attest or renew does anything.
 */
export class FakeCa implements NodeCaApi {
  readonly ca = testCa();
  readonly certificates = memoryCertificates();
  readonly calls: {
    op: 'bundle' | 'ca-certificates' | 'attest' | 'renew';
    trustBundlePem?: string;
    token?: string;
  }[] = [];
  readonly failures: CaClientError[] = [];
  /** The bundle handed out unverified; an impostor would hand out its own. */
  bundleForBootstrap: string;
  readonly tokens = new Map<string, number>();
  #nodes = 0;

  constructor(
    readonly clock: FakeClock,
    readonly nodeTtlMs = 24 * 3600_000,
  ) {
    this.bundleForBootstrap = this.ca.keyring.bundlePem;
  }

  get pin(): string {
    return this.ca.keyring.pin;
  }

  /** A token in the wire format, pinned to this CA (or to `pin`). */
  token(uses = 1, pin = this.pin): string {
    const id = (this.tokens.size + 1).toString(16).padStart(16, '0');
    const token = `BATON1-${pin}-${id}.${'a'.repeat(52)}`;
    this.tokens.set(token, uses);
    return token;
  }

  async fetchBundleUnverified(): Promise<string> {
    this.calls.push({ op: 'bundle' });
    return this.bundleForBootstrap;
  }

  /** GET /v1/ca-certificates: the signing CA's certificates, as every leaf's chain carries them. */
  async fetchCaCertificatesUnverified(): Promise<string> {
    this.calls.push({ op: 'ca-certificates' });
    return this.ca.keyring.signing.chainPem;
  }

  async attest(p: AttestParams): Promise<Issuance> {
    this.calls.push({ op: 'attest', trustBundlePem: p.trustBundlePem, token: p.token });
    this.#failIfAsked();
    const left = this.tokens.get(p.token) ?? 0;
    if (left < 1) throw new CaClientError('ERR_TOKEN_INVALID', 'invalid join token', 401);
    this.tokens.set(p.token, left - 1);
    return this.issueFor(`node${++this.#nodes}`, p.csrPem);
  }

  async renew(p: RenewParams): Promise<Issuance> {
    this.calls.push({ op: 'renew', trustBundlePem: p.trustBundlePem });
    this.#failIfAsked();
    const leaf = new X509Certificate(p.certificateChainPem);
    const record = this.certificates.all.find((c) => c.serial === leaf.serialNumber.toLowerCase());
    if (!record?.nodeId)
      throw new CaClientError('ERR_NOT_AUTHENTICATED', 'a node certificate is required', 401);
    if (record.status === 'superseded')
      throw new CaClientError(
        'ERR_CERT_SUPERSEDED',
        'this certificate has been replaced by a newer one',
        403,
      );
    if (record.status === 'revoked')
      throw new CaClientError('ERR_CERT_REVOKED', 'this certificate has been revoked', 403);
    if (record.notAfter <= this.clock.now())
      throw new CaClientError('ERR_CERT_EXPIRED', 'this certificate has expired: attest again', 401);
    return this.issueFor(record.nodeId, p.csrPem);
  }

  count(op: 'bundle' | 'ca-certificates' | 'attest' | 'renew'): number {
    return this.calls.filter((c) => c.op === op).length;
  }

  #failIfAsked(): void {
    const f = this.failures.shift();
    if (f) throw f;
  }

  /** Issues a node certificate for `nodeId` (superseding its others), as the CA does on attest. */
  async issueFor(nodeId: string, csrPem: string): Promise<Issuance> {
    await this.certificates.supersedeForNode(nodeId, 'node');
    const spiffeId = nodeSpiffeId(TEST_TD, nodeId);
    const leaf = await issueLeaf(
      { clock: this.clock, issuer: this.ca.keyring.signing, certificates: this.certificates },
      {
        kind: 'node',
        spiffeId,
        subject: { O: TEST_TD, OU: 'worker', CN: nodeId },
        key: parseCsr(csrPem).key,
        ttlMs: this.nodeTtlMs,
        nodeId,
      },
    );
    return {
      spiffeId,
      serial: leaf.record.serial,
      certificateChainPem: leaf.chainPem,
      bundlePem: this.ca.keyring.bundlePem,
      expiresAt: leaf.record.notAfter,
      refreshAt: refreshAt(this.clock.now(), leaf.record.notAfter, () => 0.5),
      nodeId,
    };
  }
}
