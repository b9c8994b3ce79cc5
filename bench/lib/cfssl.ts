import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TlsTarget } from './http';
import { commandExists, drain, freePort, onInterrupt, sleep, stop } from './proc';
import { connect } from 'node:tls';

export const CFSSL_TOOLS = ['cfssl', 'cfssljson', 'multirootca'] as const;
export const CFSSL_INSTALL_HINT = 'apt-get install golang-cfssl';

/** Why the cfssl figures cannot be measured here, or undefined when they can. */
export function cfsslMissing(): string | undefined {
  const missing = CFSSL_TOOLS.filter((t) => !commandExists(t));
  return missing.length ? `${missing.join(', ')} not installed (${CFSSL_INSTALL_HINT})` : undefined;
}

export function cfsslVersion(): string | undefined {
  try {
    return /Version:\s*(\S+)/.exec(execFileSync('cfssl', ['version'], { encoding: 'utf8' }))?.[1];
  } catch {
    return undefined;
  }
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: 'pipe' });

export interface CfsslCa {
  dir: string;
  caCert: string;
  caKey: string;
  /** A TLS server certificate for 127.0.0.1 and a client certificate, both from the CA (mTLS). */
  serverCert: string;
  serverKey: string;
  client: { cert: string; key: string };
}

/** An EC P-256 CA (the key type Baton's signing CA has) plus TLS credentials, made with openssl. */
export function makeCfsslCa(dir: string): CfsslCa {
  const p = (f: string) => join(dir, f);
  openssl(['ecparam', '-genkey', '-name', 'prime256v1', '-noout', '-out', 'ca-key.pem'], dir);
  openssl(
    [
      ...['req', '-x509', '-new', '-key', 'ca-key.pem', '-subj', '/O=bench/CN=cfssl bench CA', '-days', '30'],
      ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
      ...['-out', 'ca.pem'],
    ],
    dir,
  );
  const leaf = (name: string, ext: string) => {
    openssl(['ecparam', '-genkey', '-name', 'prime256v1', '-noout', '-out', `${name}-key.pem`], dir);
    openssl(['req', '-new', '-key', `${name}-key.pem`, '-subj', `/CN=${name}`, '-out', `${name}.csr`], dir);
    writeFileSync(p(`${name}.ext`), `${ext}\n`);
    openssl(
      [
        ...['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial'],
        ...['-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`],
      ],
      dir,
    );
  };
  leaf('server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth');
  leaf('client', 'extendedKeyUsage=clientAuth');
  // The signing profile: the same key usages and lifetime as a Baton workload SVID, with CRL and OCSP URLs.
  writeFileSync(
    p('config.json'),
    JSON.stringify({
      signing: {
        default: {
          usages: ['digital signature', 'server auth', 'client auth'],
          expiry: '1h',
          crl_url: 'https://127.0.0.1:8443/v1/crl',
          ocsp_url: 'https://127.0.0.1:8443/v1/ocsp',
        },
      },
    }),
  );
  return {
    dir,
    caCert: p('ca.pem'),
    caKey: p('ca-key.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server-key.pem'),
    client: { cert: readFileSync(p('client.pem'), 'utf8'), key: readFileSync(p('client-key.pem'), 'utf8') },
  };
}

export interface CfsslServer {
  target: TlsTarget;
  pid: number;
  stop(): Promise<void>;
}

/** Waits until a TLS handshake on the port succeeds. */
async function waitForTls(
  port: number,
  ca: string,
  timeoutMs: number,
  child: ChildProcess,
  tail: () => string,
) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`cfssl serve exited: ${tail()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port, ca }, () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`cfssl serve not ready after ${timeoutMs} ms: ${tail()}`);
}

/**
 * `cfssl serve` over mutual TLS (the same transport Baton's workload API uses), optionally with its
 * PostgreSQL certificate store (`-db-config`), which inserts one row per certificate it signs.
 */
export async function startCfssl(ca: CfsslCa, dbUrl?: string): Promise<CfsslServer> {
  const port = await freePort();
  const args = [
    ...['serve', '-address', '127.0.0.1', '-port', String(port)],
    ...['-ca', ca.caCert, '-ca-key', ca.caKey, '-config', join(ca.dir, 'config.json')],
    ...['-tls-cert', ca.serverCert, '-tls-key', ca.serverKey, '-mutual-tls-ca', ca.caCert],
  ];
  if (dbUrl) {
    const dbConfig = join(ca.dir, 'db-config.json');
    const u = new URL(dbUrl);
    u.searchParams.set('sslmode', 'disable');
    writeFileSync(dbConfig, JSON.stringify({ driver: 'postgres', data_source: u.toString() }));
    args.push('-db-config', dbConfig);
  }
  // Logs to a file, as for Baton (bench/lib/baton.ts): never a pipe the benchmark has to keep up with.
  const logFile = join(ca.dir, `cfssl-${port}.log`);
  const logFd = openSync(logFile, 'a');
  const child = spawn('cfssl', args, { stdio: ['ignore', 'pipe', logFd] });
  closeSync(logFd);
  const forget = onInterrupt(() => stop(child, 2000));
  const stdoutTail = drain(child);
  const tail = () => `${stdoutTail()}${readFileSync(logFile, 'utf8').slice(-2000)}`;
  const caPem = readFileSync(ca.caCert, 'utf8');
  try {
    await waitForTls(port, caPem, 30_000, child, tail);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    target: { url: `https://127.0.0.1:${port}`, ca: caPem, ...ca.client },
    pid: child.pid!,
    stop: async () => {
      await stop(child, 5000);
      forget();
    },
  };
}
