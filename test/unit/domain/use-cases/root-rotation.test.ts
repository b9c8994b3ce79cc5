import { X509Certificate } from 'node:crypto';
import { presentEvidence } from '../../../../services/ca/src/domain/attestation/attestor';
import { joinTokenAttestor } from '../../../../services/ca/src/domain/attestation/join-token-attestor';
import { rotateSigningCa } from '../../../../services/ca/src/domain/ca-rotation';
import { crlIssuers } from '../../../../services/ca/src/domain/crl-publisher';
import { createJoinToken, parseJoinToken } from '../../../../services/ca/src/domain/join-token';
import { readKeyState } from '../../../../services/ca/src/domain/jwt-keys';
import { type Keyring, loadKeyring } from '../../../../services/ca/src/domain/keyring';
import { attestNode, renewNode } from '../../../../services/ca/src/domain/node-identity';
import { revokeNode } from '../../../../services/ca/src/domain/revocation';
import {
  caStatus,
  casNotUnder,
  finishRootRotation,
  startRootRotation,
} from '../../../../services/ca/src/domain/root-rotation';
import { readCsr } from '../../../../services/ca/src/pki/csr';
import { pathToRoot, presentedChainPem, trustStorePem } from '../../../../common/src/trust-store';
import { TEST_TD, TEST_URL } from '../../../fixtures/test-ca';
import { errorOf } from '../../../support/errors';
import { keyAndCsr } from '../../../support/node-client';
import { AUDIT, addNode, auditRows, csrOf, dump, HOUR, nodeDeps, type World, world, x509 } from './world';

/** Root rotation (domain/root-rotation.ts): `baton ca rotate --root [--finish]`, `ca status`. */

const certs = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? []).map(
    (p) => new X509Certificate(p),
  );

/** What a replica does when the CA set changed (server/start-server.ts reloadKeyring). */
const reload = async (w: World): Promise<Keyring> => {
  const { cas, jwtKeys, cross } = await readKeyState(w.storage);
  return loadKeyring(cas, w.ca.kek, TEST_URL, jwtKeys, TEST_URL, cross);
};

const start = (w: World, keyring: Keyring = w.keyring) =>
  startRootRotation(
    {
      clock: w.clock,
      storage: w.storage,
      kek: w.ca.kek,
      keyring,
      installation: w.installation,
      publicationUrl: TEST_URL,
    },
    AUDIT,
  );
const finish = (w: World, force = false) =>
  finishRootRotation({ clock: w.clock, storage: w.storage }, { force }, AUDIT);
const status = (w: World) => caStatus({ clock: w.clock, storage: w.storage });

const token = (w: World, keyring: Keyring) =>
  createJoinToken(
    { clock: w.clock, tokens: w.storage.tokens },
    {
      role: 'worker',
      ttlMs: HOUR,
      uses: 1,
      nodeName: null,
      nodeTtlMs: null,
      createdBy: 'test',
      pin: keyring.pin,
    },
  );
const attest = async (w: World, keyring: Keyring, t: string) =>
  attestNode(nodeDeps(w, { keyring }), {
    evidence: presentEvidence(joinTokenAttestor, { token: parseJoinToken(t) }),
    csr: readCsr((await keyAndCsr()).csrPem),
    audit: AUDIT,
  });

/** A leaf's path to one of `rootsPem`, built from its served chain in any order, as Go or GnuTLS would. */
const verifiesUnder = (chainPem: string, rootsPem: string) =>
  pathToRoot(certs(chainPem), certs(rootsPem)) !== undefined;

