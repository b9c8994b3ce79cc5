import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { chmodSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  credentialFile,
  type EkType,
  NodeTpm,
  qualifyingData,
  resolveTcti,
  Tpm2Tools,
  type TpmSession,
} from '../../clients/rotation/src';
import {
  type ManufacturerCa,
  manufacturerCa,
  type SoftwareTpm,
  startSwtpm,
  SWTPM_TOOLS,
} from '../support/swtpm';
import { describeWith, tempDir } from '../support/tools';

/**
 * The TPM driver (clients/rotation/src/tpm) against software TPMs, with no CA: the credential is
 * made offline by `tpm2_makecredential -T none` (the same TPM2_MakeCredential a CA computes), the
 * quote checked by `tpm2_checkquote`. swtpm has no resource manager, so whatever the driver leaves
 * loaded shows in `tpm2_getcap handles-transient`.
 */

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest();
/** TPM 2.0 Library Part 1 §16: Name = nameAlg || H(TPMT_PUBLIC); the TPM2B_PUBLIC less its size. */
const nameOf = (tpm2bPublic: Buffer) =>
  Buffer.concat([Buffer.from('000b', 'hex'), sha256(tpm2bPublic.subarray(2))]);

/** The handles the TPM still holds: transient objects and sessions, loaded or saved. */
async function leftovers(tpm: SoftwareTpm): Promise<string> {
  let out = '';
  for (const what of ['handles-transient', 'handles-loaded-session', 'handles-saved-session'])
    out += (await tpm.tool('tpm2_getcap', [what])).toString('utf8');
  return out.trim();
}

