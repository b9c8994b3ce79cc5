import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { onInterrupt } from './proc';

const run = promisify(execFile);

/**
 * A software TPM for the benchmark (swtpm on a Unix socket, no resource manager) and the node's
 * side of TPM attestation through tpm2-tools, as docs/api.md "TPM attestation" describes it. The
 * test suite has the same in test/support/swtpm.ts and tpm-node.ts; the benchmark is built on its
 * own (test/ is not compiled into dist), so it keeps this small copy.
 */
export interface BenchTpm {
  ekPublic: Buffer;
  akPublic: Buffer;
  ekId: string;
  activate(credentialBlob: string, encryptedSecret: string): Promise<Buffer>;
  quote(qualifyingData: Buffer): Promise<{ quote: Buffer; signature: Buffer }>;
  stop(): Promise<void>;
}

export function swtpmMissing(): string | undefined {
  const missing = ['swtpm', 'tpm2_createek'].filter(
    (cmd) => spawnSync('sh', ['-c', 'command -v "$0"', cmd]).status !== 0,
  );
  return missing.length ? `${missing.join(' and ')} not installed (Debian swtpm, tpm2-tools)` : undefined;
}

export async function startBenchTpm(work: string, ekType: 'rsa' | 'ecc'): Promise<BenchTpm> {
  const dir = mkdtempSync(join(work, 'swtpm-'));
  mkdirSync(join(dir, 'state'));
  const sock = join(dir, 'tpm.sock');
  await run('swtpm', [
    'socket',
    '--tpm2',
    '--tpmstate',
    `dir=${join(dir, 'state')}`,
    '--server',
    `type=unixio,path=${sock}`,
    '--ctrl',
    `type=unixio,path=${sock}.ctrl`,
    '--flags',
    'not-need-init,startup-clear',
    '--daemon',
    '--pid',
    `file=${join(dir, 'pid')}`,
  ]);
  const pid = Number(readFileSync(join(dir, 'pid'), 'utf8').trim());
  const stop = async () => {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone already
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const forget = onInterrupt(stop);
  const f = (name: string) => join(dir, name);
  const tool = async (cmd: string, args: string[]) =>
    (await run(cmd, args, { env: { ...process.env, TPM2TOOLS_TCTI: `swtpm:path=${sock}` }, timeout: 30_000 }))
      .stdout;
  const flush = () => tool('tpm2_flushcontext', ['-t']);
  await tool('tpm2_createek', ['-c', f('ek.ctx'), '-G', ekType, '-u', f('ek.pub'), '-f', 'tss']);
  await flush();
  await tool('tpm2_readpublic', ['-c', f('ek.ctx'), '-f', 'der', '-o', f('ek.der')]);
  await flush();
  await tool('tpm2_createak', [
    '-C',
    f('ek.ctx'),
    '-c',
    f('ak.ctx'),
    '-G',
    'ecc',
    '-g',
    'sha256',
    '-s',
    'ecdsa',
    '-u',
    f('ak.pub'),
    '-f',
    'tss',
  ]);
  await flush();
  let n = 0;
  return {
    ekPublic: readFileSync(f('ek.pub')),
    akPublic: readFileSync(f('ak.pub')),
    ekId: createHash('sha256')
      .update(readFileSync(f('ek.der')))
      .digest('hex'),
    activate: async (blob, secret) => {
      const i = ++n;
      const head = Buffer.alloc(8);
      head.writeUInt32BE(0xbadcc0de, 0);
      head.writeUInt32BE(1, 4);
      writeFileSync(
        f(`cred-${i}`),
        Buffer.concat([head, Buffer.from(blob, 'base64'), Buffer.from(secret, 'base64')]),
      );
      await tool('tpm2_startauthsession', ['--policy-session', '-S', f(`s-${i}.ctx`)]);
      try {
        await tool('tpm2_policysecret', ['-S', f(`s-${i}.ctx`), '-c', 'e']);
        await tool('tpm2_activatecredential', [
          '-c',
          f('ak.ctx'),
          '-C',
          f('ek.ctx'),
          '-i',
          f(`cred-${i}`),
          '-o',
          f(`secret-${i}`),
          '-P',
          `session:${f(`s-${i}.ctx`)}`,
        ]);
      } finally {
        await tool('tpm2_flushcontext', [f(`s-${i}.ctx`)]).catch(() => undefined);
        await flush();
      }
      return readFileSync(f(`secret-${i}`));
    },
    quote: async (data) => {
      const i = ++n;
      await tool('tpm2_quote', [
        '-c',
        f('ak.ctx'),
        '-l',
        'sha256:0',
        '-q',
        data.toString('hex'),
        '-g',
        'sha256',
        '-m',
        f(`q-${i}.msg`),
        '-s',
        f(`q-${i}.sig`),
      ]);
      await flush();
      return { quote: readFileSync(f(`q-${i}.msg`)), signature: readFileSync(f(`q-${i}.sig`)) };
    },
    stop: async () => {
      forget();
      await stop();
    },
  };
}
