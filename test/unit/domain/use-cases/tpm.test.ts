import { X509Certificate } from 'node:crypto';
import {
  type AttestationChallenge,
  presentEvidence,
} from '../../../../services/ca/src/domain/attestation/attestor';
import { tpmAttestor } from '../../../../services/ca/src/domain/attestation/tpm-attestor';
import { attestNode } from '../../../../services/ca/src/domain/node-identity';
import type { NodeRole } from '../../../../services/ca/src/domain/ports';
import { revokeNode } from '../../../../services/ca/src/domain/revocation';
import { addManufacturerCas, enrollTpm, parseEkId } from '../../../../services/ca/src/domain/tpm-enrollment';
import type { BatonError } from '../../../../services/ca/src/ground/errors';
import { readCsr } from '../../../../services/ca/src/pki/csr';
import {
  type EkCertificate,
  readEkCertificate,
  readManufacturerCas,
  readPublicArea,
  readQuote,
  readQuoteSignature,
  tpmQualifyingData,
} from '../../../../services/ca/src/pki/tpm';
import { TEST_TD } from '../../../fixtures/test-ca';
import { CorporatePki } from '../../../support/corporate-ca';
import { issueEkCertificate } from '../../../support/ek-certificates';
import { errorOf } from '../../../support/errors';
import { FakeTpm } from '../../../support/fake-tpm';
import { keyAndCsr } from '../../../support/node-client';
import { tempDir } from '../../../support/tools';
import { AUDIT, auditRows, dump, type World, world, x509 } from './world';

/**
 * The tpm attestor (domain/attestation/tpm-attestor.ts), enrollment and manufacturer CAs
 * (domain/tpm-enrollment.ts) and attestNode, over the in-memory ports, with a TPM computed in
 * JavaScript (test/support/fake-tpm.ts). Real TPMs (swtpm, tpm2-tools) are in
 * test/integration/tpm-attestation.test.ts.
 */

const tpmDeps = (w: World) => ({ clock: w.clock, storage: w.storage, trustDomain: TEST_TD });

async function enroll(w: World, tpm: FakeTpm, role: NodeRole = 'worker') {
  return enrollTpm(tpmDeps(w), { ekId: tpm.ekId, role, audit: AUDIT });
}

function challenge(w: World, tpm: FakeTpm, ekCertificate: EkCertificate | null = null) {
  return tpmAttestor.challenge!(
    { clock: w.clock, repos: w.storage },
    { ek: readPublicArea(tpm.ekPublic), ak: readPublicArea(tpm.akPublic), ekCertificate },
  );
}

interface Answer {
  /** The TPM that activates and quotes (default: the one challenged). */
  by?: FakeTpm;
  csrPem?: string;
  /** The CSR the quote is over (default: the one sent). */
  quotedCsrPem?: string;
  secret?: Buffer;
  quoteWith?: Parameters<FakeTpm['quote']>[1];
}

/** What the agent does with a challenge, then POST /v1/attest, through attestNode. */
async function answer(w: World, tpm: FakeTpm, c: AttestationChallenge, o: Answer = {}) {
  const by = o.by ?? tpm;
  const csrPem = o.csrPem ?? (await keyAndCsr()).csrPem;
  const secret = o.secret ?? by.activate(c.credential!.idObject, c.credential!.encryptedSecret);
  const quoted = readCsr(o.quotedCsrPem ?? csrPem).der;
  const q = by.quote(tpmQualifyingData(c.nonce, quoted), o.quoteWith);
  return attestNode(
    {
      clock: w.clock,
      storage: w.storage,
      keyring: w.keyring,
      installation: w.installation,
      random: () => 0.5,
    },
    {
      evidence: presentEvidence(tpmAttestor, {
        nonce: c.nonce,
        secret,
        quote: readQuote(q.quote),
        signature: readQuoteSignature(q.signature),
      }),
      csr: readCsr(csrPem),
      audit: AUDIT,
    },
  );
}

const nodeIdOf = (tpm: FakeTpm) => `tpm-${tpm.ekId.slice(0, 20)}`;
/** A challenge is found only while its nonce is unspent and unexpired (storage contract, tpm). */
const nonceUsed = async (w: World, nonce: string) =>
  (await w.storage.tpm.findChallenge(nonce, w.clock.now())) === null;

