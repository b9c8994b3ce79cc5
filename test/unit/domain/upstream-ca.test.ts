import { caStatus, startRootRotation } from '../../../services/ca/src/domain/root-rotation';
import { createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { nullValue, octets, oid, seq, uintBytes } from '../../../common/src/der';
import { rotateSigningCa } from '../../../services/ca/src/domain/ca-rotation';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { crlIssuers, publishAllCrls } from '../../../services/ca/src/domain/crl-publisher';
import { issueLeaf } from '../../../services/ca/src/domain/issue';
import { createJwtKey } from '../../../services/ca/src/domain/jwt-keys';
import { loadKeyring } from '../../../services/ca/src/domain/keyring';
import { answerOcsp } from '../../../services/ca/src/domain/ocsp-responder';
import type { Installation } from '../../../services/ca/src/domain/ports';
import {
  assertRotatable,
  isOutsideCa,
  pendingCsrPem,
  prepareUpstreamCa,
  unwrapPendingKey,
  upstreamCaRecords,
} from '../../../services/ca/src/domain/upstream-ca';
import { BatonError } from '../../../services/ca/src/ground/errors';
import { parseCsr } from '../../../services/ca/src/pki/csr';
import { kekFromBase64 } from '../../../services/ca/src/pki/kek';
import { describePublicKey, generateP256, keyIdentifier, spkiOf } from '../../../services/ca/src/pki/keys';
import { issuerHashes, OCSP_OID } from '../../../services/ca/src/pki/ocsp';
import { rootPin } from '../../../services/ca/src/pki/pin';
import { checkUpstreamChain } from '../../../services/ca/src/pki/upstream-chain';
import { memoryCertificates } from '../../fixtures/test-ca';
import { CorporatePki, SIGNING_CA_EXT } from '../../support/corporate-ca';
import { createMemoryStorage } from '../../support/memory-storage';
import { describeWithTool, opensslText, tempDir } from '../../support/tools';

/**
 * domain/upstream-ca.ts and what the keyring makes of an upstream CA (issue 18): the outside root
 * is the bundle and the pin, the outside intermediates follow Baton's signing CA in every chain,
 * leaves name the SKI the outside CA wrote, and nothing is ever signed with an outside CA's key
 * (Baton has none): no CRL, no OCSP answer, no rotation.
 */
const TD = 'prod.example.org';
const URL_ = 'https://ca.example.org:8443';

describeWithTool('openssl', 'upstream CA in the domain', () => {
  const dir = tempDir('baton-upstream-domain-');
  afterAll(() => dir.cleanup());
  const clock = new FakeClock(new Date());
  const kek = kekFromBase64(randomBytes(32).toString('base64'), 'test');
  const installation: Installation = {
    trustDomain: TD,
    publicUrl: URL_,
    nodeTtlMs: 86400_000,
    workloadTtlMs: 3600_000,
    adminTtlMs: 8 * 3600_000,
    createdAt: clock.now(),
  };
  const pending = prepareUpstreamCa({ installation, kek, now: clock.now() });
  const pki = new CorporatePki(dir.path);
  const root = pki.root('Corp Root');
  const policy = pki.intermediate('Corp Policy CA', root);
  const issuing = pki.intermediate('Corp Issuing CA', policy);
  const signedPem = pki.signPem(pendingCsrPem(pending), issuing, { ext: SIGNING_CA_EXT(TD) });
  const path = checkUpstreamChain({
    certPem: signedPem,
    chainPem: root.pem + issuing.pem + policy.pem,
    spki: pending.spki,
    trustDomain: TD,
    now: clock.now(),
  });
  const records = upstreamCaRecords(pending, path, clock.now());
  const jwtKey = createJwtKey({ kek, caId: pending.caId, now: clock.now() });
  const keyring = loadKeyring(records, kek, URL_, [jwtKey.record]);

  it('the CSR verifies and certifies the pending key', () => {
    const csr = parseCsr(pendingCsrPem(pending));
    expect(csr.key.spki.equals(pending.spki)).toBe(true);
    expect(pending.caId).toMatch(/^ca-[0-9a-f]{16}$/);
  });

  it('records: the outside root (keyless, in the bundle), its intermediates (keyless, inactive) and the signing CA (its key, active), parents first', () => {
    expect(records.map((r) => [r.kind, r.active, isOutsideCa(r)])).toEqual([
      ['root', true, true],
      ['intermediate', false, true],
      ['intermediate', false, true],
      ['intermediate', true, false],
    ]);
    expect(records.map((r) => r.parentId)).toEqual([null, records[0]!.id, records[1]!.id, records[2]!.id]);
    expect(
      records.slice(0, 3).every((r) => /^ext-[0-9a-f]{16}$/.test(r.id) && r.wrappedKey.blob.length === 0),
    ).toBe(true);
    expect(records[3]!.id).toBe(pending.caId);
  });

  it('the keyring: the outside root is the bundle and the pin; the signing chain is Baton, issuing, policy', () => {
    const rootX509 = new X509Certificate(root.pem);
    expect(keyring.roots.map((r) => r.record.id)).toEqual([records[0]!.id]);
    expect(keyring.roots[0]!.outside).toBe(true);
    expect(keyring.pin).toBe(rootPin(rootX509.publicKey.export({ type: 'spki', format: 'der' })));
    expect(new X509Certificate(keyring.bundlePem).fingerprint256).toBe(rootX509.fingerprint256);
    expect(keyring.signing.record.id).toBe(pending.caId);
    expect(keyring.signing.outside).toBeUndefined();
    const chain = keyring.signing.chainPem.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
    )!;
    expect(chain.map((c) => new X509Certificate(c).subject.split('\n').at(-1))).toEqual([
      expect.stringMatching(/^CN=Baton Signing CA/),
      'CN=Corp Issuing CA',
      'CN=Corp Policy CA',
    ]);
  });

  it("leaves name the SKI the outside CA wrote (openssl's SHA-1, not Baton's keyIdentifier) in their AKI", async () => {
    const ski = /Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/
      .exec(opensslText(signedPem))![1]!
      .replace(/:/g, '');
    expect(keyring.signing.keyId.toString('hex').toUpperCase()).toBe(ski);
    expect(keyring.signing.keyId.equals(keyIdentifier(pending.spki))).toBe(false);
    const leaf = await issueLeaf(
      { clock, issuer: keyring.signing, certificates: memoryCertificates() },
      {
        kind: 'workload',
        spiffeId: `spiffe://${TD}/web`,
        subject: { O: TD, CN: 'web' },
        key: describePublicKey(spkiOf(createPublicKey(generateP256().privateKey))),
        ttlMs: 3600_000,
      },
    );
    const aki = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(
      opensslText(leaf.certificatePem),
    )![1]!;
    expect(aki.replace(/:/g, '')).toBe(ski);
    expect(leaf.chainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(4);
  });

  it('signs nothing with an outside CA: its signer refuses, no CRL is published for it, OCSP about it is unauthorized', async () => {
    expect(() => keyring.roots[0]!.signer.sign(Buffer.from('x'))).toThrow(
      new BatonError('ERR_CA_UNAVAILABLE', `${records[0]!.id} is an outside CA: Baton holds no key for it`),
    );
    expect(crlIssuers(keyring, clock.now()).map((c) => c.record.id)).toEqual([pending.caId]);
    const storage = createMemoryStorage({ installation, cas: records });
    const crls = await publishAllCrls({ clock, storage, keyring, nextUpdateMs: 3600_000 }, { force: true });
    expect(crls.map((c) => c.caId)).toEqual([pending.caId]);

    // A CertID naming the corporate issuing CA (the issuer of Baton's signing CA certificate).
    const h = issuerHashes(records[2]!.certificateDer).sha1;
    const certId = seq(
      seq(oid(OCSP_OID.sha1), nullValue()),
      octets(h.nameHash),
      octets(h.keyHash),
      uintBytes(Buffer.from(path.signing.fields.serialHex, 'hex')),
    );
    const answer = await answerOcsp(
      { clock, keyring, certificates: memoryCertificates() },
      seq(seq(seq(seq(certId)))),
    );
    expect(answer.kind).toBe('unauthorized');
  });

  it('rotation refuses: ERR_UPSTREAM_ROTATION, and nothing is written', async () => {
    expect(() => assertRotatable(keyring)).toThrow(
      expect.objectContaining({ code: 'ERR_UPSTREAM_ROTATION' }) as unknown as Error,
    );
    const storage = createMemoryStorage({ installation, cas: records });
    await expect(
      rotateSigningCa(
        { clock, storage, kek, keyring, installation, publicUrl: URL_ },
        { actor: 'test', source: null },
      ),
    ).rejects.toMatchObject({ code: 'ERR_UPSTREAM_ROTATION' });
    // A root rotation too: the root is the outside CA's.
    await expect(
      startRootRotation(
        { clock, storage, kek, keyring, installation, publicationUrl: URL_ },
        { actor: 'test', source: null },
      ),
    ).rejects.toMatchObject({ code: 'ERR_UPSTREAM_ROTATION' });
    expect((await storage.cas.listCas()).map((c) => c.id)).toEqual(records.map((r) => r.id));
    // ca status: everything Baton issues chains to the outside root (through its intermediates).
    expect((await caStatus({ clock, storage })).phase).toBe('stable');
  });

  it('the pending key unwraps with its KEK only', () => {
    expect(spkiOf(createPublicKey(unwrapPendingKey(pending, kek))).equals(pending.spki)).toBe(true);
    const other = kekFromBase64(randomBytes(32).toString('base64'), 'other');
    expect(() => unwrapPendingKey(pending, other)).toThrow(
      expect.objectContaining({ code: 'ERR_KEK_INVALID' }) as unknown as Error,
    );
  });
});
