import { createHash, createPublicKey } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { baton } from '../support/cli';
import { type SoftwareTpm, startSwtpm, SWTPM_TOOLS } from '../support/swtpm';
import { testCa } from '../fixtures/test-ca';
import { describeWith, tempDir } from '../support/tools';

/**
 * `baton agent --tpm` and `baton agent tpm-id` at the command line, without a CA (CONTRACT "TPM
 * node attestation"): usage errors (exit 2), a TPM or CA that cannot be reached (exit 1), each one
 * line. The joins against a real `baton server` are in tpm-agent-e2e.test.ts.
 */

const PIN = 'a'.repeat(52);
const dir = tempDir('baton-agent-tpm-cli-');
afterAll(() => dir.cleanup());

describe('baton agent --tpm: usage (exit 2, one line)', () => {
  const empty = join(dir.path, 'empty');
  it.each([
    [
      'fail/--tpm with --token',
      ['--dir', empty, '--tpm', '--pin', PIN, '--token', `BATON1-${PIN}-0000000000000001.${'a'.repeat(26)}`],
      {},
      '--tpm and a join token (--token or BATON_TOKEN) exclude each other: the node attests with one',
    ],
    [
      'fail/--tpm with BATON_TOKEN',
      ['--dir', empty, '--tpm', '--pin', PIN],
      { BATON_TOKEN: `BATON1-${PIN}-0000000000000001.${'a'.repeat(26)}` },
      '--tpm and a join token (--token or BATON_TOKEN) exclude each other: the node attests with one',
    ],
    [
      'fail/--tpm without --pin and without DIR/bundle.pem',
      ['--dir', empty, '--tpm'],
      {},
      '--tpm needs --pin ROOT_PIN (the root pin `baton ca init` printed) until DIR/bundle.pem exists',
    ],
    [
      'fail/a malformed pin',
      ['--dir', empty, '--tpm', '--pin', 'ABC'],
      {},
      '--pin: not a root pin (52 characters of lowercase base32, as `baton ca init` prints it)',
    ],
    [
      'fail/a malformed BATON_PIN',
      ['--dir', empty, '--tpm'],
      { BATON_PIN: 'x' },
      '--pin: not a root pin (52 characters of lowercase base32, as `baton ca init` prints it)',
    ],
    [
      'fail/--pin without --tpm',
      ['--dir', empty, '--pin', PIN],
      {},
      '--pin, --tpm-tcti and --tpm-ek-type go with --tpm (a join token carries its own pin)',
    ],
    [
      'fail/--tpm-tcti without --tpm',
      ['--dir', empty, '--tpm-tcti', 'device:/dev/tpm0'],
      {},
      '--pin, --tpm-tcti and --tpm-ek-type go with --tpm (a join token carries its own pin)',
    ],
    [
      'fail/an unknown EK type',
      ['--dir', empty, '--tpm', '--pin', PIN, '--tpm-ek-type', 'dsa'],
      {},
      '--tpm-ek-type: rsa or ecc',
    ],
    [
      'fail/an empty TCTI',
      ['--dir', empty, '--tpm', '--pin', PIN, '--tpm-tcti', ''],
      {},
      '--tpm-tcti: a TCTI, e.g. device:/dev/tpmrm0',
    ],
  ])('%s', (_name, args, env, message) => {
    const r = baton(['agent', '--server', 'https://127.0.0.1:1', '--once', ...args], env);
    expect(r.stderr).toBe(`baton: ${message} (ERR_USAGE)\n`);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
  });

  it('ok/BATON_PIN stands for --pin: the CA is asked next', () => {
    const r = baton(['agent', '--server', 'https://127.0.0.1:1', '--once', '--dir', empty, '--tpm'], {
      BATON_PIN: PIN,
    });
    expect(r.stderr).toMatch(
      /^baton: cannot reach the CA at https:\/\/127\.0\.0\.1:1\/v1\/bundle: .*\(ERR_SERVER_UNREACHABLE\)\n$/,
    );
    expect(r.status).toBe(1);
  });

  it('ok/an existing DIR/bundle.pem stands for the pin: the TPM is asked next', () => {
    const withBundle = join(dir.path, 'with-bundle');
    mkdirSync(withBundle, { mode: 0o755 });
    writeFileSync(join(withBundle, 'bundle.pem'), testCa().keyring.bundlePem);
    const r = baton([
      'agent',
      '--server',
      'https://127.0.0.1:1',
      '--once',
      '--dir',
      withBundle,
      '--tpm',
      '--tpm-tcti',
      'device:/dev/baton-no-tpm',
    ]);
    expect(r.stderr).toBe(
      'baton: cannot reach the TPM at device:/dev/baton-no-tpm: Failed to open specified TCTI device file /dev/baton-no-tpm: No such file or directory (ERR_TPM_UNAVAILABLE)\n',
    );
    expect(r.status).toBe(1);
  });
});

