/**
 * A Workload API agent in a process of its own, for the `workload-api` benchmark section and
 * test/integration/workload-api-abuse.test.ts: the real WorkloadApiServer and WorkloadApiState with
 * the kernel's peer credentials, serving one entry (`unix:uid:0`) with a real X.509-SVID under a
 * throwaway CA. Its own process, so that its memory can be measured and a crash is seen.
 *
 * `node --expose-gc dist/bench/workload-api-host.js SOCKET` with an IPC channel (fork). It sends
 * `{ready: true, pid}` once listening, then answers:
 *   {cmd: 'stats'}  → {heapUsed, rss, connections, streams, subscribers}, after two full GCs;
 *   {cmd: 'rotate'} → {serial, publishedAt}: a new SVID (new serial) is published, `publishedAt`
 *                     being `performance.timeOrigin + performance.now()` just before publish().
 */
import { type ChildProcess, fork } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadPeerCredentialReader, WorkloadApiServer, WorkloadApiState } from '../clients/rotation/src/index';
import { buildCaCertificate } from '../services/ca/src/pki/ca-certificates';
import { buildCertificate, randomSerial } from '../services/ca/src/pki/certificate';
import {
  authorityKeyIdentifier,
  basicConstraints,
  extKeyUsage,
  KeyUsageBit,
  keyUsage,
  subjectAltName,
} from '../services/ca/src/pki/extensions';
import { keyIdentifier, spkiOf } from '../services/ca/src/pki/keys';
import { encodeName } from '../services/ca/src/pki/names';
import { OID } from '../services/ca/src/pki/oids';
import { keyObjectSigner } from '../services/ca/src/pki/signer';

export const HOST_TRUST_DOMAIN = 'spiffe://bench.baton.local';
export const HOST_SPIFFE_ID = `${HOST_TRUST_DOMAIN}/workload`;
const ENTRY = 'bench-workload';
const HOUR_MS = 3600_000;

export type HostRequest = { cmd: 'stats' } | { cmd: 'rotate' };
export interface HostStats {
  heapUsed: number;
  rss: number;
  connections: number;
  streams: number;
  subscribers: number;
}
export interface HostRotation {
  serial: string;
  publishedAt: number;
}

interface Ca {
  der: Buffer;
  key: KeyObject;
  name: Buffer;
  keyId: Buffer;
}

function makeCa(now: Date): Ca {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const subject = { O: 'bench.baton.local', CN: 'Workload API bench CA' };
  const der = buildCaCertificate({
    subject,
    publicKey,
    selfKey: privateKey,
    serial: randomSerial(),
    notBefore: new Date(now.getTime() - HOUR_MS),
    notAfter: new Date(now.getTime() + 24 * HOUR_MS),
    pathLen: 0,
  });
  return { der, key: privateKey, name: encodeName(subject), keyId: keyIdentifier(spkiOf(publicKey)) };
}

/** A leaf X.509-SVID (SPIFFE X509-SVID §4: URI SAN, digitalSignature, not a CA). */
function makeSvid(ca: Ca, now: Date) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const serial = randomSerial();
  const notAfter = new Date(now.getTime() + HOUR_MS);
  const chainDer = buildCertificate(
    { issuerName: ca.name, signer: keyObjectSigner(ca.key), issuerExtensions: [] },
    {
      serial,
      notBefore: new Date(now.getTime() - 60_000),
      notAfter,
      subjectName: encodeName({ O: 'bench.baton.local' }),
      spki: spkiOf(publicKey),
      extensions: [
        basicConstraints(false),
        keyUsage([KeyUsageBit.digitalSignature]),
        extKeyUsage([OID.serverAuth, OID.clientAuth]),
        authorityKeyIdentifier(ca.keyId),
        subjectAltName({ uris: [HOST_SPIFFE_ID] }),
      ],
    },
  );
  return {
    entryName: ENTRY,
    spiffeId: HOST_SPIFFE_ID,
    serial: serial.toString('hex'),
    chainDer,
    keyDer: privateKey.export({ format: 'der', type: 'pkcs8' }),
    notAfter,
  };
}

