import { randomBytes } from 'node:crypto';
import {
  makeCredential,
  objectName,
  publicKeyOf,
  qualifiedNameUnderEk,
  readPublicArea,
  readQuote,
  readQuoteSignature,
  verifyQuoteSignature,
} from '../../services/ca/src/pki/tpm';
import { startSwtpm, SWTPM_TOOLS, type SoftwareTpm } from '../support/swtpm';
import { type TpmNode, tpmIsClean, tpmNode } from '../support/tpm-node';
import { describeWith } from '../support/tools';

/**
 * Issue 19: Baton's TPM cryptography against a real TPM (swtpm, driven by tpm2-tools as the agent
 * drives one). MakeCredential cannot be compared byte for byte with `tpm2_makecredential` (its seed
 * is random), so it is proven by activation: the secret the TPM releases is the one Baton protected.
 */
const wire = (c: ReturnType<typeof makeCredential>) => ({
  credential_blob: c.idObject.toString('base64'),
  encrypted_secret: c.encryptedSecret.toString('base64'),
});

describeWith(SWTPM_TOOLS, 'TPM cryptography on swtpm (pki/tpm)', () => {
  let tpm: SoftwareTpm;
  beforeAll(async () => {
    tpm = await startSwtpm();
  }, 60_000);
  afterAll(() => tpm?.stop());

  describe.each([
    ['RSA 2048 EK, ECC AK', 'rsa', 'ecc'],
    ['ECC P-256 EK, ECC AK', 'ecc', 'ecc'],
    ['RSA 2048 EK, RSA AK', 'rsa', 'rsa'],
  ] as const)('%s', (_name, ekType, akType) => {
    let node: TpmNode;
    beforeAll(async () => {
      node = await tpmNode(tpm, { ekType, akType });
    }, 60_000);

    it('ok/tpm2_activatecredential releases exactly the secret Baton protected for the AK Name', async () => {
      const ek = readPublicArea(node.ekPublic);
      const ak = readPublicArea(node.akPublic);
      const secret = randomBytes(32);
      const released = await node.activate(wire(makeCredential(ek, objectName(ak), secret)));
      expect(released.equals(secret)).toBe(true);
      expect(await tpmIsClean(tpm)).toBe(true);
    }, 60_000);

    it('fail/a credential made for another AK Name: the TPM refuses to activate it', async () => {
      const ek = readPublicArea(node.ekPublic);
      const other = await node.newAk();
      const credential = makeCredential(ek, objectName(readPublicArea(other.akPublic)), randomBytes(32));
      await expect(node.activate(wire(credential))).rejects.toThrow();
      expect(await tpmIsClean(tpm)).toBe(true);
    }, 60_000);

    it('ok/tpm2_quote: signed by the AK, its qualifiedSigner the AK qualified name under the EK', async () => {
      const data = randomBytes(32);
      const { quote, signature } = await node.quote(data);
      const q = readQuote(quote);
      const ak = readPublicArea(node.akPublic);
      expect(q.extraData.equals(data)).toBe(true);
      expect(q.qualifiedSigner.equals(qualifiedNameUnderEk(readPublicArea(node.ekPublic), ak))).toBe(true);
      const key = { key: publicKeyOf(ak).key, type: ak.type };
      expect(verifyQuoteSignature(key, q, readQuoteSignature(signature))).toBe(true);
      // The quote of another AK of the same TPM does not verify with this one.
      const other = await node.newAk();
      const theirs = await node.quote(data, other.akCtx);
      expect(verifyQuoteSignature(key, readQuote(theirs.quote), readQuoteSignature(theirs.signature))).toBe(
        false,
      );
      expect(readQuote(theirs.quote).qualifiedSigner.equals(q.qualifiedSigner)).toBe(false);
    }, 60_000);
  });
});
