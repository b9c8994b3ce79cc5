import { once } from 'node:events';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { type ConnectionOptions, connect, type SecureVersion, type TLSSocket } from 'node:tls';
import {
  authorizeIds,
  bindServer,
  createMtlsServer,
  Identity,
  type IdentityError,
  type IdentityOptions,
  requestPeer,
} from '../../../clients/identity/src';
import { tempDir } from '../../support/tools';
import { type TestLeaf, type TestPki, testPki, writeIdentityDir } from './svid-factory';

/**
 * Issue 14, finding 4: a TLS server of the library resumed sessions, and a resumed session carries
 * the client certificate OpenSSL verified back then without verifying it again. Real clients offer
 * their saved session (ticket or session ID) to real servers on 127.0.0.1.
 */

const TD = 'test.example.org';
const id = (path: string) => `spiffe://${TD}/${path}`;
const VERSIONS: SecureVersion[] = ['TLSv1.3', 'TLSv1.2'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Exchange {
  /** The HTTP status, or undefined when the connection ended without an answer. */
  status?: number;
  reused: boolean;
  /** The session the server gave (a ticket or a session ID), to offer on a later connection. */
  session?: Buffer;
  serverSerial?: string;
}

/**
 * One GET on a fresh TLS connection, read until the server closes it (Connection: close). A TLS
 * 1.3 server sends its tickets before any application data, so the session is in by then.
 */
function get(port: number, opts: ConnectionOptions): Promise<Exchange> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, checkServerIdentity: () => undefined, ...opts });
    const chunks: Buffer[] = [];
    let session: Buffer | undefined;
    let reused = false;
    let serverSerial: string | undefined;
    s.on('session', (x: Buffer) => {
      session = x;
    });
    s.on('secureConnect', () => {
      reused = s.isSessionReused();
      serverSerial = s.getPeerX509Certificate()?.serialNumber.toLowerCase();
      s.write('GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n');
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    // A refused client sees a reset or an alert: the missing status says it all.
    s.on('error', () => undefined);
    s.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString('latin1'));
      resolve({ status: m ? Number(m[1]) : undefined, reused, session, serverSerial });
    });
  });
}

const clientOptions = (pki: TestPki, leaf: TestLeaf, version: SecureVersion): ConnectionOptions => ({
  ca: pki.bundlePem,
  cert: leaf.certPem,
  key: leaf.keyPem,
  minVersion: version,
  maxVersion: version,
});

interface Service {
  server: Server;
  port: number;
  /** SPIFFE IDs of the requests that reached the handler. */
  answered: string[];
  /** Connections the library refused after the handshake. */
  refused: IdentityError[];
  /** Why TLS refused a client (its socket's authorizationError), or the error. */
  tlsErrors: string[];
}

const waitFor = async (what: () => boolean, ms = 3000): Promise<void> => {
  for (const end = Date.now() + ms; !what(); ) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(10);
  }
};