describeWith(SWTPM_TOOLS, 'baton agent tpm-id', () => {
  let tpm: SoftwareTpm;
  beforeAll(async () => {
    tpm = await startSwtpm();
  });
  afterAll(async () => {
    await tpm?.stop();
  });

  it('prints the EK identifier alone on stdout; --json adds the node ID; TPM2TOOLS_TCTI or --tpm-tcti names the TPM', async () => {
    // Its working directory goes in the temporary directory: one of the test's own, to look at.
    const tmp = join(dir.path, 'tmp');
    mkdirSync(tmp, { mode: 0o700 });
    const r = baton(['agent', 'tpm-id', '--tpm-tcti', tpm.tcti], { TMPDIR: tmp });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const id = r.stdout.trim();
    // The EK's SPKI, from tpm2-tools itself.
    const pem = join(tpm.dir, 'ek.pem');
    await tpm.tool('tpm2_createek', ['-c', join(tpm.dir, 'ek.ctx'), '-G', 'rsa', '-u', pem, '-f', 'pem']);
    await tpm.tool('tpm2_flushcontext', ['-t']);
    const spki = createPublicKey(readFileSync(pem)).export({ type: 'spki', format: 'der' });
    expect(createHash('sha256').update(spki).digest('hex')).toBe(id);

    const env = baton(['agent', 'tpm-id', '--json'], { TPM2TOOLS_TCTI: tpm.tcti });
    expect(env.status).toBe(0);
    expect(JSON.parse(env.stdout)).toEqual({ ek_id: id, node_id: `tpm-${id.slice(0, 20)}` });

    const ecc = baton(['agent', 'tpm-id', '--tpm-ek-type', 'ecc'], { TPM2TOOLS_TCTI: tpm.tcti });
    expect(ecc.status).toBe(0);
    expect(ecc.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    expect(ecc.stdout.trim()).not.toBe(id);
    // Nothing left loaded in a TPM without a resource manager, no working directory left behind.
    expect((await tpm.tool('tpm2_getcap', ['handles-transient'])).toString('utf8')).toBe('');
    expect(readdirSync(tmp)).toEqual([]);
  });

  it.each([
    [
      'fail/no TPM at the TCTI',
      ['--tpm-tcti', 'device:/dev/baton-no-tpm'],
      {},
      /^baton: cannot reach the TPM at device:\/dev\/baton-no-tpm: Failed to open specified TCTI device file \/dev\/baton-no-tpm: No such file or directory \(ERR_TPM_UNAVAILABLE\)\n$/,
    ],
    [
      'fail/tpm2-tools not installed',
      [],
      { PATH: dir.path },
      /^baton: tpm2_createek not found: install tpm2-tools \(Debian and Ubuntu: apt-get install tpm2-tools\) \(ERR_TPM_TOOLS_MISSING\)\n$/,
    ],
  ])('%s: exit 1, one line', (_name, args, env, message) => {
    const r = baton(['agent', 'tpm-id', ...args], { TPM2TOOLS_TCTI: tpm.tcti, ...env });
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    expect(r.status).toBe(1);
  });

  it('fail/an unknown EK type: exit 2', () => {
    const r = baton(['agent', 'tpm-id', '--tpm-ek-type', 'rsa4096']);
    expect(r.stderr).toBe('baton: --tpm-ek-type: rsa or ecc (ERR_USAGE)\n');
    expect(r.status).toBe(2);
  });
});