describe('tpm attestation (domain)', () => {
  let w: World;
  let tpm: FakeTpm;
  beforeEach(async () => {
    w = await world();
    tpm = new FakeTpm('ecc');
  });

  it('ok/an enrolled EK: challenge, activation, quote; a node tpm-<20 hex> with the enrolled role, audited with the EK id', async () => {
    expect((await enroll(w, tpm, 'manager')).nodeId).toBe(nodeIdOf(tpm));
    const c = await challenge(w, tpm);
    expect(c.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(c.expiresAt.getTime() - w.clock.now().getTime()).toBe(5 * 60_000);
    // The credential: a TPM2B_ID_OBJECT (2 + 2 + 32 + 34 bytes) and a TPMS_ECC_POINT in a TPM2B.
    expect(c.credential!.idObject).toHaveLength(70);
    expect(c.credential!.encryptedSecret).toHaveLength(70);
    const issued = await answer(w, tpm, c);
    expect(issued.nodeId).toBe(nodeIdOf(tpm));
    expect(x509(issued.leaf).subject).toBe(`O=${TEST_TD}\nOU=manager\nCN=${nodeIdOf(tpm)}`);
    expect(await w.storage.nodes.findById(nodeIdOf(tpm))).toMatchObject({
      role: 'manager',
      status: 'active',
      attestationMethod: 'tpm',
    });
    expect(await nonceUsed(w, c.nonce)).toBe(true);
    const [row] = await auditRows(w.storage, 'node.attested');
    expect(row!.details).toMatchObject({
      method: 'tpm',
      role: 'manager',
      ek_id: tpm.ekId,
      admitted_by: 'enrollment',
    });
  });

  it('ok/the secret is stored only as its hash; the challenge row names the EK, the role, the AK', async () => {
    await enroll(w, tpm);
    const c = await challenge(w, tpm);
    const row = await w.storage.tpm.findChallenge(c.nonce, w.clock.now());
    const secret = tpm.activate(c.credential!.idObject, c.credential!.encryptedSecret);
    expect(row).toMatchObject({ ekId: tpm.ekId, role: 'worker', admittedBy: 'enrollment' });
    expect(row!.secretHash.equals(secret)).toBe(false);
    expect(row!.secretHash).toHaveLength(32);
    expect(row!.akSpki.equals(tpm.ak.publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
  });

  it.each([
    ['rsa', 'ecc'],
    ['rsa', 'rsa'],
    ['ecc', 'rsa'],
  ] as const)('ok/an %s EK with an %s AK', async (ekType, akType) => {
    const t = new FakeTpm(ekType, akType);
    await enroll(w, t);
    expect((await answer(w, t, await challenge(w, t))).nodeId).toBe(nodeIdOf(t));
  });

  it('ok/the same TPM is the same node on every attestation; two TPMs are two nodes', async () => {
    const other = new FakeTpm('rsa');
    await enroll(w, tpm);
    await enroll(w, other);
    const first = await answer(w, tpm, await challenge(w, tpm));
    const again = await answer(w, tpm, await challenge(w, tpm));
    const second = await answer(w, other, await challenge(w, other));
    expect(again.nodeId).toBe(first.nodeId);
    expect(again.leaf.record.serial).not.toBe(first.leaf.record.serial);
    expect((await w.storage.certificates.findBySerial(first.leaf.record.serial))?.status).toBe('superseded');
    expect(second.nodeId).not.toBe(first.nodeId);
  });

  it('fail/an unknown TPM: refused at the challenge, nothing written; the refusal carries the EK id', async () => {
    const before = await dump(w.storage);
    const e = await errorOf(challenge(w, tpm));
    expect(`${e.code} ${e.message}`).toBe(
      'ERR_ATTESTATION_FAILED unknown TPM: its EK is not enrolled and it has no EK certificate',
    );
    expect((e as BatonError).auditDetails).toEqual({ ek_id: tpm.ekId });
    expect(await dump(w.storage)).toEqual(before);
  });

  it('fail/an "EK" that is a signing key, an AK that can decrypt: refused before any trust is looked up', async () => {
    const signingEk = new FakeTpm('ecc', 'ecc', { ek: { attributes: 0x00040072 } });
    await enroll(w, signingEk);
    const e = await errorOf(challenge(w, signingEk));
    expect(`${e.code} ${e.message}`).toBe(
      'ERR_ATTESTATION_FAILED the endorsement key is not a TCG default EK: it is a signing key',
    );
    expect((e as BatonError).auditDetails).toEqual({ ek_id: signingEk.ekId });
    const decryptingAk = new FakeTpm('ecc', 'ecc', { ak: { attributes: 0x00070072 } });
    await enroll(w, decryptingAk);
    expect((await errorOf(challenge(w, decryptingAk))).message).toBe(
      'the attestation key is not a restricted signing key: it can decrypt',
    );
  });

  describe('refusals of the answer: 401, nothing issued, the nonce not spent, an audit row with the EK id', () => {
    beforeEach(() => enroll(w, tpm));

    async function expectRefused(p: Promise<unknown>, message: string, nonce: string) {
      const nodesBefore = await w.storage.nodes.list();
      const e = await errorOf(p);
      expect(`${e.code} ${e.message}`).toBe(`ERR_ATTESTATION_FAILED ${message}`);
      expect(await w.storage.nodes.list()).toEqual(nodesBefore);
      expect(await w.storage.tpm.findChallenge(nonce, w.clock.now())).not.toBeNull();
      const refused = await auditRows(w.storage, 'node.attestation_refused');
      expect(refused.at(-1)!.details).toMatchObject({
        method: 'tpm',
        code: 'ERR_ATTESTATION_FAILED',
        ek_id: tpm.ekId,
      });
    }

    it('fail/another node answers this challenge (its TPM cannot activate it; its own secret does not match)', async () => {
      const intruder = new FakeTpm('ecc');
      await enroll(w, intruder);
      const c = await challenge(w, tpm);
      expect(() => intruder.activate(c.credential!.idObject, c.credential!.encryptedSecret)).toThrow();
      const own = await challenge(w, intruder);
      const secret = intruder.activate(own.credential!.idObject, own.credential!.encryptedSecret);
      await expectRefused(
        answer(w, tpm, c, { by: intruder, secret }),
        'the activated credential does not match the challenge',
        c.nonce,
      );
    });

    it('fail/the quote is over another CSR (a captured exchange replayed with another key)', async () => {
      const c = await challenge(w, tpm);
      const victim = (await keyAndCsr()).csrPem;
      await expectRefused(
        answer(w, tpm, c, { quotedCsrPem: victim }),
        'the quote is not over this challenge and CSR',
        c.nonce,
      );
    });

    it('fail/a quote signed by another key, or naming another signer', async () => {
      const c = await challenge(w, tpm);
      const other = new FakeTpm('ecc');
      await expectRefused(
        answer(w, tpm, c, { quoteWith: { signer: other.ak } }),
        'the quote signature does not verify with the attestation key',
        c.nonce,
      );
      await expectRefused(
        answer(w, tpm, c, { quoteWith: { qualifiedSigner: Buffer.alloc(34, 7) } }),
        'the quote was not made by the attestation key of the challenge',
        c.nonce,
      );
    });

    it('fail/a mismatched AK: the credential was made for one AK, the TPM activates with another', async () => {
      const c = await challenge(w, tpm);
      const otherAk = new FakeTpm('ecc').akPublic;
      expect(() => tpm.activate(c.credential!.idObject, c.credential!.encryptedSecret, otherAk)).toThrow(
        'TPM_RC_INTEGRITY',
      );
    });

    it('fail/a replayed exchange, an answered challenge answered again: the nonce is spent', async () => {
      const c = await challenge(w, tpm);
      const csrPem = (await keyAndCsr()).csrPem;
      await answer(w, tpm, c, { csrPem });
      const e = await errorOf(answer(w, tpm, c, { csrPem }));
      expect(`${e.code} ${e.message}`).toBe(
        'ERR_ATTESTATION_FAILED the nonce is unknown, expired or already used: request a new challenge',
      );
    });

    it('fail/a nonce past its 5 minutes', async () => {
      const c = await challenge(w, tpm);
      w.clock.advance(5 * 60_000);
      expect((await errorOf(answer(w, tpm, c))).message).toBe(
        'the nonce is unknown, expired or already used: request a new challenge',
      );
    });

    it('fail/concurrent answers to one challenge: exactly one certificate', async () => {
      const c = await challenge(w, tpm);
      const results = await Promise.allSettled([answer(w, tpm, c), answer(w, tpm, c), answer(w, tpm, c)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    });
  });

  describe('revocation bans the TPM until it is enrolled again', () => {
    it('ok/revoked: 403 at the challenge and at the answer; node enroll admits it again, old certificates stay revoked', async () => {
      await enroll(w, tpm);
      const first = await answer(w, tpm, await challenge(w, tpm));
      const pending = await challenge(w, tpm);
      await revokeNode(
        { clock: w.clock, storage: w.storage, trustDomain: TEST_TD, publishCrls: async () => undefined },
        { nodeId: first.nodeId, audit: AUDIT },
      );
      const atChallenge = await errorOf(challenge(w, tpm));
      expect(`${atChallenge.code} ${atChallenge.message}`).toBe(
        'ERR_NODE_REVOKED this node has been revoked',
      );
      expect((await errorOf(answer(w, tpm, pending))).code).toBe('ERR_NODE_REVOKED');
      const refused = await auditRows(w.storage, 'node.attestation_refused');
      expect(refused.at(-1)!.details).toMatchObject({ code: 'ERR_NODE_REVOKED', ek_id: tpm.ekId });

      const again = await enroll(w, tpm, 'manager');
      expect(again).toMatchObject({ nodeId: first.nodeId, role: 'manager', reinstated: true });
      expect(await w.storage.nodes.findById(first.nodeId)).toMatchObject({
        status: 'active',
        role: 'manager',
        revokedAt: null,
      });
      const back = await answer(w, tpm, await challenge(w, tpm));
      expect(back.nodeId).toBe(first.nodeId);
      expect(x509(back.leaf).subject).toContain('OU=manager');
      expect((await w.storage.certificates.findBySerial(first.leaf.record.serial))?.status).toBe('revoked');
      const [enrolled] = (await auditRows(w.storage, 'tpm.enrolled')).slice(-1);
      expect(enrolled).toMatchObject({
        subject: `spiffe://${TEST_TD}/node/${first.nodeId}`,
        details: { ek_id: tpm.ekId, role: 'manager', reinstated: true },
      });
    });

    it('fail/enrolling the EK of an active node with another role: ERR_CONFLICT, nothing changed', async () => {
      await enroll(w, tpm, 'worker');
      await answer(w, tpm, await challenge(w, tpm));
      const e = await errorOf(enroll(w, tpm, 'manager'));
      expect(`${e.code} ${e.message}`).toBe(
        `ERR_CONFLICT node ${nodeIdOf(tpm)} is active with role worker: revoke it first to enroll its TPM with another role`,
      );
      expect((await w.storage.tpm.findEnrollment(tpm.ekId))?.role).toBe('worker');
      expect((await enroll(w, tpm, 'worker')).reinstated).toBe(false);
    });

    it('ok/an EK id in any case is kept lowercase; anything else is refused', () => {
      expect(parseEkId('AB'.repeat(32))).toBe('ab'.repeat(32));
      for (const bad of ['', 'ab'.repeat(31), 'zz'.repeat(32), `${'ab'.repeat(32)}\n`]) {
        expect(() => parseEkId(bad)).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
      }
    });
  });

  describe('EK certificates under a manufacturer CA', () => {
    const dir = tempDir('baton-tpm-domain-');
    afterAll(() => dir.cleanup());
    const pki = new CorporatePki(dir.path);
    const root = pki.root('Maker Root');
    const issuer = pki.intermediate('Maker EK CA', root);
    // openssl stamps the certificates with the real time: the world's clock follows.
    beforeEach(() => w.clock.set(new Date(Date.now() + 60_000)));

    it('ok/an EK certificate issued by an added CA admits the TPM with that CA role; unknown TPM before', async () => {
      const der = issueEkCertificate(dir.path, issuer, tpm.ekSpki);
      expect((await errorOf(challenge(w, tpm, readEkCertificate(der)))).message).toBe(
        'unknown TPM: the EK certificate is not issued by a manufacturer CA',
      );
      const [, added] = await addManufacturerCas(tpmDeps(w), {
        cas: readManufacturerCas(root.pem + issuer.pem),
        role: 'manager',
        audit: AUDIT,
      });
      const c = await challenge(w, tpm, readEkCertificate(der));
      const row = await w.storage.tpm.findChallenge(c.nonce, w.clock.now());
      expect(row).toMatchObject({ role: 'manager', admittedBy: `manufacturer_ca:${added!.fingerprint}` });
      const issued = await answer(w, tpm, c);
      expect(x509(issued.leaf).subject).toContain('OU=manager');
      expect(added!.fingerprint).toBe(
        new X509Certificate(issuer.pem).fingerprint256.replace(/:/g, '').toLowerCase(),
      );
      expect((await auditRows(w.storage, 'tpm.ca_added')).map((r) => r.subject)).toHaveLength(2);
    });

    it('ok/an enrolled EK is admitted by its enrollment, whatever certificate it sends', async () => {
      await enroll(w, tpm, 'worker');
      const stranger = readEkCertificate(issueEkCertificate(dir.path, pki.root('Stranger'), tpm.ekSpki));
      const c = await challenge(w, tpm, stranger);
      expect((await w.storage.tpm.findChallenge(c.nonce, w.clock.now()))?.admittedBy).toBe('enrollment');
    });

    it('fail/adding a CA twice: ERR_CONFLICT naming it, nothing of the file added', async () => {
      await addManufacturerCas(tpmDeps(w), {
        cas: readManufacturerCas(issuer.pem),
        role: 'worker',
        audit: AUDIT,
      });
      const e = await errorOf(
        addManufacturerCas(tpmDeps(w), {
          cas: readManufacturerCas(root.pem + issuer.pem),
          role: 'worker',
          audit: AUDIT,
        }),
      );
      expect(`${e.code} ${e.message}`).toBe(
        'ERR_CONFLICT certificate 2 (O=Corp, CN=Maker EK CA) is already a manufacturer CA',
      );
      expect(await w.storage.tpm.listManufacturerCas()).toHaveLength(1);
    });
  });
});