describe("issue 14: the identity library's mTLS servers resume no TLS session", () => {
  let pki: TestPki;
  let web: TestLeaf;
  const dirs: Array<{ cleanup(): void }> = [];
  const identities: Identity[] = [];
  const servers: Server[] = [];
  const quick: IdentityOptions = { startTimeoutMs: 0, fsWatch: false, pollIntervalMs: 0 };
  const authorize = authorizeIds([id('web')]);

  beforeAll(async () => {
    pki = await testPki(TD);
    web = await pki.leaf({ uris: [id('web')] });
  });
  afterAll(() => {
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
    for (const i of identities) i.close();
    for (const d of dirs) d.cleanup();
  });

  /** The server's identity `api`, in a directory of its own so that the test can rotate it. */
  const apiIdentity = async (): Promise<{ identity: Identity; dir: string }> => {
    const d = tempDir('baton-resumption-');
    dirs.push(d);
    const leaf = await pki.leaf({ uris: [id('api')] });
    writeIdentityDir(d.path, { cert: leaf.certPem, key: leaf.keyPem, bundle: pki.bundlePem });
    const identity = await Identity.fromDirectory(d.path, quick);
    identities.push(identity);
    return { identity, dir: d.path };
  };

  /** Starts `server` on port 0 with the answering handler already attached. */
  const listen = async (server: Server, svc: Omit<Service, 'server' | 'port'>): Promise<Service> => {
    servers.push(server);
    server.on('tlsClientError', (e, socket: TLSSocket) =>
      svc.tlsErrors.push(String(socket.authorizationError ?? e.message)),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { ...svc, server, port: (server.address() as AddressInfo).port };
  };

  const handlerFor =
    (answered: string[]) =>
    (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      answered.push(requestPeer(req).spiffeId);
      res.end('ok');
    };

  /** createMtlsServer with TLS 1.2 allowed, so that both versions can be offered a session. */
  const serve = async (identity: Identity): Promise<Service> => {
    const svc = { answered: [] as string[], refused: [] as IdentityError[], tlsErrors: [] as string[] };
    const server = createMtlsServer(
      identity,
      { authorize, minVersion: 'TLSv1.2', onRefused: (e) => svc.refused.push(e) },
      handlerFor(svc.answered),
    );
    return listen(server, svc);
  };

  /** A first connection that gets a session, then a second one that offers it. */
  const offerSaved = async (svc: Service, version: SecureVersion, leaf = web): Promise<Exchange> => {
    const first = await get(svc.port, clientOptions(pki, leaf, version));
    expect(first).toMatchObject({ status: 200, reused: false });
    // Something to offer: without a session from the first connection the check would be empty.
    expect(first.session).toBeDefined();
    return get(svc.port, { ...clientOptions(pki, leaf, version), session: first.session });
  };

  it.each(VERSIONS)(
    'ok/%s: a client that offers its saved session gets a full handshake, before and after a hot swap',
    async (version) => {
      const { identity, dir } = await apiIdentity();
      const svc = await serve(identity);
      expect(await offerSaved(svc, version)).toMatchObject({ status: 200, reused: false });

      // setSecureContext resets every option it is not given: the rotation must pass them all.
      const next = await pki.leaf({ uris: [id('api')] });
      writeIdentityDir(dir, { cert: next.certPem, key: next.keyPem });
      expect(identity.reload()).toBe(true);
      const after = await offerSaved(svc, version);
      expect(after).toMatchObject({ status: 200, reused: false, serverSerial: next.serial });
      expect(svc.refused).toEqual([]);
    },
  );

  it('fail/a client whose certificate expired after it saved a session is refused (TLS 1.3 and 1.2)', async () => {
    // OpenSSL judges validity by the system clock, which a test cannot set for it: a certificate
    // that expires in seconds, on a whole second (X.509 times have no fractions). 8 s leave room
    // for the setup and two handshakes on a loaded CI machine (event-loop stalls of a second seen).
    const notAfter = new Date(Math.ceil((Date.now() + 8000) / 1000) * 1000);
    const shortLived = await pki.leaf({ uris: [id('web')], notAfter });
    const svc = await serve((await apiIdentity()).identity);
    const saved = new Map<SecureVersion, Buffer | undefined>();
    for (const version of VERSIONS) {
      const first = await get(svc.port, clientOptions(pki, shortLived, version));
      expect(first).toMatchObject({ status: 200, reused: false });
      expect(first.session).toBeDefined();
      saved.set(version, first.session);
    }
    // The sessions were saved while the certificate was valid; now it is not.
    expect(Date.now()).toBeLessThan(notAfter.getTime());
    await sleep(notAfter.getTime() + 1000 - Date.now());

    for (const version of VERSIONS) {
      const second = await get(svc.port, {
        ...clientOptions(pki, shortLived, version),
        session: saved.get(version),
      });
      expect(second).toMatchObject({ status: undefined, reused: false });
    }
    expect(svc.answered).toHaveLength(2);
    await waitFor(() => svc.tlsErrors.length >= 2);
    expect(svc.tlsErrors).toEqual(['CERT_HAS_EXPIRED', 'CERT_HAS_EXPIRED']);
  });

  it.each(VERSIONS)(
    'fail/%s: bindServer refuses a session resumed by a server built with tickets on',
    async (version) => {
      const { identity } = await apiIdentity();
      const { certChainPem, keyPem, bundlePem } = identity.current();
      const svc = { answered: [] as string[], refused: [] as IdentityError[], tlsErrors: [] as string[] };
      // Node's defaults: stateless session tickets on.
      const server = createServer(
        {
          cert: certChainPem,
          key: keyPem,
          ca: bundlePem,
          requestCert: true,
          rejectUnauthorized: true,
          minVersion: 'TLSv1.2',
        },
        handlerFor(svc.answered),
      );
      bindServer(server, identity, { authorize, onRefused: (e) => svc.refused.push(e) });
      const s = await listen(server, svc);
      // TLS resumed it: the refusal is the library's.
      expect(await offerSaved(s, version)).toMatchObject({ status: undefined, reused: true });
      expect(svc.answered).toEqual([id('web')]);
      expect(svc.refused.map((e) => [e.code, e.message])).toEqual([
        ['ERR_PEER_UNVERIFIED', 'peer not verified: resumed TLS session'],
      ]);
    },
  );

  it('fail/TLSv1.2: a session store added to a createMtlsServer server resumes session IDs, and the library refuses them', async () => {
    const svc = await serve((await apiIdentity()).identity);
    const { server } = svc;
    // Node's server resumes stateful sessions only through these two events.
    const store = new Map<string, Buffer>();
    server.on('newSession', (sessionId: Buffer, data: Buffer, done: () => void) => {
      store.set(sessionId.toString('hex'), data);
      done();
    });
    server.on('resumeSession', (sessionId: Buffer, done: (err: Error | null, data: Buffer | null) => void) =>
      done(null, store.get(sessionId.toString('hex')) ?? null),
    );
    expect(await offerSaved(svc, 'TLSv1.2')).toMatchObject({ status: undefined, reused: true });
    expect(svc.answered).toEqual([id('web')]);
    expect(svc.refused.map((e) => e.code)).toEqual(['ERR_PEER_UNVERIFIED']);
  });
});
