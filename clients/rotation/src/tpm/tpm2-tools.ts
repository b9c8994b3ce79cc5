import { type ExecFileException, execFile } from 'node:child_process';
import { AgentError } from '../agent-error';

/**
 * Runs Debian's `tpm2-tools` (5.x) against one TPM. There is no maintained npm TPM 2.0 stack (the
 * TSS bindings on npm are unmaintained or browser-only), so the agent drives the TCG TSS through its
 * reference command-line tools, as SPIRE's community tpm plugin and Keylime's early agent did.
 *
 * - Each tool runs with execFile and an argument array, never a shell string, with a deadline
 *   (a TPM that hangs must not hang the agent) and a minimal environment that names the TCTI.
 * - The TCTI (TCG TSS 2.0 TPM Command Transmission Interface) is `--tpm-tcti`, else
 *   `TPM2TOOLS_TCTI`, else the kernel's resource manager `device:/dev/tpmrm0`, never tctildr's own
 *   search, which would fall back to /dev/tpm0 or a simulator port without saying so.
 * - Failures are AgentErrors with one line: ERR_TPM_TOOLS_MISSING (the binary is not installed),
 *   ERR_TPM_UNAVAILABLE (the TCTI cannot reach a TPM), ERR_TPM_FAILED (the TPM or tool refused).
 */

export const DEFAULT_TCTI = 'device:/dev/tpmrm0';

/**
 * Per tool call. A real TPM makes the RSA 2048 EK by searching primes from its seed, which takes
 * seconds on slow parts (TCG PC Client PTP allows a CreatePrimary to take that long); a minute
 * leaves room for that without letting a wedged device stall the agent for good.
 */
export const DEFAULT_TPM_TIMEOUT_MS = 60_000;

/** The output of a tpm2-tools run is small: a handle list, a digest, an NV certificate (< 4 KiB). */
const MAX_OUTPUT_BYTES = 1 << 20;

/** `--tpm-tcti`, else TPM2TOOLS_TCTI, else the kernel resource manager. */
export function resolveTcti(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): string {
  return flag?.trim() || env.TPM2TOOLS_TCTI?.trim() || DEFAULT_TCTI;
}

export interface Tpm2ToolsOptions {
  tcti: string;
  timeoutMs?: number;
  /** Where PATH (to find the tools) and TSS2_LOG come from; default this process's environment. */
  env?: Readonly<Record<string, string | undefined>>;
}

export interface RunParams {
  /** The working directory: relative file arguments resolve in it. */
  cwd?: string;
}

export class Tpm2Tools {
  readonly tcti: string;
  readonly #timeoutMs: number;
  readonly #env: NodeJS.ProcessEnv;

  constructor(o: Tpm2ToolsOptions) {
    this.tcti = o.tcti;
    this.#timeoutMs = o.timeoutMs ?? DEFAULT_TPM_TIMEOUT_MS;
    const env = o.env ?? process.env;
    // Nothing else of the agent's environment (a join token, a database URL) reaches the tools.
    this.#env = {
      PATH: env.PATH || '/usr/sbin:/usr/bin:/sbin:/bin',
      TPM2TOOLS_TCTI: this.tcti,
      LC_ALL: 'C',
      // The TSS log level, when an operator asks for it to debug (tpm2-tss doc/logging.md).
      ...(env.TSS2_LOG ? { TSS2_LOG: env.TSS2_LOG } : {}),
    };
  }

  /** Runs `tool args…`; resolves with its stdout, rejects with an AgentError of one line. */
  run(tool: string, args: readonly string[], p: RunParams = {}): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      execFile(
        tool,
        [...args],
        {
          cwd: p.cwd,
          env: this.#env,
          encoding: 'buffer',
          timeout: this.#timeoutMs,
          killSignal: 'SIGKILL',
          maxBuffer: MAX_OUTPUT_BYTES,
          windowsHide: true,
        },
        (error, stdout, stderr) => {
          if (!error) resolve(stdout);
          else reject(this.#explain(tool, error, stderr.toString('utf8')));
        },
      );
    });
  }

  /**
   * TPM2_FlushContext of every transient object (`tpm2_flushcontext -t`). Without a resource
   * manager (swtpm, /dev/tpm0) what a tool loads stays loaded after it exits, and the TPM has
   * room for only a few objects (TCG PC Client PTP: at least 3); behind /dev/tpmrm0 it sees only
   * this connection's objects.
   */
  async flushTransient(cwd?: string): Promise<void> {
    await this.run('tpm2_flushcontext', ['-t'], { cwd });
  }

  #explain(tool: string, error: ExecFileException, stderr: string): AgentError {
    if (error.code === 'ENOENT')
      return new AgentError(
        'ERR_TPM_TOOLS_MISSING',
        `${tool} not found: install tpm2-tools (Debian and Ubuntu: apt-get install tpm2-tools)`,
      );
    if (error.killed)
      return new AgentError(
        'ERR_TPM_FAILED',
        `${tool} did not finish in ${this.#timeoutMs / 1000} s (TPM at ${this.tcti})`,
      );
    if (/Could not load tcti|Failed to instantiate TCTI/.test(stderr)) {
      const why = tctiReason(stderr);
      return new AgentError(
        'ERR_TPM_UNAVAILABLE',
        `cannot reach the TPM at ${this.tcti}${why ? `: ${why}` : ''}`,
      );
    }
    return new AgentError('ERR_TPM_FAILED', `${tool} failed: ${toolReason(stderr) ?? `exit ${error.code}`}`);
  }
}

/** `ERROR:tcti:src/…:452:Tss2_Tcti_Device_Init() Failed to open … /dev/tpmrm0: Permission denied`. */
function tctiReason(stderr: string): string | undefined {
  const m = /^ERROR:tcti:\S+ (.+?)\s*$/m.exec(stderr) ?? /^WARNING:tcti:\S+ (.+?)\s*$/m.exec(stderr);
  return m ? oneLine(m[1]!) : undefined;
}

/** The tool's own `ERROR: …` line (the library's lines carry a source location). */
function toolReason(stderr: string): string | undefined {
  const lines = stderr.split('\n').filter((l) => /^ERROR: /.test(l));
  const line = lines.find((l) => /tpm:|Esys_/.test(l)) ?? lines[0];
  return line ? oneLine(line.slice('ERROR: '.length)) : undefined;
}

const oneLine = (s: string): string => s.replace(/\s+/g, ' ').trim().slice(0, 300);
