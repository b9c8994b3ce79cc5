import { caSetVersion, rotateSigningCa } from '../../../../services/ca/src/domain/ca-rotation';
import { INTERMEDIATE_LIFETIME_MS } from '../../../../services/ca/src/domain/ca-hierarchy';
import { crlIssuers, publishAllCrlsIn } from '../../../../services/ca/src/domain/crl-publisher';
import { readKeyState } from '../../../../services/ca/src/domain/jwt-keys';
import { loadKeyring } from '../../../../services/ca/src/domain/keyring';
import { renewNode } from '../../../../services/ca/src/domain/node-identity';
import type { Storage } from '../../../../services/ca/src/domain/ports';
import { TEST_URL } from '../../../fixtures/test-ca';
import {
  AUDIT,
  addNode,
  auditRows,
  claimFor,
  csrOf,
  DAY,
  dump,
  HOUR,
  nodeDeps,
  type World,
  world,
  x509,
} from './world';

/** rotateSigningCa (domain/ca-rotation.ts), `baton ca rotate`, over the in-memory ports. */

const rotate = (w: World, storage: Storage = w.storage) =>
  rotateSigningCa(
    {
      clock: w.clock,
      storage,
      kek: w.ca.kek,
      keyring: w.keyring,
      installation: w.installation,
      publicUrl: TEST_URL,
    },
    AUDIT,
  );

/** What a replica does when the CA set changed (server/start-server.ts reloadKeyring). */
const reload = async (w: World) => {
  const { cas, jwtKeys } = await readKeyState(w.storage);
  return loadKeyring(cas, w.ca.kek, TEST_URL, jwtKeys);
};

describe('rotateSigningCa', () => {
  it('the audit row names the intermediate the rotation replaced, also when the keyring given is older', async () => {
    const w = await world();
    const first = await rotate(w);
    // w.keyring still has the original intermediate as its signing CA: a process that has not reloaded.
    const second = await rotate(w);
    const rows = await auditRows(w.storage, 'ca.rotated');
    expect(rows.map((r) => [r.subject, r.details.previous])).toEqual([
      [first.id, w.keyring.signing.record.id],
      [second.id, first.id],
    ]);
  });

  it('adds a new active intermediate under the same root; the old one stays, inactive', async () => {
    const w = await world();
    const root = w.keyring.roots[0]!;
    const old = w.keyring.signing;
    const versionBefore = caSetVersion(await w.storage.cas.listCas());
    w.clock.advance(DAY);
    const now = w.clock.now();

    const created = await rotate(w);

    expect(created).toMatchObject({
      kind: 'intermediate',
      parentId: root.record.id,
      active: true,
      createdAt: now,
    });
    expect(created.id).not.toBe(old.record.id);
    expect(created.notAfter.getTime()).toBe(now.getTime() + INTERMEDIATE_LIFETIME_MS);
    const cert = x509(created.certificateDer);
    expect(cert.ca).toBe(true);
    expect(cert.verify(x509(root.certPem).publicKey)).toBe(true);

    const cas = await w.storage.cas.listCas();
    expect(cas.map((c) => [c.id, c.kind, c.active])).toEqual([
      [root.record.id, 'root', true],
      [old.record.id, 'intermediate', false],
      [created.id, 'intermediate', true],
    ]);
    expect(caSetVersion(cas)).not.toBe(versionBefore);
    const rows = await auditRows(w.storage, 'ca.rotated');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      actor: AUDIT.actor,
      subject: created.id,
      details: { previous: old.record.id, not_after: created.notAfter.toISOString() },
    });

    // The keyring it was given is not changed: each replica reloads it from the CA set.
    expect(w.keyring.signing.record.id).toBe(old.record.id);
    const reloaded = await reload(w);
    expect(reloaded.signing.record.id).toBe(created.id);
    // The old intermediate stays in the keyring (its CRL is still published); the bundle is the root.
    expect(reloaded.all.map((c) => c.record.id)).toContain(old.record.id);
    expect(
      crlIssuers(reloaded, now)
        .map((c) => c.record.id)
        .sort(),
    ).toEqual([root.record.id, old.record.id, created.id].sort());
    expect(reloaded.bundlePem).toBe(w.keyring.bundlePem);
    expect(reloaded.pin).toBe(w.keyring.pin);
  });

  it('leaves issued after the rotation chain to the new intermediate; the old ones stay valid', async () => {
    const w = await world();
    const before = await addNode(w);
    const old = w.keyring.signing;
    w.clock.advance(HOUR / 2);
    const created = await rotate(w);
    const keyring = await reload(w);
    const newCa = x509(keyring.signing.certPem);

    // A node holding a certificate of the old intermediate renews: it gets one of the new.
    const renewed = await renewNode(nodeDeps(w, { keyring }), {
      claim: before.claim,
      csr: await csrOf(),
      audit: AUDIT,
    });
    expect(renewed.leaf.record.caId).toBe(created.id);
    expect(x509(renewed.leaf).verify(newCa.publicKey)).toBe(true);
    expect(x509(renewed.leaf).verify(x509(old.certPem).publicKey)).toBe(false);
    expect(renewed.leaf.chainPem).toBe(renewed.leaf.certificatePem + keyring.signing.certPem);
    expect(renewed.bundlePem).toBe(w.keyring.bundlePem);

    // A certificate of the old intermediate is still a current credential: it renews, too.
    const other = await addNode(w);
    expect(other.cert.record.caId).toBe(old.record.id);
    const again = await renewNode(nodeDeps(w, { keyring }), {
      claim: other.claim,
      csr: await csrOf(),
      audit: AUDIT,
    });
    expect(again.leaf.record.caId).toBe(created.id);
    // …and the renewed certificate renews in turn under the new CA.
    const third = await renewNode(nodeDeps(w, { keyring }), {
      claim: claimFor(other.node.id, again.leaf),
      csr: await csrOf(),
      audit: AUDIT,
    });
    expect(third.leaf.record.caId).toBe(created.id);

    // Both intermediates get a CRL.
    const crls = await w.storage.transaction((tx) =>
      publishAllCrlsIn(tx, { clock: w.clock, keyring, nextUpdateMs: HOUR }),
    );
    expect(crls.map((c) => c.caId).sort()).toEqual(keyring.all.map((c) => c.record.id).sort());
  });

  it("caps the new intermediate at the root's notAfter", async () => {
    const w = await world();
    const root = w.keyring.roots[0]!.record;
    w.clock.set(new Date(root.notAfter.getTime() - 30 * DAY));
    const created = await rotate(w);
    expect(created.notAfter).toEqual(root.notAfter);
  });

  it('a failure in its transaction changes nothing: no new CA, the old one still active, no audit row', async () => {
    const w = await world();
    const before = await dump(w.storage);
    const failingAudit: Storage = {
      ...w.storage,
      transaction: (fn) =>
        w.storage.transaction((tx) =>
          fn({
            ...tx,
            audit: {
              ...tx.audit,
              append: async () => {
                throw new Error('audit unavailable');
              },
            },
          }),
        ),
    };
    await expect(rotate(w, failingAudit)).rejects.toThrow('audit unavailable');
    expect(await dump(w.storage)).toEqual(before);
    expect((await reload(w)).signing.record.id).toBe(w.keyring.signing.record.id);
  });
});