describe('root rotation', () => {
  it('start: a new root in the bundle, and a signing CA certified by both roots, in one step', async () => {
    const w = await world();
    const oldRoot = w.keyring.roots[0]!;
    w.clock.advance(HOUR);
    const started = await start(w);
    const k = await reload(w);

    // The bundle holds both roots, the new one first; new tokens pin it, old tokens still pass.
    expect(k.roots.map((r) => r.record.id)).toEqual([started.root.id, oldRoot.record.id]);
    expect(certs(k.bundlePem)).toHaveLength(2);
    expect(k.pin).toBe(started.pin);
    expect(k.pins).toEqual([started.pin, w.keyring.pin]);
    // The new root is made as the first was: pathLen 1, so the next rotation is the same one.
    const newRoot = x509(started.root.certificateDer);
    expect(newRoot.ca).toBe(true);
    expect(newRoot.toLegacyObject().ext_key_usage).toBeUndefined();
    expect(newRoot.checkIssued(newRoot)).toBe(true);

    // The signing CA: its own certificate by the new root, its cross-certificate by the old one,
    // the same subject and key; the chain served after leaves lists the cross-certificate first.
    expect(k.signing.record.id).toBe(started.signing.id);
    expect(started.signing.parentId).toBe(started.root.id);
    const [cross, own] = certs(k.signing.chainPem);
    expect(own!.raw.equals(started.signing.certificateDer)).toBe(true);
    expect(cross!.subject).toBe(own!.subject);
    expect(cross!.publicKey.export({ format: 'der', type: 'spki' })).toEqual(
      own!.publicKey.export({ format: 'der', type: 'spki' }),
    );
    expect(cross!.verify(x509(oldRoot.certPem).publicKey)).toBe(true);
    expect(own!.verify(newRoot.publicKey)).toBe(true);
    expect(new Date(cross!.validTo).getTime()).toBeLessThanOrEqual(oldRoot.record.notAfter.getTime());

    // A leaf of the new CA verifies under either root alone, and under both.
    const n = await addNode({ ...w, keyring: k });
    for (const roots of [oldRoot.certPem, k.roots[0]!.certPem, k.bundlePem])
      expect(verifiesUnder(n.cert.chainPem, roots)).toBe(true);
    // The server trusts the bundle's roots and what they issued (no more): 2 roots, 2 intermediates
    // under them, 1 cross-certificate.
    expect(certs(k.trustPem)).toHaveLength(5);
    // A JWT key of the new signing CA, the others retired; old CRLs still published.
    expect(k.jwt.active?.caId).toBe(started.signing.id);
    expect(crlIssuers(k, w.clock.now()).map((c) => c.record.id)).toContain(oldRoot.record.id);

    const rows = await auditRows(w.storage, 'ca.root_rotation_started');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      subject: started.root.id,
      details: { previous_root: oldRoot.record.id, signing_ca: started.signing.id },
    });
  });

  it('start twice, or a signing CA rotation meanwhile, is refused and writes nothing', async () => {
    const w = await world();
    await start(w);
    const k = await reload(w);
    const before = await dump(w.storage);
    expect((await errorOf(start(w, k))).code).toBe('ERR_ROTATION_IN_PROGRESS');
    // With the keyring of a replica that has not reloaded: the database decides.
    expect((await errorOf(start(w))).code).toBe('ERR_ROTATION_IN_PROGRESS');
    const signingRotation = (keyring: Keyring) =>
      rotateSigningCa(
        {
          clock: w.clock,
          storage: w.storage,
          kek: w.ca.kek,
          keyring,
          installation: w.installation,
          publicUrl: TEST_URL,
        },
        AUDIT,
      );
    expect((await errorOf(signingRotation(k))).code).toBe('ERR_ROTATION_IN_PROGRESS');
    expect((await errorOf(signingRotation(w.keyring))).code).toBe('ERR_ROTATION_IN_PROGRESS');
    expect(await dump(w.storage)).toEqual(before);
  });

  it('status counts what chains only to the old root; the finish waits for nodes, then drops the old root', async () => {
    const w = await world();
    const stayed = await addNode(w);
    const renews = await addNode(w);
    const revoked = await addNode(w);
    expect(await status(w)).toMatchObject({
      phase: 'stable',
      old_root_only: { nodes: 0, workload_certificates: 0 },
    });

    await start(w);
    const k = await reload(w);
    let s = await status(w);
    expect(s.phase).toBe('rotating');
    expect(s.roots.map((r) => r.current)).toEqual([true, false]);
    expect(s.signing_ca.cross_signed_by).toEqual([w.keyring.roots[0]!.record.id]);
    expect(s.old_root_only).toEqual({ nodes: 3, workload_certificates: 0 });

    // A renewal moves a node under the new signing CA (the old certificate is superseded).
    await renewNode(nodeDeps(w, { keyring: k }), { claim: renews.claim, csr: await csrOf(), audit: AUDIT });
    await revokeNode(
      { clock: w.clock, storage: w.storage, trustDomain: TEST_TD, publishCrls: async () => [] },
      { nodeId: revoked.node.id, reason: 1, audit: AUDIT },
    );
    s = await status(w);
    expect(s.old_root_only.nodes).toBe(1);

    const before = await dump(w.storage);
    const refused = await errorOf(finish(w));
    expect(refused.code).toBe('ERR_ROTATION_PENDING');
    expect(refused.message).toMatch(/^1 node\(s\) still hold/);
    expect(await dump(w.storage)).toEqual(before);

    await renewNode(nodeDeps(w, { keyring: k }), { claim: stayed.claim, csr: await csrOf(), audit: AUDIT });
    const done = await finish(w);
    expect(done).toMatchObject({ retired: [w.keyring.roots[0]!.record.id], forced: false });
    expect((await errorOf(finish(w))).code).toBe('ERR_NO_ROTATION');

    const after = await reload(w);
    expect(after.roots.map((r) => r.record.id)).toEqual([k.roots[0]!.record.id]);
    expect(after.pins).toEqual([k.pin]);
    // The cross-certificate is served no more; the signing CA stays the same.
    expect(after.signing.record.id).toBe(k.signing.record.id);
    expect(certs(after.signing.chainPem)).toHaveLength(1);
    expect(certs(after.trustPem)).toHaveLength(2);
    expect((await status(w)).phase).toBe('stable');
    expect(await auditRows(w.storage, 'ca.root_rotation_finished')).toHaveLength(1);
  });

  it('--force finishes with nodes left under the old root, and says how many', async () => {
    const w = await world();
    await addNode(w);
    await start(w);
    const done = await finish(w, true);
    expect(done).toMatchObject({ forced: true, oldRootOnly: { nodes: 1 } });
    expect((await status(w)).old_root_only.nodes).toBe(1);
    expect((await auditRows(w.storage, 'ca.root_rotation_finished'))[0]).toMatchObject({
      details: { forced: true, old_root_only_nodes: 1 },
    });
  });

  it('tokens of the old root work until the finish and are refused after it; new ones pin the new root', async () => {
    const w = await world();
    const before = await token(w, w.keyring);
    const afterFinish = await token(w, w.keyring);
    await start(w);
    const k = await reload(w);
    const fresh = await token(w, k);
    expect(parseJoinToken(fresh.token).pin).toBe(k.pin);
    expect(parseJoinToken(fresh.token).pin).not.toBe(w.keyring.pin);
    expect((await attest(w, k, before.token)).leaf.record.caId).toBe(k.signing.record.id);
    expect((await attest(w, k, fresh.token)).leaf.record.caId).toBe(k.signing.record.id);

    await finish(w, true);
    const done = await reload(w);
    expect((await errorOf(attest(w, done, afterFinish.token))).code).toBe('ERR_TOKEN_INVALID');
    // Refused before it was spent.
    expect((await w.storage.tokens.findById(afterFinish.record.id))?.usesLeft).toBe(1);
  });

  it('a second rotation is the same as the first', async () => {
    const w = await world();
    await start(w);
    await finish(w, true);
    const k1 = await reload(w);
    const second = await start(w, k1);
    const k2 = await reload(w);
    expect(k2.roots.map((r) => r.record.id)).toEqual([second.root.id, k1.roots[0]!.record.id]);
    const n = await addNode({ ...w, keyring: k2 });
    expect(verifiesUnder(n.cert.chainPem, k1.roots[0]!.certPem)).toBe(true);
    expect(verifiesUnder(n.cert.chainPem, k2.roots[0]!.certPem)).toBe(true);
    await finish(w, true);
    expect((await status(w)).roots).toHaveLength(1);
  });

  it('trustStorePem adds only CA certificates a root issued, whatever else the candidates hold', async () => {
    const w = await world();
    const oldRoot = w.keyring.roots[0]!;
    await start(w);
    const k = await reload(w);
    const n = await addNode({ ...w, keyring: k });
    const newRootPem = k.roots[0]!.certPem;
    // The new root's certificate of the signing CA is added; the cross-certificate (the old
    // root's) and the leaf are not.
    const store = certs(trustStorePem(newRootPem, n.cert.chainPem));
    expect(store.map((c) => c.subject)).toEqual([x509(newRootPem).subject, x509(k.signing.certPem).subject]);
    expect(store[1]!.raw.equals(k.signing.record.certificateDer)).toBe(true);
    // Under the old root alone: the cross-certificate.
    const oldStore = certs(trustStorePem(oldRoot.certPem, n.cert.chainPem));
    expect(oldStore).toHaveLength(2);
    expect(oldStore[1]!.verify(x509(oldRoot.certPem).publicKey)).toBe(true);
    // Nothing a root did not sign: another installation's CA is left out.
    const other = await world();
    expect(certs(trustStorePem(newRootPem, other.keyring.signing.certPem))).toHaveLength(1);
  });
});

