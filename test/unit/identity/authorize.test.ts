import {
  type Authorizer,
  authorizeAll,
  authorizeAny,
  authorizeIds,
  authorizePeer,
  authorizePrefix,
  authorizeTrustDomain,
  isManagerNode,
  isNode,
  isWorkerNode,
  type Peer,
  parseSpiffeId,
  peerOf,
} from '../../../clients/identity/src';
import { type TestPki, testPki } from './svid-factory';

const TD = 'test.example.org';

describe('authorize: peer authorization by SPIFFE ID', () => {
  let pki: TestPki;
  let peer: (spiffeId: string, subject?: Peer['subject']) => Peer;

  beforeAll(async () => {
    pki = await testPki(TD);
    const { cert } = await pki.leaf();
    peer = (spiffeId, subject = { O: TD }) => ({ spiffeId, subject, cert });
  });

  const nodeSubject = (OU: string, O = TD) => ({ O, OU, CN: 'n1' });

  it.each<[string, () => Authorizer, string, Peer['subject'] | undefined, boolean]>([
    [
      'ok/ids exact',
      () => authorizeIds([`spiffe://${TD}/a`, `spiffe://${TD}/b`]),
      `spiffe://${TD}/b`,
      undefined,
      true,
    ],
    ['fail/ids not listed', () => authorizeIds([`spiffe://${TD}/a`]), `spiffe://${TD}/a/b`, undefined, false],
    [
      'fail/ids other trust domain',
      () => authorizeIds([`spiffe://${TD}/a`]),
      'spiffe://other.org/a',
      undefined,
      false,
    ],
    [
      'ok/prefix below',
      () => authorizePrefix(`spiffe://${TD}/ns/`),
      `spiffe://${TD}/ns/api`,
      undefined,
      true,
    ],
    [
      'fail/prefix trailing slash excludes itself',
      () => authorizePrefix(`spiffe://${TD}/ns/`),
      `spiffe://${TD}/ns`,
      undefined,
      false,
    ],
    [
      'ok/prefix without slash includes itself',
      () => authorizePrefix(`spiffe://${TD}/ns`),
      `spiffe://${TD}/ns`,
      undefined,
      true,
    ],
    [
      'fail/prefix is per segment',
      () => authorizePrefix(`spiffe://${TD}/ns`),
      `spiffe://${TD}/nsevil`,
      undefined,
      false,
    ],
    [
      'fail/prefix other trust domain',
      () => authorizePrefix(`spiffe://${TD}/ns/`),
      'spiffe://test.example.org.evil/ns/x',
      undefined,
      false,
    ],
    ['ok/trust domain', () => authorizeTrustDomain(TD), `spiffe://${TD}/anything/at/all`, undefined, true],
    ['fail/trust domain suffix', () => authorizeTrustDomain(TD), `spiffe://evil${TD}/x`, undefined, false],
    ['fail/trust domain longer', () => authorizeTrustDomain(TD), `spiffe://${TD}.evil/x`, undefined, false],
    [
      'ok/any one matches',
      () => authorizeAny(authorizeIds([`spiffe://${TD}/a`]), authorizeTrustDomain('o.org')),
      'spiffe://o.org/z',
      undefined,
      true,
    ],
    ['fail/any of none', () => authorizeAny(), `spiffe://${TD}/a`, undefined, false],
    [
      'ok/all match',
      () => authorizeAll(authorizeTrustDomain(TD), authorizePrefix(`spiffe://${TD}/ns`)),
      `spiffe://${TD}/ns/x`,
      undefined,
      true,
    ],
    [
      'fail/all one refuses',
      () => authorizeAll(authorizeTrustDomain(TD), authorizePrefix(`spiffe://${TD}/ns`)),
      `spiffe://${TD}/x`,
      undefined,
      false,
    ],
    ['fail/all of none', () => authorizeAll(), `spiffe://${TD}/a`, undefined, false],
    ['ok/manager node', () => isManagerNode(TD), `spiffe://${TD}/node/n1`, nodeSubject('manager'), true],
    [
      'fail/manager: worker OU',
      () => isManagerNode(TD),
      `spiffe://${TD}/node/n1`,
      nodeSubject('worker'),
      false,
    ],
    ['fail/manager: no OU', () => isManagerNode(TD), `spiffe://${TD}/node/n1`, { O: TD, CN: 'n1' }, false],
    [
      'fail/manager: other O',
      () => isManagerNode(TD),
      `spiffe://${TD}/node/n1`,
      nodeSubject('manager', 'x.org'),
      false,
    ],
    [
      'fail/manager: not a node path',
      () => isManagerNode(TD),
      `spiffe://${TD}/web`,
      nodeSubject('manager'),
      false,
    ],
    [
      'fail/manager: deeper path',
      () => isManagerNode(TD),
      `spiffe://${TD}/node/n1/x`,
      nodeSubject('manager'),
      false,
    ],
    [
      'fail/manager: admin OU=manager',
      () => isManagerNode(TD),
      `spiffe://${TD}/admin/n1`,
      nodeSubject('manager'),
      false,
    ],
    [
      'fail/manager: other trust domain',
      () => isManagerNode(TD),
      'spiffe://x.org/node/n1',
      nodeSubject('manager'),
      false,
    ],
    ['ok/node: worker', () => isNode(TD), `spiffe://${TD}/node/n1`, nodeSubject('worker'), true],
    ['ok/node: manager', () => isNode(TD), `spiffe://${TD}/node/n1`, nodeSubject('manager'), true],
    ['fail/node: admin', () => isNode(TD), `spiffe://${TD}/admin/root`, nodeSubject('admin'), false],
    [
      'fail/node: OU admin on a node path',
      () => isNode(TD),
      `spiffe://${TD}/node/n1`,
      nodeSubject('admin'),
      false,
    ],
    ['ok/worker node', () => isWorkerNode(TD), `spiffe://${TD}/node/n1`, nodeSubject('worker'), true],
    [
      'fail/worker node: manager',
      () => isWorkerNode(TD),
      `spiffe://${TD}/node/n1`,
      nodeSubject('manager'),
      false,
    ],
  ])('%s', (_name, make, spiffeId, subject, expected) => {
    expect(make()(peer(spiffeId, subject))).toBe(expected);
  });

  it.each([
    ['fail/ids: not a SPIFFE ID', () => authorizeIds(['https://test.example.org/a'])],
    ['fail/ids: uppercase trust domain', () => authorizeIds(['spiffe://Test.example.org/a'])],
    ['fail/prefix: not a SPIFFE ID', () => authorizePrefix('spiffe:/x')],
    ['fail/trust domain: bad name', () => authorizeTrustDomain('Bad Domain')],
    ['fail/isManagerNode: bad name', () => isManagerNode('spiffe://td')],
  ])('%s throws at construction, not on every handshake', (_name, make) => {
    expect(make).toThrow(TypeError);
  });

  it.each<[string, string, boolean]>([
    ['ok/path', 'spiffe://td/a/b', true],
    ['ok/root', 'spiffe://td', true],
    ['ok/chars', 'spiffe://a-b_c.d/A.b-C_9', true],
    ['fail/trailing slash', 'spiffe://td/a/', false],
    ['fail/empty segment', 'spiffe://td//a', false],
    ['fail/dot segment', 'spiffe://td/./a', false],
    ['fail/dot-dot segment', 'spiffe://td/a/..', false],
    ['fail/port', 'spiffe://td:443/a', false],
    ['fail/user info', 'spiffe://u@td/a', false],
    ['fail/query', 'spiffe://td/a?x=1', false],
    ['fail/fragment', 'spiffe://td/a#x', false],
    ['fail/uppercase scheme', 'SPIFFE://td/a', false],
    ['fail/uppercase trust domain', 'spiffe://TD/a', false],
    ['fail/percent-encoding', 'spiffe://td/a%20b', false],
    ['fail/too long', `spiffe://td/${'a'.repeat(2040)}`, false],
  ])('parseSpiffeId %s', (_name, id, ok) => {
    expect(parseSpiffeId(id) !== undefined).toBe(ok);
  });

  describe('peerOf: only leaf SVIDs with exactly one URI SAN (SPIFFE X.509-SVID §2, §5.2)', () => {
    it('ok/reads the SPIFFE ID and subject, DNS SANs beside the URI are fine', async () => {
      const { cert } = await pki.leaf({
        uris: [`spiffe://${TD}/node/n1`],
        dns: ['n1.internal'],
        subject: `O=${TD}, OU=manager, CN=n1`,
      });
      expect(peerOf(cert)).toEqual({
        spiffeId: `spiffe://${TD}/node/n1`,
        subject: { O: TD, OU: 'manager', CN: 'n1' },
        cert,
      });
    });

    it.each<[string, Parameters<TestPki['leaf']>[0]]>([
      ['fail/zero URI SANs', { uris: [], dns: ['web.internal'] }],
      ['fail/two URI SANs', { uris: [`spiffe://${TD}/a`, `spiffe://${TD}/b`] }],
      ['fail/a URI SAN that is not spiffe', { uris: [`https://${TD}/a`] }],
      ['fail/a root SPIFFE ID (no path)', { uris: [`spiffe://${TD}`] }],
      ['fail/a CA certificate', { ca: true }],
      // Node before the CVE-2021-44532 fix printed this SAN unescaped, so splitting the text form
      // on ", " found a URI SAN in it. The DER has none, whatever the text looks like.
      [
        'fail/a DNS SAN that looks like a URI SAN in text form',
        { uris: [], dns: [`x, URI:spiffe://${TD}/admin`] },
      ],
    ])('%s', async (_name, params) => {
      const { cert } = await pki.leaf(params);
      expect(() => peerOf(cert)).toThrow(expect.objectContaining({ code: 'ERR_NOT_SVID' }));
    });

    it('a repeated subject attribute is ambiguous: it reads as absent, so role checks fail', async () => {
      const { cert } = await pki.leaf({
        uris: [`spiffe://${TD}/node/n1`],
        subject: `O=${TD}, OU=worker, OU=manager, CN=n1`,
      });
      const p = peerOf(cert);
      expect(p.subject).toEqual({ O: TD, OU: undefined, CN: 'n1' });
      expect(isManagerNode(TD)(p)).toBe(false);
    });
  });

  describe('authorizePeer', () => {
    it('returns the peer when authorized', async () => {
      const { cert } = await pki.leaf({ uris: [`spiffe://${TD}/web`] });
      expect(authorizePeer(cert, authorizeIds([`spiffe://${TD}/web`])).spiffeId).toBe(`spiffe://${TD}/web`);
    });

    it('fail/refused: ERR_PEER_NOT_AUTHORIZED naming the peer', async () => {
      const { cert } = await pki.leaf({ uris: [`spiffe://${TD}/web`] });
      expect(() => authorizePeer(cert, authorizeIds([`spiffe://${TD}/api`]))).toThrow(
        expect.objectContaining({
          code: 'ERR_PEER_NOT_AUTHORIZED',
          message: expect.stringContaining('/web'),
        }),
      );
    });

    it('fail/an authorizer that throws refuses', async () => {
      const { cert } = await pki.leaf();
      const broken: Authorizer = () => {
        throw new Error('bug');
      };
      expect(() => authorizePeer(cert, broken)).toThrow(
        expect.objectContaining({ code: 'ERR_PEER_NOT_AUTHORIZED' }),
      );
    });

    it('fail/a truthy non-boolean does not authorize', async () => {
      const { cert } = await pki.leaf();
      const sloppy = (() => 'yes') as unknown as Authorizer;
      expect(() => authorizePeer(cert, sloppy)).toThrow(
        expect.objectContaining({ code: 'ERR_PEER_NOT_AUTHORIZED' }),
      );
    });
  });
});
