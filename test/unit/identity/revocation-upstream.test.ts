import { createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { crlsFromPem } from '../../../clients/identity/src/crl';
import { RevocationState } from '../../../clients/identity/src/revocation-state';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { issueLeaf } from '../../../services/ca/src/domain/issue';
import { createJwtKey } from '../../../services/ca/src/domain/jwt-keys';
import { loadKeyring } from '../../../services/ca/src/domain/keyring';
import {
  pendingCsrPem,
  prepareUpstreamCa,
  upstreamCaRecords,
} from '../../../services/ca/src/domain/upstream-ca';
import { buildCrl } from '../../../services/ca/src/pki/crl';
import { kekFromBase64 } from '../../../services/ca/src/pki/kek';
import { describePublicKey, generateP256, spkiOf } from '../../../services/ca/src/pki/keys';
import { checkUpstreamChain } from '../../../services/ca/src/pki/upstream-chain';
import { memoryCertificates } from '../../fixtures/test-ca';
import { CorporatePki, SIGNING_CA_EXT } from '../../support/corporate-ca';
import { describeWithTool, tempDir } from '../../support/tools';

/**
 * The identity library's revocation state (RFC 5280 §6.3: every certificate of the path but the
 * anchor) under an upstream CA: Baton's /v1/crl.pem covers its own signing CA only, so a peer that
 * holds just those CRLs cannot tell the status of Baton's signing CA certificate and reports it
 * stale; given the corporate CAs' CRLs as a second source (docs/operations.md "Upstream CA"), it
 * checks the whole path, and a corporate revocation of Baton's signing CA refuses every leaf.
 */
const TD = 'prod.example.org';
const HOUR = 3600_000;

describeWithTool('openssl', 'revocation state under an upstream CA', () => {
  const dir = tempDir('baton-upstream-revocation-');
  afterAll(() => dir.cleanup());
  const clock = new FakeClock(new Date());
  const kek = kekFromBase64(randomBytes(32).toString('base64'), 'test');
  const pending = prepareUpstreamCa({
    installation: {
      trustDomain: TD,
      publicUrl: 'https://ca.example.org',
      nodeTtlMs: HOUR,
      workloadTtlMs: HOUR,
      adminTtlMs: HOUR,
    },
    kek,
    now: clock.now(),
  });
  const pki = new CorporatePki(dir.path);
  const root = pki.root('Corp Root');
  const issuing = pki.intermediate('Corp Issuing CA', root);
  const signedPem = pki.signPem(pendingCsrPem(pending), issuing, { ext: SIGNING_CA_EXT(TD) });
  const path = checkUpstreamChain({
    certPem: signedPem,
    chainPem: issuing.pem + root.pem,
    spki: pending.spki,
    trustDomain: TD,
    now: clock.now(),
  });
  const records = upstreamCaRecords(pending, path, clock.now());
  const keyring = loadKeyring(records, kek, 'https://ca.example.org', [
    createJwtKey({ kek, caId: pending.caId, now: clock.now() }).record,
  ]);
  const batonCrl = () =>
    buildCrl({
      issuer: {
        name: keyring.signing.subjectName,
        keyId: keyring.signing.keyId,
        signer: keyring.signing.signer,
      },
      crlNumber: 1n,
      thisUpdate: new Date(clock.now().getTime() - 60_000),
      nextUpdate: new Date(clock.now().getTime() + HOUR),
      entries: [],
    });

  let chain: X509Certificate[];
  beforeAll(async () => {
    const leaf = await issueLeaf(
      { clock, issuer: keyring.signing, certificates: memoryCertificates() },
      {
        kind: 'workload',
        spiffeId: `spiffe://${TD}/web`,
        subject: { O: TD, CN: 'web' },
        key: describePublicKey(spkiOf(createPublicKey(generateP256().privateKey))),
        ttlMs: HOUR,
      },
    );
    chain = (leaf.chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
      (p) => new X509Certificate(p),
    );
  });
  const state = () => {
    const s = new RevocationState();
    s.setRoots([new X509Certificate(root.pem)]);
    return s;
  };

  it("stale/Baton's CRLs alone: the status of Baton's signing CA certificate is unknown", () => {
    const s = state();
    s.learnChain(chain);
    expect(s.loadCrls('https://baton/v1/crl.pem', [batonCrl()]).accepted).toBe(1);
    expect(s.check(chain, clock.now()).stale).toMatch(
      /^no CRL of the issuer of [0-9a-f]+ \(.*Corp Issuing CA\)$/,
    );
  });

  it('ok/with the corporate CRLs from a second source the whole path is checked', () => {
    const s = state();
    s.learnChain(chain);
    s.loadCrls('https://baton/v1/crl.pem', [batonCrl()]);
    const corp = crlsFromPem(pki.crl(issuing) + pki.crl(root));
    expect(s.loadCrls('/etc/corp/crls.pem', corp).accepted).toBe(2);
    expect(s.check(chain, clock.now())).toEqual({});
  });

  it("fail/the corporate CA revoked Baton's signing CA: every leaf is refused", () => {
    pki.revoke(issuing, signedPem);
    const s = state();
    s.learnChain(chain);
    s.loadCrls('https://baton/v1/crl.pem', [batonCrl()]);
    s.loadCrls('/etc/corp/crls.pem', crlsFromPem(pki.crl(issuing) + pki.crl(root)));
    expect(s.check(chain, clock.now()).revoked).toMatchObject({
      serial: path.signing.fields.serialHex,
      source: 'crl',
    });
  });
});
