import { createPrivateKey } from 'node:crypto';
import { once } from 'node:events';
import { join, resolve } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import {
  loadPackageDefinition,
  Server,
  ServerCredentials,
  type ServerWritableStream,
  type ServiceClientConstructor,
  status,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import {
  authorizeIds,
  createMtlsServer,
  type IdentityError,
  type IdentitySnapshot,
  type Timers,
  WorkloadApiIdentity,
  type WorkloadApiOptions,
  workloadApiTarget,
} from '../../../clients/identity/src';
import { parseCertificates } from '../../../clients/rotation/src/pem';
import { tempDir } from '../../support/tools';
import { type TestLeaf, type TestPki, testPki } from './svid-factory';

/**
 * WorkloadApiIdentity against a fake agent: a gRPC server of workload.proto on a Unix socket in a
 * temporary directory, which answers FetchX509SVID with messages of real certificates and can deny,
 * end or restart.
 */

const TD = 'test.example.org';
const id = (path: string) => `spiffe://${TD}/${path}`;
const PROTO = join(
  __dirname,
  '..',
  '..',
  '..',
  'clients',
  'rotation',
  'src',
  'workload-api',
  'workload.proto',
);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

interface Message {
  svids: SvidMessage[];
  crl: Buffer[];
}

const der = (pem: string): Buffer => Buffer.concat(parseCertificates(pem).map((c) => c.raw));

function svidOf(leaf: TestLeaf, pki: TestPki, spiffeId: string, hint = ''): SvidMessage {
  return {
    spiffe_id: spiffeId,
    x509_svid: der(leaf.certPem),
    x509_svid_key: createPrivateKey(leaf.keyPem).export({ type: 'pkcs8', format: 'der' }),
    bundle: der(pki.bundlePem),
    hint,
  };
}

const service = (
  loadPackageDefinition(
    loadSync(PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true }),
  ).SpiffeWorkloadAPI as ServiceClientConstructor
).service;

/** The agent's side: the latest message goes to every open stream, and to each new one at once. */
class FakeWorkloadApi {
  readonly streams = new Set<ServerWritableStream<object, Message>>();
  /** The metadata value of each call, as received. */
  readonly headers: string[][] = [];
  calls = 0;
  deny = false;
  #message: Message | undefined;
  #server: Server | undefined;

  constructor(readonly path: string) {}

  async start(): Promise<void> {
    const server = new Server();
    server.addService(service, {
      FetchX509SVID: (call: ServerWritableStream<object, Message>) => {
        this.calls++;
        const header = call.metadata.get('workload.spiffe.io').map(String);
        this.headers.push(header);
        if (header[0] !== 'true') {
          call.emit('error', { code: status.INVALID_ARGUMENT, details: 'security header missing' });
          return;
        }
        if (this.deny) {
          call.emit('error', { code: status.PERMISSION_DENIED, details: 'no identity issued' });
          return;
        }
        this.streams.add(call);
        call.on('cancelled', () => this.streams.delete(call));
        if (this.#message) call.write(this.#message);
      },
    });
    await new Promise<void>((ok, fail) =>
      server.bindAsync(`unix://${this.path}`, ServerCredentials.createInsecure(), (e) =>
        e ? fail(e) : ok(),
      ),
    );
    this.#server = server;
  }

  send(message: Message): void {
    this.#message = message;
    for (const s of this.streams) s.write(message);
  }

  /** Ends every open stream with `code`, as an agent does on PermissionDenied after a change. */
  end(code: status, details: string): void {
    for (const s of this.streams) s.emit('error', { code, details });
    this.streams.clear();
  }

  stop(): void {
    this.streams.clear();
    this.#server?.forceShutdown();
    this.#server = undefined;
  }
}

/** Timers that count what is still pending: close() must leave none. */
function countingTimers(): Timers & { pending: Set<unknown> } {
  const pending = new Set<unknown>();
  return {
    pending,
    setTimeout: (fn, ms) => {
      const h = setTimeout(() => {
        pending.delete(h);
        fn();
      }, ms).unref();
      pending.add(h);
      return h;
    },
    clearTimeout: (h) => {
      pending.delete(h);
      clearTimeout(h as NodeJS.Timeout);
    },
  };
}

const waitFor = async (what: () => boolean, ms = 3000): Promise<void> => {
  for (const end = Date.now() + ms; !what(); ) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(10);
  }
};

