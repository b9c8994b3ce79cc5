import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { certsOf } from './load-client';
import { writeFiles } from './tools';

export interface OcspQuery {
  /** `openssl ocsp -resp_text` of the answer, verified given only the trust bundle. */
  out: string;
  /** Whether that verification passed ("Response verify OK"). */
  verified: boolean;
  /** `good`, `revoked`, `unknown` for a signed answer; the responder error (`unauthorized`) if any. */
  status: string | undefined;
  /** The DER response as fetched. */
  der: Buffer;
}

/**
 * Asks `URL/v1/ocsp` about a leaf (or a bare serial under `issuerPem`) with `openssl ocsp`, then
 * verifies the answer in a second `openssl ocsp -respin` call given nothing but the trust bundle
 * (the roots). No `-issuer` in that call on purpose: with it, openssl retries a failed verification
 * trusting the issuer certificate outright (OCSP_TRUSTOTHER), which older releases did without any
 * check of who signed for which CertID and so hid an answer no client should accept.
 */
export async function ocspQuery(p: {
  url: string;
  bundle: string;
  dir: string;
  issuerPem: string;
  certPem?: string;
  serial?: string;
  /** Extra options for the request (e.g. `-no_nonce`, `-sha256`). */
  options?: string[];
}): Promise<OcspQuery> {
  const tag = randomBytes(4).toString('hex');
  const f = writeFiles(p.dir, {
    [`issuer-${tag}.pem`]: p.issuerPem,
    [`trust-${tag}.pem`]: p.bundle,
    ...(p.certPem ? { [`leaf-${tag}.pem`]: p.certPem } : {}),
  });
  const target = p.certPem ? ['-cert', f[`leaf-${tag}.pem`]!] : ['-serial', `0x${p.serial}`];
  const respFile = join(p.dir, `resp-${tag}.der`);
  const fetch = await runTool('openssl', [
    'ocsp',
    ...(p.options ?? []),
    '-issuer',
    f[`issuer-${tag}.pem`]!,
    ...target,
    '-url',
    `${p.url}/v1/ocsp`,
    // -CAfile here is for the TLS connection to the responder; the answer is checked below.
    '-CAfile',
    f[`trust-${tag}.pem`]!,
    '-noverify',
    '-respout',
    respFile,
    '-timeout',
    '10',
  ]);
  if (fetch.status !== 0 && !/Responder Error/.test(fetch.out))
    throw new Error(`openssl ocsp could not fetch an answer: ${fetch.out}`);
  const der = readFileSync(respFile);
  const check = await runTool('openssl', [
    'ocsp',
    '-respin',
    respFile,
    '-CAfile',
    f[`trust-${tag}.pem`]!,
    '-resp_text',
  ]);
  const error = /Responder Error: (\w+)/.exec(check.out)?.[1];
  return {
    out: check.out,
    verified: /^Response verify OK$/m.test(check.out),
    status: error ?? /Cert Status: (good|revoked|unknown)/.exec(check.out)?.[1],
    der,
  };
}

/** The OCSP status of a node or workload chain (leaf, then its CA), or the raw output when unverified. */
export async function ocspStatus(
  url: string,
  chainPem: string,
  bundle: string,
  dir: string,
): Promise<string> {
  const [leaf, inter] = certsOf(chainPem);
  const q = await ocspQuery({ url, bundle, dir, issuerPem: inter!, certPem: leaf! });
  return q.verified && q.status ? q.status : q.out;
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