describeWith(SWTPM_TOOLS, 'the TPM driver with software TPMs (tpm2-tools)', () => {
  const work = tempDir('baton-tpm-driver-');
  chmodSync(work.path, 0o700);
  let maker: ManufacturerCa;
  let made: SoftwareTpm;
  let plain: SoftwareTpm;
  const nodeTpm = (tpm: SoftwareTpm, ek: EkType = 'rsa') =>
    new NodeTpm(new Tpm2Tools({ tcti: tpm.tcti }), ek, work.path);

  beforeAll(async () => {
    maker = manufacturerCa();
    made = await startSwtpm({ manufacturer: maker });
    plain = await startSwtpm();
  }, 60_000);
  afterAll(async () => {
    await made?.stop();
    await plain?.stop();
    if (maker) rmSync(maker.dir, { recursive: true, force: true });
    work.cleanup();
  });
  afterEach(() => {
    // No working directory outlives its exchange.
    expect(readdirSync(work.path).filter((n) => n.startsWith('.tpm-'))).toEqual([]);
  });

  it('tpm-id: SHA-256 of the EK SPKI as `openssl pkey -pubin -outform der` gives it, and of the EK certificate key', async () => {
    const id = await nodeTpm(made).ekIdentifier();
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    expect(await leftovers(made)).toBe('');

    const pem = join(work.path, 'ek.pem');
    await made.tool('tpm2_createek', ['-c', join(work.path, 'ek.ctx'), '-G', 'rsa', '-u', pem, '-f', 'pem']);
    await made.tool('tpm2_flushcontext', ['-t']);
    const der = execFileSync('openssl', ['pkey', '-pubin', '-in', pem, '-outform', 'der']);
    expect(sha256(der).toString('hex')).toBe(id);
    const cert = new X509Certificate(readFileSync(join(made.ekCertDir!, 'ek-rsa2048.crt')));
    expect(sha256(cert.publicKey.export({ type: 'spki', format: 'der' })).toString('hex')).toBe(id);
    for (const f of ['ek.pem', 'ek.ctx']) rmSync(join(work.path, f));

    // Another TPM, another identifier; the ECC EK is another key of the same TPM.
    expect(await nodeTpm(plain).ekIdentifier()).not.toBe(id);
    expect(await nodeTpm(made, 'ecc').ekIdentifier()).not.toBe(id);
    expect(await nodeTpm(made).ekIdentifier()).toBe(id);
  });

  it('open(): the EK public and its certificate from NV (RSA 0x01c00002), an AK; none without a certificate', async () => {
    const s = await nodeTpm(made).open();
    try {
      // The working directory exists only now, private to the agent.
      const [ws] = readdirSync(work.path).filter((n) => n.startsWith('.tpm-'));
      expect(statSync(join(work.path, ws!)).mode & 0o777).toBe(0o700);
      const e = s.endorsement;
      expect(e.ekPublic.readUInt16BE(0)).toBe(e.ekPublic.length - 2);
      expect(e.ekPublic.readUInt16BE(2)).toBe(0x0001); // TPM_ALG_RSA
      expect(e.ekCertificate?.equals(readFileSync(join(made.ekCertDir!, 'ek-rsa2048.crt')))).toBe(true);
      expect(s.akPublic.readUInt16BE(2)).toBe(0x0023); // TPM_ALG_ECC
    } finally {
      await s.close();
    }
    expect(await leftovers(made)).toBe('');
    // swtpm_setup makes no P-256 EK certificate (0x01c0000a), and a TPM without a manufacturer none.
    for (const [tpm, ek] of [
      [made, 'ecc'],
      [plain, 'rsa'],
    ] as const) {
      const t = await nodeTpm(tpm, ek).open();
      await t.close();
      expect(t.endorsement.ekCertificate).toBeUndefined();
    }
  });

  it.each(['rsa', 'ecc'] as const)(
    '%s EK: activates a credential `tpm2_makecredential` made offline, from the same two fields; the quote passes tpm2_checkquote',
    async (ek) => {
      const s = await nodeTpm(plain, ek).open();
      let session: TpmSession | undefined = s;
      try {
        const secret = Buffer.alloc(32);
        for (let i = 0; i < 32; i++) secret[i] = (i * 7 + 3) & 0xff;
        const cred = offlineCredential(work.path, s.endorsement.ekPublic, nameOf(s.akPublic), secret);
        // The file tpm2-tools made is exactly the one the driver builds from the CA's two fields.
        expect(cred.fields.credentialBlob.readUInt16BE(0)).toBe(cred.fields.credentialBlob.length - 2);
        expect(credentialFile(cred.fields).equals(cred.file)).toBe(true);

        expect((await s.activateCredential(cred.fields)).equals(secret)).toBe(true);
        expect(await leftovers(plain)).toBe('');

        const q = qualifyingData('nonce-of-the-test', Buffer.from('csr'));
        const { quote, signature } = await s.quote(q);
        expect(await leftovers(plain)).toBe('');
        // TPMS_ATTEST (Part 2 §10.12.12): magic, TPM_ST_ATTEST_QUOTE, qualifiedSigner, extraData.
        expect(quote.readUInt32BE(0)).toBe(0xff544347);
        expect(quote.readUInt16BE(4)).toBe(0x8018);
        const signerLen = quote.readUInt16BE(6);
        const qualifiedSigner = quote.subarray(8, 8 + signerLen);
        const extra = quote.subarray(10 + signerLen, 10 + signerLen + quote.readUInt16BE(8 + signerLen));
        expect(extra.equals(q)).toBe(true);
        // Part 1 §16 qualified names, as docs/api.md gives them for the CA's check.
        const qnEk = Buffer.concat([
          Buffer.from('000b', 'hex'),
          sha256(Buffer.concat([Buffer.from('4000000b', 'hex'), nameOf(s.endorsement.ekPublic)])),
        ]);
        const qnAk = Buffer.concat([
          Buffer.from('000b', 'hex'),
          sha256(Buffer.concat([qnEk, nameOf(s.akPublic)])),
        ]);
        expect(qualifiedSigner.toString('hex')).toBe(qnAk.toString('hex'));
        // TPMT_SIGNATURE: ECDSA (0x0018) with SHA-256 (0x000b).
        expect(signature.subarray(0, 4).toString('hex')).toBe('0018000b');

        writeFileSync(join(work.path, 'ak.pub'), s.akPublic);
        writeFileSync(join(work.path, 'quote.msg'), quote);
        writeFileSync(join(work.path, 'quote.sig'), signature);
        const check = (qualifying: Buffer) =>
          execFileSync(
            'tpm2_checkquote',
            [
              '-u',
              'ak.pub',
              '-m',
              'quote.msg',
              '-s',
              'quote.sig',
              '-g',
              'sha256',
              '-q',
              qualifying.toString('hex'),
            ],
            { cwd: work.path, stdio: 'pipe' },
          );
        expect(() => check(q)).not.toThrow();
        expect(() => check(qualifyingData('another-nonce', Buffer.from('csr')))).toThrow();
        await s.close();
        session = undefined;
        expect(await leftovers(plain)).toBe('');
      } finally {
        await session?.close();
        for (const f of ['ak.pub', 'quote.msg', 'quote.sig', 'ek.pub', 'secret', 'cred'])
          rmSync(join(work.path, f), { force: true });
      }
    },
  );

  it('a credential for another AK is refused by the TPM: one line ERR_TPM_FAILED, nothing left loaded', async () => {
    const s = await nodeTpm(plain).open();
    try {
      const other = Buffer.concat([Buffer.from('000b', 'hex'), sha256(Buffer.from('another AK'))]);
      const cred = offlineCredential(work.path, s.endorsement.ekPublic, other, Buffer.alloc(32, 1));
      const refused = await s.activateCredential(cred.fields).catch((e: unknown) => e);
      expect(refused).toMatchObject({ code: 'ERR_TPM_FAILED' });
      expect((refused as Error).message).toMatch(/^tpm2_activatecredential failed: [^\n]+$/);
      expect(await leftovers(plain)).toBe('');
    } finally {
      await s.close();
      for (const f of ['ek.pub', 'secret', 'cred']) rmSync(join(work.path, f), { force: true });
    }
    expect(await leftovers(plain)).toBe('');
  });

  it.each([
    [
      'fail/tpm2-tools missing',
      () => new Tpm2Tools({ tcti: plain.tcti, env: { PATH: work.path } }),
      'ERR_TPM_TOOLS_MISSING',
      /^tpm2_createek not found: install tpm2-tools \(Debian and Ubuntu: apt-get install tpm2-tools\)$/,
    ],
    [
      'fail/no TPM at the TCTI',
      () => new Tpm2Tools({ tcti: `swtpm:path=${join(work.path, 'none.sock')}` }),
      'ERR_TPM_UNAVAILABLE',
      /^cannot reach the TPM at swtpm:path=\S+none\.sock: Cannot connect to swtpm TPM socket$/,
    ],
    [
      'fail/no kernel resource manager',
      () => new Tpm2Tools({ tcti: 'device:/dev/baton-no-tpmrm0' }),
      'ERR_TPM_UNAVAILABLE',
      /^cannot reach the TPM at device:\/dev\/baton-no-tpmrm0: Failed to open specified TCTI device file \/dev\/baton-no-tpmrm0: No such file or directory$/,
    ],
  ])('%s: one line', async (_name, tools, code, message) => {
    const e = await new NodeTpm(tools(), 'rsa', work.path).ekIdentifier().catch((x: unknown) => x);
    expect(e).toMatchObject({ code, message: expect.stringMatching(message) });
  });

  it('each tool runs with an argument array, a minimal environment and a deadline', async () => {
    const bin = join(work.path, 'bin');
    execFileSync('mkdir', ['-m', '0700', bin]);
    // A stand-in that reports its arguments and environment, and one that never answers.
    writeFileSync(join(bin, 'tpm2_echo'), '#!/bin/sh\nprintf "%s|" "$@"; env | sort\n', { mode: 0o700 });
    writeFileSync(join(bin, 'tpm2_hang'), '#!/bin/sh\nexec sleep 30\n', { mode: 0o700 });
    try {
      const tools = new Tpm2Tools({
        tcti: 'swtpm:path=/x',
        timeoutMs: 300,
        env: { PATH: `${bin}:/usr/bin:/bin`, BATON_TOKEN: 'secret-token', TSS2_LOG: 'all+none' },
      });
      const out = (await tools.run('tpm2_echo', ['a b', '$(id)', ';ls'])).toString('utf8');
      expect(out.startsWith('a b|$(id)|;ls|')).toBe(true);
      const env = out.slice(out.indexOf('|;ls|') + 5);
      expect(env).toContain('TPM2TOOLS_TCTI=swtpm:path=/x\n');
      expect(env).toContain('TSS2_LOG=all+none\n');
      expect(env).not.toContain('BATON_TOKEN');
      const started = Date.now();
      await expect(tools.run('tpm2_hang', [])).rejects.toMatchObject({
        code: 'ERR_TPM_FAILED',
        message: 'tpm2_hang did not finish in 0.3 s (TPM at swtpm:path=/x)',
      });
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

describe('resolveTcti', () => {
  it.each([
    ['ok/the flag first', 'swtpm:path=/a', { TPM2TOOLS_TCTI: 'device:/dev/tpm0' }, 'swtpm:path=/a'],
    ['ok/then TPM2TOOLS_TCTI', undefined, { TPM2TOOLS_TCTI: 'device:/dev/tpm0' }, 'device:/dev/tpm0'],
    ['ok/else the kernel resource manager', undefined, {}, 'device:/dev/tpmrm0'],
    ['ok/an empty variable is unset', undefined, { TPM2TOOLS_TCTI: ' ' }, 'device:/dev/tpmrm0'],
  ])('%s', (_name, flag, env, tcti) => {
    expect(resolveTcti(flag, env)).toBe(tcti);
  });
});

/**
 * TPM2_MakeCredential without a TPM (`tpm2_makecredential -T none`), as a CA computes it, and the
 * two wire fields (credential_blob, encrypted_secret) cut from the file it writes.
 */
function offlineCredential(dir: string, ekPublic: Buffer, akName: Buffer, secret: Buffer) {
  writeFileSync(join(dir, 'ek.pub'), ekPublic);
  writeFileSync(join(dir, 'secret'), secret);
  execFileSync(
    'tpm2_makecredential',
    ['-T', 'none', '-e', 'ek.pub', '-s', 'secret', '-n', akName.toString('hex'), '-o', 'cred'],
    { cwd: dir, stdio: 'pipe' },
  );
  const file = readFileSync(join(dir, 'cred'));
  expect(file.subarray(0, 8).toString('hex')).toBe('badcc0de00000001');
  const blobEnd = 8 + 2 + file.readUInt16BE(8);
  const credentialBlob = file.subarray(8, blobEnd);
  const encryptedSecret = file.subarray(blobEnd);
  expect(encryptedSecret.readUInt16BE(0)).toBe(encryptedSecret.length - 2);
  return { file, fields: { credentialBlob, encryptedSecret } };
}