const nextRotation = (w: WorkloadApiIdentity, ms = 3000) =>
  once(w, 'rotated', { signal: AbortSignal.timeout(ms) }) as Promise<[IdentitySnapshot, IdentitySnapshot]>;
const nextError = (w: WorkloadApiIdentity, ms = 3000) =>
  once(w, 'error', { signal: AbortSignal.timeout(ms) }) as Promise<[IdentityError]>;

describe('WorkloadApiIdentity: an identity from the Workload API socket', () => {
  let pki: TestPki;
  let web1: TestLeaf;
  let web2: TestLeaf;
  let db: TestLeaf;
  const dirs: Array<{ cleanup(): void }> = [];
  const fakes: FakeWorkloadApi[] = [];
  const opened: WorkloadApiIdentity[] = [];

  const quick: WorkloadApiOptions = { startTimeoutMs: 2000, retryMs: 20, maxRetryMs: 100 };

  const fake = async (first?: Message): Promise<FakeWorkloadApi> => {
    const d = tempDir('baton-wlapi-');
    dirs.push(d);
    const f = new FakeWorkloadApi(join(d.path, 'agent.sock'));
    fakes.push(f);
    if (first) f.send(first);
    await f.start();
    return f;
  };
  const open = async (f: FakeWorkloadApi, opts: WorkloadApiOptions = {}) => {
    const w = await WorkloadApiIdentity.connect({ socket: `unix://${f.path}`, ...quick, ...opts });
    opened.push(w);
    return w;
  };
  const message = (...svids: SvidMessage[]): Message => ({ svids, crl: [] });

  beforeAll(async () => {
    pki = await testPki(TD);
    web1 = await pki.leaf({ uris: [id('web')] });
    web2 = await pki.leaf({ uris: [id('web')] });
    db = await pki.leaf({ uris: [id('db')], subject: `O=${TD}, CN=db` });
  });
  afterEach(() => {
    for (const w of opened.splice(0)) w.close();
    for (const f of fakes.splice(0)) f.stop();
  });
  afterAll(() => {
    for (const d of dirs) d.cleanup();
  });

  it('ok/the first message is the identity, fetched with the security header', async () => {
    const crl = Buffer.from('30030201ff', 'hex');
    const f = await fake({ svids: [svidOf(web1, pki, id('web'))], crl: [crl] });
    const w = await open(f);
    expect(w.current()).toMatchObject({ spiffeId: id('web'), serial: web1.serial });
    expect(parseCertificates(w.current().certChainPem).map((c) => c.raw)).toEqual(
      parseCertificates(web1.certPem).map((c) => c.raw),
    );
    expect(createPrivateKey(w.current().keyPem).equals(createPrivateKey(web1.keyPem))).toBe(true);
    expect(parseCertificates(w.current().bundlePem)[0]!.raw).toEqual(
      parseCertificates(pki.bundlePem)[0]!.raw,
    );
    expect(w.crls()).toEqual([crl]);
    expect(f.headers).toEqual([['true']]);
  });

  it('ok/a new message rotates: rotated (current, previous)', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const w = await open(f);
    const crls = once(w, 'crls', { signal: AbortSignal.timeout(3000) });
    const rotated = nextRotation(w);
    f.send({ svids: [svidOf(web2, pki, id('web'))], crl: [Buffer.from('3000', 'hex')] });
    const [current, previous] = await rotated;
    expect([previous.serial, current.serial]).toEqual([web1.serial, web2.serial]);
    expect(w.current()).toBe(current);
    expect(await crls).toEqual([[Buffer.from('3000', 'hex')]]);
  });

  it('ok/the same SVID again (a CRL change, say) is no rotation', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const w = await open(f);
    const before = w.current();
    const rotations: unknown[] = [];
    w.on('rotated', (c) => rotations.push(c));
    const crls = once(w, 'crls', { signal: AbortSignal.timeout(3000) });
    f.send({ svids: [svidOf(web1, pki, id('web'))], crl: [Buffer.from('3000', 'hex')] });
    await crls;
    expect(rotations).toEqual([]);
    expect(w.current()).toBe(before);
  });

  it('fail/a key that is not the leaf’s: error, the current identity stays', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const w = await open(f);
    const rotations: unknown[] = [];
    w.on('rotated', (c) => rotations.push(c));
    const error = nextError(w);
    f.send(
      message({ ...svidOf(web2, pki, id('web')), x509_svid_key: svidOf(db, pki, id('db')).x509_svid_key }),
    );
    const [err] = await error;
    expect(err).toMatchObject({ name: 'IdentityError', code: 'ERR_KEY_MISMATCH' });
    expect(w.current().serial).toBe(web1.serial);
    // The next good message is taken.
    const rotated = nextRotation(w);
    f.send(message(svidOf(web2, pki, id('web'))));
    expect((await rotated)[0].serial).toBe(web2.serial);
    expect(rotations).toHaveLength(1);
  });

  it('fail/a spiffe_id that is not its certificate’s is refused', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const w = await open(f);
    const error = nextError(w);
    f.send(message(svidOf(web2, pki, id('admin'))));
    expect((await error)[0].code).toBe('ERR_WORKLOAD_API_RESPONSE');
    expect(w.current().serial).toBe(web1.serial);
  });

  it.each([
    ['ok/no selection: the first SVID', {}, 'db'],
    ['ok/by spiffeId', { spiffeId: id('web') }, 'web'],
    ['ok/by hint', { hint: 'frontend' }, 'web'],
    ['ok/by spiffeId and hint', { spiffeId: id('db'), hint: 'internal' }, 'db'],
  ] as Array<[string, WorkloadApiOptions, string]>)('%s', async (_name, select, want) => {
    const f = await fake(
      message(svidOf(db, pki, id('db'), 'internal'), svidOf(web1, pki, id('web'), 'frontend')),
    );
    const w = await open(f, select);
    expect(w.current().spiffeId).toBe(id(want));
  });

  it('fail/no SVID of the selection: connect rejects with the refusal once startTimeoutMs is spent', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    await expect(open(f, { spiffeId: id('db'), startTimeoutMs: 200 })).rejects.toMatchObject({
      code: 'ERR_WORKLOAD_API_RESPONSE',
      message: `the message holds no SVID for ${id('db')}`,
    });
  });

  it('fail/PermissionDenied at start rejects at once with ERR_WORKLOAD_API_DENIED', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    f.deny = true;
    const t0 = Date.now();
    await expect(open(f, { startTimeoutMs: 5000 })).rejects.toMatchObject({
      code: 'ERR_WORKLOAD_API_DENIED',
    });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(f.calls).toBe(1);
  });

  it('fail/no agent on the socket: ERR_WORKLOAD_API_UNAVAILABLE after startTimeoutMs', async () => {
    const d = tempDir('baton-wlapi-');
    dirs.push(d);
    const timers = countingTimers();
    await expect(
      WorkloadApiIdentity.connect({
        ...quick,
        socket: join(d.path, 'none.sock'),
        startTimeoutMs: 200,
        timers,
      }),
    ).rejects.toMatchObject({ code: 'ERR_WORKLOAD_API_UNAVAILABLE' });
    expect(timers.pending.size).toBe(0);
  });

  it('ok/the agent restarts: the current identity serves meanwhile, then the next rotation arrives', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const w = await open(f);
    const errors: IdentityError[] = [];
    w.on('error', (e) => errors.push(e));
    f.stop();
    // The stream's end and two failed reconnects (after 20 and 40 ms): reported once, at the third.
    await waitFor(() => errors.length === 1);
    await sleep(150);
    expect(w.current().serial).toBe(web1.serial);
    const rotated = nextRotation(w);
    f.send(message(svidOf(web2, pki, id('web'))));
    await f.start();
    const [current, previous] = await rotated;
    expect([previous.serial, current.serial]).toEqual([web1.serial, web2.serial]);
    expect(f.calls).toBe(2);
    // More failed reconnects while it was down, none reported again.
    expect(errors.map((e) => e.code)).toEqual(['ERR_WORKLOAD_API_UNAVAILABLE']);
  });

  it('fail/PermissionDenied after the start: error, current stays, retried at maxRetryMs', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const w = await open(f);
    const errors: IdentityError[] = [];
    w.on('error', (e) => errors.push(e));
    f.deny = true;
    f.end(status.PERMISSION_DENIED, 'entry deleted');
    // The end of the stream, then the retry (another message: each distinct refusal is reported once).
    await waitFor(() => errors.length === 2);
    expect(errors.map((e) => [e.code, e.message.split(': ').pop()])).toEqual([
      ['ERR_WORKLOAD_API_DENIED', 'entry deleted'],
      ['ERR_WORKLOAD_API_DENIED', 'no identity issued'],
    ]);
    expect(w.current().serial).toBe(web1.serial);
    // Back: the entry was restored.
    f.deny = false;
    const rotated = nextRotation(w);
    f.send(message(svidOf(web2, pki, id('web'))));
    expect((await rotated)[0].serial).toBe(web2.serial);
    expect(errors).toHaveLength(2);
  });

  it('ok/close() cancels the stream and leaves no timer, even during a reconnect backoff', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const timers = countingTimers();
    const w = await open(f, { timers });
    expect(timers.pending.size).toBe(0);
    expect(f.streams.size).toBe(1);
    w.close();
    await waitFor(() => f.streams.size === 0);
    expect(w.current().serial).toBe(web1.serial);

    const g = await open(f, { timers, retryMs: 10_000, maxRetryMs: 10_000 });
    f.stop();
    await waitFor(() => timers.pending.size === 1);
    g.close();
    expect(timers.pending.size).toBe(0);
  });

  it.each([
    ['ok/unix:///path', 'unix:///run/agent.sock', 'unix:///run/agent.sock'],
    ['ok/unix:/path', 'unix:/run/agent.sock', 'unix:///run/agent.sock'],
    ['ok/a plain path', '/run/agent.sock', 'unix:///run/agent.sock'],
    ['ok/a relative path, resolved', 'agent.sock', `unix://${resolve('agent.sock')}`],
  ])('%s', (_name, address, target) => {
    expect(workloadApiTarget(address)).toBe(target);
  });

  it.each([
    ['fail/none', undefined],
    ['fail/tcp', 'tcp://127.0.0.1:8081'],
    ['fail/an authority', 'unix://host/run/agent.sock'],
    ['fail/unix: relative', 'unix:agent.sock'],
  ])('%s', (_name, address) => {
    expect(() => workloadApiTarget(address)).toThrow(
      expect.objectContaining({ code: 'ERR_WORKLOAD_API_ADDRESS' }),
    );
  });

  it('ok/SPIFFE_ENDPOINT_SOCKET is the default socket', async () => {
    const f = await fake(message(svidOf(web1, pki, id('web'))));
    const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
    process.env.SPIFFE_ENDPOINT_SOCKET = `unix://${f.path}`;
    try {
      const w = await WorkloadApiIdentity.connect(quick);
      opened.push(w);
      expect(w.target).toBe(`unix://${f.path}`);
      expect(w.current().serial).toBe(web1.serial);
    } finally {
      if (saved === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
      else process.env.SPIFFE_ENDPOINT_SOCKET = saved;
    }
  });

  it('ok/createMtlsServer on the socket identity: new connections get a rotation, an open one keeps going', async () => {
    const api1 = await pki.leaf({ uris: [id('api')] });
    const api2 = await pki.leaf({ uris: [id('api')] });
    const f = await fake(message(svidOf(api1, pki, id('api'))));
    const w = await open(f);
    expect(w.current().serial).toBe(api1.serial);
    const client = await pki.leaf({ uris: [id('client')] });
    const server = createMtlsServer(w, { authorize: authorizeIds([id('client')]) }, (_req, res) =>
      res.end('ok'),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    const dial = async (): Promise<TLSSocket> => {
      const s = connect({
        host: '127.0.0.1',
        port,
        ca: pki.bundlePem,
        cert: client.certPem,
        key: client.keyPem,
        checkServerIdentity: () => undefined,
      });
      await once(s, 'secureConnect');
      return s;
    };
    /** One keep-alive request on `s`; resolves with the status line. */
    const ask = async (s: TLSSocket): Promise<string> => {
      s.write('GET / HTTP/1.1\r\nHost: api\r\n\r\n');
      const [chunk] = (await once(s, 'data')) as [Buffer];
      return chunk.toString('latin1').split('\r\n')[0]!;
    };
    // Read at once: once the server's post-handshake messages arrive, a TLS 1.3 client's session
    // no longer reports the peer certificate.
    const serialOf = (s: TLSSocket) => s.getPeerX509Certificate()?.serialNumber;
    try {
      const old = await dial();
      expect(serialOf(old)).toBe(api1.cert.serialNumber);
      expect(await ask(old)).toBe('HTTP/1.1 200 OK');

      const rotated = nextRotation(w);
      f.send(message(svidOf(api2, pki, id('api'))));
      await rotated;
      const fresh = await dial();
      expect(serialOf(fresh)).toBe(api2.cert.serialNumber);
      expect(await ask(fresh)).toBe('HTTP/1.1 200 OK');
      // The open connection is still served, on the context it was made with.
      expect(await ask(old)).toBe('HTTP/1.1 200 OK');
      expect(old.destroyed).toBe(false);
      old.destroy();
      fresh.destroy();
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
