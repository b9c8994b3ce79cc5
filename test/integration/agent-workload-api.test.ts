import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import {
  CaClient,
  loadPeerCredentialReader,
  NodeAgent,
  WorkloadApiServer,
  WorkloadApiState,
  WorkloadStore,
} from '../../clients/rotation/src';
import type { X509SvidResponse } from '../../clients/rotation/src/workload-api/proto';
import { ENVOY_PROTO_DIR, SECRET_TYPE_URL } from '../../clients/rotation/src/workload-api/sds';
import { callAs } from '../support/https';
import { newToken } from '../support/node-client';
import { rotateCa, startTestServer, type TestServer } from '../support/test-server';
import { describeWith, type Requirement, tempDir } from '../support/tools';
import {
  StreamReader,
  unary,
  until,
  workloadApiClient,
  workloadMetadata,
} from '../support/workload-api-client';

/**
 * The agent's Workload API end to end in one process: a real CA, NodeAgent publishing into the
 * server that the `baton agent` daemon runs, the kernel's peer credentials, a grpc-js client.
 * The clock is the test server's FakeClock, so rotation at refresh_at is a clock step, and each
 * change must reach an open stream within 1 s of the agent seeing it (CONTRACT "SPIFFE Workload
 * API"). test/integration/workload-api.test.ts drives the CLI with clients we did not write.
 */

const TD = 'wlapi.example.org';
const UID = process.getuid!();
const GID = process.getgid!();
const peers = loadPeerCredentialReader();
const native: Requirement = {
  what: 'the native peer-credential module (npm run build)',
  met: peers !== null,
};

const derCerts = (chain: Buffer): X509Certificate[] => {
  const out: X509Certificate[] = [];
  let rest = chain;
  while (rest.length > 0) {
    // DER SEQUENCE with a long-form length: 0x30 0x82 LL LL.
    const len = rest[1] === 0x82 ? 4 + rest.readUInt16BE(2) : 3 + rest[2]!;
    out.push(new X509Certificate(rest.subarray(0, len)));
    rest = rest.subarray(len);
  }
  return out;
};
/** The fields of a protobuf message by number (length-delimited ones as bytes; varints as a number's bytes). */
function fields(b: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let at = 0;
  const varint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const byte = b[at++]!;
      v += (byte & 0x7f) * 2 ** shift;
      shift += 7;
      if (byte < 0x80) return v;
    }
  };
  while (at < b.length) {
    const tag = varint();
    const [field, wire] = [Math.floor(tag / 8), tag % 8];
    if (wire === 2) {
      const len = varint();
      out.set(field, b.subarray(at, at + len));
      at += len;
    } else if (wire === 0) out.set(field, Buffer.from([varint()]));
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}
const serialOf = (m: X509SvidResponse, i = 0) =>
  derCerts(m.svids[i]!.x509_svid)[0]!.serialNumber.toLowerCase();

