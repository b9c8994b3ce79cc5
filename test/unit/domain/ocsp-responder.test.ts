import { createPublicKey } from 'node:crypto';
import type { SigningCa } from '../../../services/ca/src/domain/keyring';
import { answerOcsp } from '../../../services/ca/src/domain/ocsp-responder';
import { issueLeaf } from '../../../services/ca/src/domain/issue';
import { nullValue, octets, oid, seq, uintBytes } from '../../../common/src/der';
import { children, readWhole, type Tlv } from '../../../services/ca/src/pki/der-reader';
import { describePublicKey, generateP256, spkiOf } from '../../../services/ca/src/pki/keys';
import { issuerHashes, OCSP_OID, responderKeyHash } from '../../../services/ca/src/pki/ocsp';
import { memoryCertificates, TEST_TD, testCa } from '../../fixtures/test-ca';

/**
 * Who signs which OCSP answer (RFC 6960 §4.2.2.2): the CA named in every CertID, or nobody
 * (`unauthorized`, §2.3). The answers themselves are checked by openssl and GnuTLS in
 * test/integration/ocsp.test.ts; here the choice of signer, for hierarchies a server rarely shows.
 */
const ca = testCa();
const certificates = memoryCertificates();
const deps = { clock: ca.clock, keyring: ca.keyring, certificates };
const [root] = ca.keyring.roots;
const signing = ca.keyring.signing;

/** A SHA-1 CertID naming `issuer` (or the given hashes) and `serialHex`. */
function certId(issuer: SigningCa | { nameHash: Buffer; keyHash: Buffer }, serialHex: string): Buffer {
  const h = 'record' in issuer ? issuerHashes(issuer.record.certificateDer).sha1 : issuer;
  return seq(
    seq(oid(OCSP_OID.sha1), nullValue()),
    octets(h.nameHash),
    octets(h.keyHash),
    uintBytes(Buffer.from(serialHex, 'hex')),
  );
}

/** OCSPRequest { TBSRequest { requestList SEQUENCE OF Request { reqCert } } }, no nonce. */
const request = (...ids: Buffer[]): Buffer => seq(seq(seq(...ids.map((id) => seq(id)))));

/** The parts of a successful response this test reads: responder key hash, statuses, certs. */
function readAnswer(der: Buffer): { keyHash: string; statuses: number[]; certs: Buffer[] } {
  const [status, bytes] = children(readWhole(der));
  expect(status!.value).toEqual(Buffer.from([0]));
  const [, basicOctets] = children(children(bytes!)[0]!);
  const [tbs, , , certsTag] = children(readWhole(basicOctets!.value));
  const [responderId, , responses] = children(tbs!);
  const keyHash = children(responderId!)[0]!.value.toString('hex');
  const statuses = children(responses!).map((single: Tlv) => children(single)[1]!.tag & 0x1f);
  const certs = certsTag ? children(children(certsTag)[0]!).map((c) => c.raw) : [];
  return { keyHash, statuses, certs };
}

const GOOD = 0;
const UNKNOWN = 2;

let issuedSerial: string;
beforeAll(async () => {
  const issued = await issueLeaf(
    { clock: ca.clock, issuer: signing, certificates },
    {
      kind: 'workload',
      spiffeId: `spiffe://${TEST_TD}/web`,
      subject: { O: TEST_TD, CN: 'web' },
      key: describePublicKey(spkiOf(createPublicKey(generateP256().privateKey))),
      ttlMs: 3_600_000,
    },
  );
  issuedSerial = issued.record.serial;
});

it('ok/signed by the issuing CA, its certificate in certs: good for its serial, unknown for another', async () => {
  const out = await answerOcsp(deps, request(certId(signing, issuedSerial), certId(signing, '7f01')));
  expect(out.kind).toBe('signed');
  const a = readAnswer(out.der);
  expect(a.keyHash).toBe(responderKeyHash(signing.spki).toString('hex'));
  expect(a.statuses).toEqual([GOOD, UNKNOWN]);
  expect(a.certs).toEqual([signing.record.certificateDer]);
});

it('ok/a CertID naming the root is answered by the root, with no certs (the client holds it)', async () => {
  const out = await answerOcsp(deps, request(certId(root!, '7f02')));
  expect(out.kind).toBe('signed');
  const a = readAnswer(out.der);
  expect(a.keyHash).toBe(responderKeyHash(root!.spki).toString('hex'));
  expect(a.certs).toEqual([]);
});

it('ok/a serial of the signing CA asked under the root is unknown: a CA answers only for its own', async () => {
  const out = await answerOcsp(deps, request(certId(root!, issuedSerial)));
  expect(readAnswer(out.der).statuses).toEqual([UNKNOWN]);
});

describe('unauthorized (RFC 6960 §2.3): no key of ours can sign an answer a client would accept', () => {
  const other = testCa();
  const ours = issuerHashes(signing.record.certificateDer).sha1;
  const theirs = issuerHashes(other.keyring.signing.record.certificateDer).sha1;
  it.each([
    ['fail/a CertID of another CA', () => request(certId(other.keyring.signing, issuedSerial))],
    [
      'fail/our key hash under another issuer name',
      () => request(certId({ nameHash: theirs.nameHash, keyHash: ours.keyHash }, issuedSerial)),
    ],
    [
      'fail/our issuer name under another key hash',
      () => request(certId({ nameHash: ours.nameHash, keyHash: theirs.keyHash }, issuedSerial)),
    ],
    [
      'fail/one request spanning two of our CAs',
      () => request(certId(signing, issuedSerial), certId(root!, '7f03')),
    ],
    [
      'fail/ours first, then another CA',
      () => request(certId(signing, issuedSerial), certId(other.keyring.signing, '7f04')),
    ],
  ])('%s', async (_name, body) => {
    const out = await answerOcsp(deps, body());
    expect(out).toEqual({ kind: 'unauthorized', der: Buffer.from('30030a0106', 'hex') });
  });
});
