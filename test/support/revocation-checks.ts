import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { certsOf } from './load-client';
import { writeFiles } from './tools';

/** `openssl ocsp -url URL/v1/ocsp` for a leaf: good, revoked or unknown (or the raw output). */
export async function ocspStatus(
  url: string,
  chainPem: string,
  bundle: string,
  dir: string,
): Promise<string> {
  const [leaf, inter] = certsOf(chainPem);
  const tag = randomBytes(4).toString('hex');
  const f = writeFiles(dir, {
    [`leaf-${tag}.pem`]: leaf!,
    [`inter-${tag}.pem`]: inter!,
    [`trust-${tag}.pem`]: bundle + inter!,
  });
  const r = await runTool('openssl', [
    'ocsp',
    '-issuer',
    f[`inter-${tag}.pem`]!,
    '-cert',
    f[`leaf-${tag}.pem`]!,
    '-url',
    `${url}/v1/ocsp`,
    '-CAfile',
    f[`trust-${tag}.pem`]!,
    '-timeout',
    '10',
  ]);
  if (!/Response verify OK/.test(r.out)) return r.out;
  return /: (good|revoked|unknown)/.exec(r.out)?.[1] ?? r.out;
}

/** The serials a DER CRL lists, and its CRL Number (openssl crl -text). */
export async function crlContents(der: Buffer, dir: string): Promise<{ serials: string[]; number: bigint }> {
  const path = join(dir, `crl-${randomBytes(4).toString('hex')}.der`);
  writeFileSync(path, der);
  const r = await runTool('openssl', ['crl', '-inform', 'DER', '-noout', '-text', '-in', path]);
  const serials = [...r.out.matchAll(/Serial Number: ([0-9A-Fa-f]+)/g)].map((m) => {
    const s = m[1]!.toLowerCase();
    return s.length % 2 ? `0${s}` : s;
  });
  const num = /X509v3 CRL Number: *\n\s*(\d+)/.exec(r.out)?.[1];
  if (num === undefined) throw new Error(`no CRL number in: ${r.out}`);
  return { serials, number: BigInt(num) };
}

/** Runs a tool without stdin (openssl may exit before reading it) and collects its output. */
export function runTool(
  cmd: string,
  args: string[],
  timeoutMs = 20_000,
): Promise<{ status: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ status: code ?? -1, out }));
  });
}