describeWith(native, 'the agent Workload API (in process)', () => {
  const dirs = tempDir('baton-wlapi-');
  const dir = join(dirs.path, 'node');
  const socketPath = join(dirs.path, 'sock', 'api.sock');
  let t: TestServer;
  let client: CaClient;
  let admin: { cert: string; key: string };
  let state: WorkloadApiState;
  let agent: NodeAgent;
  let server: WorkloadApiServer;
  // biome-ignore lint/suspicious/noExplicitAny: generic grpc client
  let wl: any;
  let stop: () => void;
  let running: Promise<void>;

  const createEntry = async (name: string, selectors: string[], hint?: string) => {
    const r = await callAs(t, admin, 'POST', '/v1/admin/entries', {
      name,
      spiffe_id: `spiffe://${TD}/${name}`,
      parent: 'n1',
      selectors,
      ...(hint ? { hint } : {}),
    });
    expect(r.status).toBe(201);
  };
  const fetchX509 = () => new StreamReader<X509SvidResponse>(wl.FetchX509SVID({}, workloadMetadata()));
  const stored = (name: string) => new WorkloadStore(dir).load(name)!;

  beforeAll(async () => {
    t = await startTestServer({ trustDomain: TD });
    admin = await t.issueAdmin('operator', 'ops');
    client = new CaClient({ serverUrl: t.url });
    state = new WorkloadApiState();
    agent = new NodeAgent({
      dir,
      clock: t.clock,
      client,
      random: () => 0.5,
      token: await newToken(t, { nodeName: 'n1' }),
      workloadApi: state,
    });
    server = await WorkloadApiServer.start({
      socketPath,
      state,
      peers: peers!,
      clock: t.clock,
      mintJwtSvid: (id, aud) => agent.fetchJwtSvid(id, aud),
    });
    wl = workloadApiClient(socketPath);
    await agent.runOnce();
    await createEntry('mine', [`unix:uid:${UID}`, `unix:gid:${GID}`]);
    await createEntry('theirs', [`unix:uid:${UID + 4242}`]);
    await createEntry('files-only', []);
    await agent.runOnce();
  });
  afterAll(async () => {
    stop?.();
    await running?.catch(() => undefined);
    wl?.close();
    await server?.stop();
    client?.close();
    await t?.close();
    dirs.cleanup();
  });

  it('the first message is the whole state: the SVID of the files, its PKCS#8 key, the roots and the CRLs', async () => {
    const s = fetchX509();
    const m = await s.next();
    expect(m.svids.map((v) => v.spiffe_id)).toEqual([`spiffe://${TD}/mine`]);
    const [leaf, intermediate] = derCerts(m.svids[0]!.x509_svid);
    expect(leaf!.serialNumber.toLowerCase()).toBe(stored('mine').serial);
    expect(leaf!.toString()).toBe(
      new X509Certificate(readFileSync(join(dir, 'workloads', 'mine', 'cert.pem'))).toString(),
    );
    expect(leaf!.checkIssued(intermediate!)).toBe(true);
    const key = createPrivateKey({ key: m.svids[0]!.x509_svid_key, format: 'der', type: 'pkcs8' });
    expect(createPublicKey(key).export({ type: 'spki', format: 'der' })).toEqual(
      leaf!.publicKey.export({ type: 'spki', format: 'der' }),
    );
    expect(derCerts(m.svids[0]!.bundle).map((c) => c.toString())).toEqual([
      new X509Certificate(t.bundle).toString(),
    ]);
    const crlPem = readFileSync(join(dir, 'crl.pem'), 'utf8');
    expect(m.crl.map((c) => c.toString('base64'))).toEqual(
      [...crlPem.matchAll(/-----BEGIN X509 CRL-----([^-]+)-----END X509 CRL-----/g)].map((x) =>
        x[1]!.replace(/\s/g, ''),
      ),
    );
    s.cancel();
  });

  it('rotation at refresh_at reaches an open stream within 1 s; an entry created or deleted does too', async () => {
    const s = fetchX509();
    const first = await s.next();
    const before = serialOf(first);
    t.clock.set(new Date(stored('mine').refreshAt.getTime() + 1000));
    await agent.runOnce();
    const renewedAt = Date.now();
    const second = await s.next(2, 1000);
    expect(Date.now() - renewedAt).toBeLessThan(1000);
    expect(serialOf(second)).toBe(stored('mine').serial);
    expect(serialOf(second)).not.toBe(before);

    await createEntry('mine-too', [`unix:uid:${UID}`]);
    await agent.runOnce();
    const third = await s.next(3, 1000);
    expect(third.svids.map((v) => v.spiffe_id).sort()).toEqual([
      `spiffe://${TD}/mine`,
      `spiffe://${TD}/mine-too`,
    ]);

    expect((await callAs(t, admin, 'DELETE', '/v1/admin/entries/mine-too')).status).toBe(204);
    await agent.runOnce();
    const fourth = await s.next(4, 1000);
    expect(fourth.svids.map((v) => v.spiffe_id)).toEqual([`spiffe://${TD}/mine`]);
    s.cancel();
  });

  it('a caller that matches nothing, or omits the metadata, is refused', async () => {
    const wrong = workloadApiClient(socketPath);
    const e = await new StreamReader<X509SvidResponse>(
      wrong.FetchX509SVID({}, new (await import('@grpc/grpc-js')).Metadata()),
    ).end();
    expect(e?.code).toBe(status.INVALID_ARGUMENT);
    wrong.close();
    // The entry "theirs" is another uid's: FetchJWTSVID for it is refused, before any request to the CA.
    await expect(
      unary(wl, 'FetchJWTSVID', { audience: ['x'], spiffe_id: `spiffe://${TD}/theirs` }),
    ).rejects.toMatchObject({
      code: status.PERMISSION_DENIED,
    });
    await expect(unary(wl, 'FetchJWTSVID', { audience: [] })).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
    });
  });

  it('JWT: FetchJWTSVID mints for the caller, ValidateJWTSVID checks it against the JWT bundle stream', async () => {
    const r = await unary<{ svids: { spiffe_id: string; svid: string }[] }>(wl, 'FetchJWTSVID', {
      audience: ['svc'],
    });
    expect(r.svids.map((s) => s.spiffe_id)).toEqual([`spiffe://${TD}/mine`]);
    const v = await unary<{ spiffe_id: string; claims: { fields: Record<string, unknown> } }>(
      wl,
      'ValidateJWTSVID',
      {
        audience: 'svc',
        svid: r.svids[0]!.svid,
      },
    );
    expect(v.spiffe_id).toBe(`spiffe://${TD}/mine`);
    expect(Object.keys(v.claims.fields).sort()).toEqual(['aud', 'exp', 'iat', 'iss', 'sub']);
    expect(v.claims.fields.sub).toEqual({ stringValue: `spiffe://${TD}/mine`, kind: 'stringValue' });
    expect(v.claims.fields.aud).toMatchObject({ listValue: { values: [{ stringValue: 'svc' }] } });
    await expect(
      unary(wl, 'ValidateJWTSVID', { audience: 'other', svid: r.svids[0]!.svid }),
    ).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
    });
    const tampered = `${r.svids[0]!.svid.slice(0, -4)}AAAA`;
    await expect(unary(wl, 'ValidateJWTSVID', { audience: 'svc', svid: tampered })).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
    });
    const jwtb = new StreamReader<{ bundles: Record<string, Buffer> }>(
      wl.FetchJWTBundles({}, workloadMetadata()),
    );
    const b = await jwtb.next();
    const keys = JSON.parse(b.bundles[`spiffe://${TD}`]!.toString()).keys as { kid: string }[];
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((k) => typeof k.kid === 'string')).toBe(true);
    jwtb.cancel();
  });

  it("SDS: Envoy's StreamSecrets gets the SVID and the bundle as Envoy's Secret messages, again on rotation only", async () => {
    const grpc = await import('@grpc/grpc-js');
    const loader = await import('@grpc/proto-loader');
    const pkg = grpc.loadPackageDefinition(
      loader.loadSync('envoy/service/secret/v3/sds.proto', {
        keepCase: true,
        defaults: true,
        includeDirs: [ENVOY_PROTO_DIR],
      }),
      // biome-ignore lint/suspicious/noExplicitAny: generic client built from the proto
    ) as any;
    const sds = new pkg.envoy.service.secret.v3.SecretDiscoveryService(
      `unix://${socketPath}`,
      grpc.credentials.createInsecure(),
    );
    type Response = {
      version_info: string;
      nonce: string;
      type_url: string;
      resources: { type_url: string; value: Buffer }[];
    };
    const responses: Response[] = [];
    let error: { code: number } | undefined;
    const call = sds.StreamSecrets();
    call.on('data', (r: Response) => responses.push(r));
    call.on('error', (e: { code: number }) => {
      error = e;
    });
    try {
      const mine = `spiffe://${TD}/mine`;
      call.write({ resource_names: [mine, 'ROOTCA'], type_url: SECRET_TYPE_URL });
      await until(() => responses.length >= 1 || error !== undefined);
      expect(error).toBeUndefined();
      const first = responses[0]!;
      expect(first.type_url).toBe(SECRET_TYPE_URL);
      expect(first.resources.map((r) => r.type_url)).toEqual([SECRET_TYPE_URL, SECRET_TYPE_URL]);
      // Decoded by hand with the field numbers of Envoy's API (secret.proto: Secret name = 1,
      // tls_certificate = 2, validation_context = 4; common.proto: TlsCertificate certificate_chain = 1,
      // private_key = 2, CertificateValidationContext trusted_ca = 1, crl = 7; base.proto: DataSource
      // inline_bytes = 2), not with our .proto files, so that a wrong number there fails here.
      const tls = fields(first.resources.find((r) => fields(r.value).get(1)?.toString() === mine)!.value);
      const cert = fields(tls.get(2)!);
      const chainPem = fields(cert.get(1)!).get(2)!.toString();
      const keyPem = fields(cert.get(2)!).get(2)!.toString();
      expect(new X509Certificate(chainPem).serialNumber.toLowerCase()).toBe(stored('mine').serial);
      expect(createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' })).toEqual(
        new X509Certificate(chainPem).publicKey.export({ type: 'spki', format: 'der' }),
      );
      const root = fields(
        first.resources.find((r) => fields(r.value).get(1)?.toString() === 'ROOTCA')!.value,
      );
      const validation = fields(root.get(4)!);
      expect(new X509Certificate(fields(validation.get(1)!).get(2)!).toString()).toBe(
        new X509Certificate(t.bundle).toString(),
      );
      expect(fields(validation.get(7)!).get(2)!.toString()).toMatch(/^-----BEGIN X509 CRL-----/);

      // The ACK (its nonce, the same names) is answered by nothing; a rotation by a new version.
      call.write({
        version_info: first.version_info,
        response_nonce: first.nonce,
        resource_names: [mine, 'ROOTCA'],
        type_url: SECRET_TYPE_URL,
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(responses).toHaveLength(1);
      t.clock.set(new Date(stored('mine').refreshAt.getTime() + 1000));
      await agent.runOnce();
      await until(() => responses.length >= 2, 2000);
      expect(responses[1]!.version_info).not.toBe(first.version_info);
      const renewedSecret = responses[1]!.resources.find((r) => fields(r.value).get(1)?.toString() === mine)!;
      const renewed = fields(fields(fields(renewedSecret.value).get(2)!).get(1)!)
        .get(2)!
        .toString();
      expect(new X509Certificate(renewed).serialNumber.toLowerCase()).toBe(stored('mine').serial);

      // A secret the caller is not entitled to: InvalidArgument, so a misconfigured Envoy says so.
      call.write({
        response_nonce: responses[1]!.nonce,
        resource_names: [`spiffe://${TD}/theirs`],
        type_url: SECRET_TYPE_URL,
      });
      await until(() => error !== undefined);
      expect(error!.code).toBe(status.INVALID_ARGUMENT);
    } finally {
      call.cancel();
      sds.close();
    }
  });

  it('a CA rotation brings its new JWT key to the JWT bundle stream', async () => {
    const j = new StreamReader<{ bundles: Record<string, Buffer> }>(
      wl.FetchJWTBundles({}, workloadMetadata()),
    );
    const j0 = await j.next(1);
    await rotateCa(t);
    await t.running.jobs.runOnce(); // the server's keyring reload
    await agent.runOnce();
    const j1 = await j.next(2, 2000);
    const kids = (m: { bundles: Record<string, Buffer> }) =>
      (JSON.parse(m.bundles[`spiffe://${TD}`]!.toString()).keys as { kid: string }[]).map((k) => k.kid);
    expect(kids(j1).length).toBeGreaterThan(kids(j0).length);
    j.cancel();
  });

  it('the feed: a revoked SVID is replaced on the stream; a revoked node ends it with PermissionDenied', async () => {
    let stopped!: () => void;
    const stopSignal = new Promise<void>((resolve) => {
      stopped = resolve;
    });
    stop = stopped;
    running = agent.run(stopSignal);
    running.catch(() => undefined); // asserted below
    const s = fetchX509();
    const bundles = new StreamReader<{ crl: Buffer[] }>(wl.FetchX509Bundles({}, workloadMetadata()));
    const first = await s.next();
    const crl0 = (await bundles.next(1)).crl;
    const old = serialOf(first);
    await until(() => server.connections > 0);
    await new Promise((r) => setTimeout(r, 300)); // the feed's long-poll is open
    expect(
      (await callAs(t, admin, 'POST', `/v1/admin/certificates/${old}/revoke`, { reason: 'key-compromise' }))
        .status,
    ).toBe(200);
    await until(() => s.messages.some((m) => serialOf(m) !== old), 10_000);
    const replaced = s.messages.find((m) => m.svids.length > 0 && serialOf(m) !== old)!;
    expect(serialOf(replaced)).toBe(stored('mine').serial);
    // The new CRL that lists it reached the bundle stream too.
    const crl1 = (await bundles.next(2)).crl;
    expect(Buffer.concat(crl1).equals(Buffer.concat(crl0))).toBe(false);

    // Entries are pushed too: the feed's `entry` events wake the agent, whose sync is 30 s here.
    const seen = s.messages.length;
    const ids = (m: X509SvidResponse) => m.svids.map((v) => v.spiffe_id).sort();
    const createdAt = Date.now();
    await createEntry('pushed', [`unix:uid:${UID}`]);
    await until(() => s.messages.slice(seen).some((m) => ids(m).includes(`spiffe://${TD}/pushed`)), 5000);
    expect(Date.now() - createdAt).toBeLessThan(5000);
    const withPushed = s.messages.length;
    expect((await callAs(t, admin, 'DELETE', '/v1/admin/entries/pushed')).status).toBe(204);
    await until(
      () => s.messages.length > withPushed && !ids(s.messages.at(-1)!).includes(`spiffe://${TD}/pushed`),
      5000,
    );

    expect(
      (await callAs(t, admin, 'POST', '/v1/admin/nodes/n1/revoke', { reason: 'key-compromise' })).status,
    ).toBe(200);
    const e = await s.end(10_000);
    expect(e?.code).toBe(status.PERMISSION_DENIED);
    await expect(running).rejects.toMatchObject({ code: 'ERR_NODE_REVOKED' });
    const again = await fetchX509().end();
    expect(again?.code).toBe(status.PERMISSION_DENIED);
    await expect(unary(wl, 'FetchJWTSVID', { audience: ['svc'] })).rejects.toMatchObject({
      code: status.PERMISSION_DENIED,
    });
  });
});
