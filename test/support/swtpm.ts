import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Requirement } from './tools';

const run = promisify(execFile);

/**
 * Software TPMs for tests (issue 19): `swtpm socket`, one per simulated node, on a Unix socket in
 * its own directory (no port to race for), started with `--daemon` and stopped by its PID.
 *
 * `swtpm socket` has no resource manager: objects a tool loads stay loaded until flushed, which is
 * what a real `/dev/tpm0` without `tpm2-abrmd` does too, so the agent's cleaning is tested for real.
 */
export interface SoftwareTpm {
  /** The TCTI string for tpm2-tools (`TPM2TOOLS_TCTI` or `--tpm-tcti`). */
  readonly tcti: string;
  readonly pid: number;
  readonly dir: string;
  /** The EK certificates swtpm_setup wrote (`ek-rsa2048.crt` DER, `ek-secp384r1.crt`), when made. */
  readonly ekCertDir: string | null;
  /** Runs a tpm2-tools command against this TPM (argument array, no shell); returns stdout. */
  tool(cmd: string, args: readonly string[]): Promise<Buffer>;
  stop(): Promise<void>;
}

/**
 * What the TPM tests need, for describeWith (support/tools.ts): skipped with this reason when
 * missing, a failure under BATON_REQUIRE_TOOLS=1 (`.ci/run` installs them).
 */
export const SWTPM_TOOLS: Requirement = {
  what: 'swtpm, swtpm_setup and tpm2-tools (Debian swtpm, swtpm-tools, tpm2-tools)',
  get met() {
    return swtpmAvailable();
  },
};

/** A local TPM manufacturer CA (swtpm_localca): a root and an intermediate that signs EK certificates. */
export interface ManufacturerCa {
  readonly dir: string;
  /** The manufacturer's root certificate (PEM); exists after the first TPM it provisioned. */
  rootPem(): string;
  /** The intermediate that signs EK certificates (PEM). */
  issuerPem(): string;
}

/** True when swtpm, swtpm_setup and tpm2-tools are installed (`.ci/run` installs them). */
export function swtpmAvailable(): boolean {
  return ['swtpm', 'swtpm_setup', 'tpm2_createek'].every(
    (cmd) => spawnSync('sh', ['-c', 'command -v "$0"', cmd]).status === 0,
  );
}

/** A fresh manufacturer CA in its own directory; its keys are made by the first provisioning. */
export function manufacturerCa(parent = tmpdir()): ManufacturerCa {
  const dir = mkdtempSync(join(parent, 'baton-tpm-maker-'));
  const state = join(dir, 'state');
  mkdirSync(state);
  writeFileSync(
    join(dir, 'localca.conf'),
    [
      `statedir = ${state}`,
      `signingkey = ${join(state, 'signkey.pem')}`,
      `issuercert = ${join(state, 'issuercert.pem')}`,
      `certserial = ${join(state, 'certserial')}`,
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'swtpm_setup.conf'),
    [
      'create_certs_tool = /usr/bin/swtpm_localca',
      `create_certs_tool_config = ${join(dir, 'localca.conf')}`,
      'create_certs_tool_options = /etc/swtpm-localca.options',
      'active_pcr_banks = sha256',
      '',
    ].join('\n'),
  );
  return {
    dir,
    rootPem: () => readFileSync(join(state, 'swtpm-localca-rootca-cert.pem'), 'utf8'),
    issuerPem: () => readFileSync(join(state, 'issuercert.pem'), 'utf8'),
  };
}

export interface StartSwtpmOptions {
  /** Manufacture the TPM with EK certificates in NV (RSA 2048 at 0x01c00002) signed by this CA. */
  manufacturer?: ManufacturerCa;
}

/**
 * Starts one software TPM. Without a manufacturer it is a TPM with no EK certificate (the EK itself
 * is derived from the TPM's endorsement seed by tpm2_createek, the same on every call).
 */
export async function startSwtpm(opts: StartSwtpmOptions = {}): Promise<SoftwareTpm> {
  const dir = mkdtempSync(join(tmpdir(), 'baton-swtpm-'));
  const state = join(dir, 'state');
  mkdirSync(state);
  let ekCertDir: string | null = null;
  if (opts.manufacturer) {
    ekCertDir = join(dir, 'ek-certs');
    mkdirSync(ekCertDir);
    await run(
      'swtpm_setup',
      [
        '--tpm2',
        '--tpmstate',
        state,
        '--create-ek-cert',
        '--config',
        join(opts.manufacturer.dir, 'swtpm_setup.conf'),
        '--write-ek-cert-files',
        ekCertDir,
      ],
      { timeout: 30_000 },
    );
  }
  const sock = join(dir, 'tpm.sock');
  const pidFile = join(dir, 'swtpm.pid');
  await run(
    'swtpm',
    [
      'socket',
      '--tpm2',
      '--tpmstate',
      `dir=${state}`,
      '--server',
      `type=unixio,path=${sock}`,
      // The swtpm TCTI finds the control channel at <path>.ctrl.
      '--ctrl',
      `type=unixio,path=${sock}.ctrl`,
      '--flags',
      'not-need-init,startup-clear',
      '--daemon',
      '--pid',
      `file=${pidFile}`,
    ],
    { timeout: 10_000 },
  );
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  const tcti = `swtpm:path=${sock}`;
  return {
    tcti,
    pid,
    dir,
    ekCertDir,
    tool: async (cmd, args) =>
      (
        await run(cmd, [...args], {
          env: { ...process.env, TPM2TOOLS_TCTI: tcti },
          encoding: 'buffer',
          timeout: 30_000,
          maxBuffer: 1 << 20,
        })
      ).stdout,
    stop: async () => {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
      for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
      if (alive(pid)) process.kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