describe('presentedChainPem', () => {
  it('drops the cross-certificate once the holder’s bundle has only the new root; keeps it before', async () => {
    const w = await world();
    const oldRoot = w.keyring.roots[0]!;
    await startRootRotation(
      {
        clock: w.clock,
        storage: w.storage,
        kek: w.ca.kek,
        keyring: w.keyring,
        installation: w.installation,
        publicationUrl: TEST_URL,
      },
      AUDIT,
    );
    const { cas, jwtKeys, cross } = await readKeyState(w.storage);
    const k = loadKeyring(cas, w.ca.kek, TEST_URL, jwtKeys, TEST_URL, cross);
    const n = await addNode({ ...w, keyring: k });
    const chain = n.cert.chainPem;
    // Both roots, or the old one alone: the chain as served.
    expect(presentedChainPem(chain, k.bundlePem)).toBe(chain);
    expect(presentedChainPem(chain, oldRoot.certPem)).toBe(
      certs(chain)
        .slice(0, 2)
        .map((c) => c.toString())
        .join(''),
    );
    // The new root alone: leaf and the new root's certificate of the CA, which OpenSSL follows.
    const presented = certs(presentedChainPem(chain, k.roots[0]!.certPem));
    expect(presented.map((c) => c.fingerprint256)).toEqual([
      certs(chain)[0]!.fingerprint256,
      certs(chain)[2]!.fingerprint256,
    ]);
    // A bundle that leads nowhere changes nothing (the holder's own checks refuse that).
    const other = await world();
    expect(presentedChainPem(chain, other.keyring.bundlePem)).toBe(chain);
  });
});

describe('casNotUnder', () => {
  const ca = (id: string, kind: 'root' | 'intermediate', parentId: string | null) =>
    ({ id, kind, parentId }) as Parameters<typeof casNotUnder>[0][number];
  it('follows parents and cross-certificates up to the root, outside intermediates included', () => {
    const cas = [
      ca('r1', 'root', null),
      ca('s1', 'intermediate', 'r1'),
      ca('r2', 'root', null),
      ca('s2', 'intermediate', 'r2'),
      ca('ext-int', 'intermediate', 'r2'),
      ca('s3', 'intermediate', 'ext-int'),
    ];
    const cross = [{ caId: 's2', issuerId: 'r1' }] as unknown as Parameters<typeof casNotUnder>[1];
    expect(casNotUnder(cas, cross, 'r2')).toEqual(['r1', 's1']);
    expect(casNotUnder(cas, cross, 'r1')).toEqual(['r2', 'ext-int', 's3']);
  });
});
