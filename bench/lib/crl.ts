import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildCrl, type CrlEntry } from '../../services/ca/src/pki/crl';
import { monoMs, timedRun } from './proc';
import type { SigningCa } from '../../services/ca/src/domain/keyring';

/** `n` revoked certificates: random 128-bit serials (as Baton draws them), revoked over the last day. */
export function revokedEntries(n: number): CrlEntry[] {
  const now = Date.now();
  const out: CrlEntry[] = [];
  for (let i = 0; i < n; i++) {
    const s = randomBytes(16);
    s[0] = (s[0]! & 0x7f) | 0x01;
    out.push({
      serial: s.toString('hex'),
      revokedAt: new Date(now - (i % 86_400) * 1000),
      reason: i % 3 ? 1 : 4,
    });
  }
  return out;
}

/** Baton: build and sign the CRL DER in process, from hex serials as the database returns them. */
export function batonCrl(ca: SigningCa, entries: CrlEntry[]): { ms: number; bytes: number } {
  const started = monoMs();
  const der = buildCrl({
    issuer: { name: ca.subjectName, keyId: ca.keyId, signer: ca.template.signer },
    crlNumber: 42n,
    thisUpdate: new Date(),
    nextUpdate: new Date(Date.now() + 3_600_000),
    entries,
  });
  return { ms: monoMs() - started, bytes: der.length };
}

const utc = (d: Date) => `${d.toISOString().slice(2, 19).replace(/[-:T]/g, '')}Z`; // YYMMDDHHMMSSZ, as index.txt wants

/**
 * `openssl ca -gencrl` over an index.txt holding the same entries (status R, revocation date and
 * reason): the time includes reading the index, as it does for anyone running openssl's CA.
 */
export function prepareOpensslCrl(dir: string, caCert: string, caKey: string, entries: CrlEntry[]): string[] {
  mkdirSync(dir, { recursive: true });
  const expiry = utc(new Date(Date.now() + 30 * 86_400_000));
  const reasons: Record<number, string> = { 1: ',keyCompromise', 4: ',superseded' };
  const lines = entries.map(
    (e, i) =>
      `R\t${expiry}\t${utc(e.revokedAt)}${reasons[e.reason ?? 0] ?? ''}\t${String(e.serial).toUpperCase()}\tunknown\t/CN=n${i}\n`,
  );
  writeFileSync(join(dir, 'index.txt'), lines.join(''));
  writeFileSync(join(dir, 'index.txt.attr'), 'unique_subject = no\n');
  writeFileSync(join(dir, 'crlnumber'), '1000\n');
  writeFileSync(
    join(dir, 'openssl.cnf'),
    [
      '[ ca ]',
      'default_ca = bench',
      '[ bench ]',
      `database = ${join(dir, 'index.txt')}`,
      `crlnumber = ${join(dir, 'crlnumber')}`,
      `certificate = ${caCert}`,
      `private_key = ${caKey}`,
      'default_md = sha256',
      'default_crl_hours = 1',
      'unique_subject = no',
      'crl_extensions = crl_ext',
      '[ crl_ext ]',
      'authorityKeyIdentifier = keyid:always',
      '',
    ].join('\n'),
  );
  return ['ca', '-gencrl', '-config', join(dir, 'openssl.cnf'), '-out', join(dir, 'crl.pem')];
}

export async function opensslCrl(dir: string, args: string[]): Promise<{ ms: number; bytes: number }> {
  const { ms } = await timedRun('openssl', args);
  return { ms, bytes: pemBytes(readFileSync(join(dir, 'crl.pem'), 'utf8')) };
}

/**
 * `cfssl gencrl SERIALS CERT KEY`: the serials file has one decimal serial per line. (The optional
 * expiry argument is left out: cfssl 1.2 reads it as a file name.)
 */
export function prepareCfsslCrl(dir: string, caCert: string, caKey: string, entries: CrlEntry[]): string[] {
  mkdirSync(dir, { recursive: true });
  const serials = entries.map((e) => BigInt(`0x${String(e.serial)}`).toString(10)).join('\n');
  writeFileSync(join(dir, 'serials.txt'), `${serials}\n`);
  return ['gencrl', join(dir, 'serials.txt'), caCert, caKey];
}

export async function cfsslCrl(args: string[]): Promise<{ ms: number; bytes: number }> {
  const { ms, stdout } = await timedRun('cfssl', args);
  const text = stdout.toString('utf8').trim();
  // cfssl prints the CRL as base64 DER (or a JSON envelope around it in some versions).
  const b64 = text.startsWith('{') ? String((JSON.parse(text) as { crl?: string }).crl ?? '') : text;
  return { ms, bytes: Buffer.from(b64.replace(/-----[^-]+-----|\s+/g, ''), 'base64').length };
}

function pemBytes(pem: string): number {
  return Buffer.from(pem.replace(/-----[^-]+-----|\s+/g, ''), 'base64').length;
}