async function main() {
  const socketPath = process.argv[2];
  if (!socketPath || !process.send) throw new Error('usage: fork(workload-api-host.js, [SOCKET])');
  const peers = loadPeerCredentialReader();
  if (!peers) throw new Error('the peer credential module is missing: run npm run build');
  const clock = { now: () => new Date() };
  const ca = makeCa(clock.now());
  const state = new WorkloadApiState();
  state.publish({
    ready: true,
    trustDomainId: HOST_TRUST_DOMAIN,
    bundleDer: ca.der,
    crls: [],
    entries: [{ name: ENTRY, spiffeId: HOST_SPIFFE_ID, selectors: ['unix:uid:0'], hint: '' }],
    svids: new Map([[ENTRY, makeSvid(ca, clock.now())]]),
  });
  const server = await WorkloadApiServer.start({
    socketPath,
    state,
    peers,
    clock,
    mintJwtSvid: async () => {
      throw new Error('JWT-SVIDs are not served by this host');
    },
    onError: (e) => process.stderr.write(`workload-api-host: ${e.message}\n`),
  });
  const gc = (globalThis as { gc?: () => void }).gc;
  process.on('message', (m: HostRequest) => {
    if (m.cmd === 'stats') {
      gc?.();
      gc?.();
      const mem = process.memoryUsage();
      const stats: HostStats = {
        heapUsed: mem.heapUsed,
        rss: mem.rss,
        connections: server.connections,
        streams: server.streams,
        subscribers: state.subscribers,
      };
      process.send!(stats);
    } else if (m.cmd === 'rotate') {
      const svid = makeSvid(ca, clock.now());
      const publishedAt = performance.timeOrigin + performance.now();
      state.publish({ svids: new Map([[ENTRY, svid]]) });
      const r: HostRotation = { serial: svid.serial, publishedAt };
      process.send!(r);
    }
  });
  process.on('disconnect', () => void server.stop().then(() => process.exit(0)));
  process.send({ ready: true, pid: process.pid });
}

/** The parent's side: a forked host and its requests, answered in order over IPC. */
export interface Host {
  pid: number;
  child: ChildProcess;
  stats(): Promise<HostStats>;
  rotate(): Promise<HostRotation>;
  /** Whether the host is still running (a crash shows here). */
  alive(): boolean;
  stop(): Promise<void>;
}

/**
 * Forks `hostJs` (this file compiled: dist/bench/workload-api-host.js) on `socketPath` and waits for
 * it to listen. The host's stderr goes to `onStderr` (default: ours).
 */
export async function forkHost(
  socketPath: string,
  hostJs = join(__dirname, 'workload-api-host.js'),
  onStderr: (chunk: string) => void = (d) => process.stderr.write(d),
  execArgv: string[] = [],
): Promise<Host> {
  const child = fork(hostJs, [socketPath], {
    execArgv: ['--expose-gc', ...execArgv],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  child.stderr?.on('data', (d: Buffer) => onStderr(d.toString()));
  let exited = false;
  const waiters: ((m: unknown) => void)[] = [];
  const failures: ((e: Error) => void)[] = [];
  child.on('message', (m) => waiters.shift()?.(m));
  child.once('exit', (code, signal) => {
    exited = true;
    const e = new Error(`the Workload API host exited (${code ?? signal})`);
    for (const f of failures.splice(0)) f(e);
  });
  const next = <T>(request?: HostRequest) =>
    new Promise<T>((resolve, reject) => {
      if (exited) return reject(new Error('the Workload API host has exited'));
      waiters.push((m) => resolve(m as T));
      failures.push(reject);
      if (request) child.send(request);
    });
  const ready = await next<{ ready: true; pid: number }>();
  return {
    pid: ready.pid,
    child,
    stats: () => next<HostStats>({ cmd: 'stats' }),
    rotate: () => next<HostRotation>({ cmd: 'rotate' }),
    alive: () => !exited,
    stop: async () => {
      if (exited) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

if (require.main === module)
  main().catch((e: Error) => {
    process.stderr.write(`workload-api-host: ${e.stack ?? e.message}\n`);
    process.exit(1);
  });
