/**
 * Issue 18: workload SVID issuance with the CA keys in a PKCS#11 token (SoftHSM2, `--kms`), on
 * PostgreSQL like `issuance_c16_per_s` and in the same run, right after it: the figure
 * `issuance_c16_pkcs11_per_s` and the ratio `ratio_issuance_pkcs11_vs_kek_c16` (target: at least
 * 0.5x). The server keeps one logged-in session per process and signs each certificate with one
 * C_SignInit/C_Sign on it (services/ca/src/kms/pkcs11-custody.ts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type BatonServer, startBaton } from '../lib/baton';
import { type Context, log, set } from '../lib/context';
import { createDatabase, postgresReachable } from '../lib/postgres';
import { BATON_ENV, batonIssuance } from './baton-setup';

export const PKCS11_FIGURES = ['issuance_c16_pkcs11_per_s', 'issuance_c16_pkcs11_p99_ms'];
const MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const PIN = 'bench-pin-1234';

/** A SoftHSM2 token of the benchmark's own (its own config and token directory under the work dir). */
function softHsmToken(work: string): Record<string, string> {
  const dir = join(work, 'softhsm');
  mkdirSync(join(dir, 'tokens'), { recursive: true });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(
    conf,
    `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`,
  );
  const env = { SOFTHSM2_CONF: conf };
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', 'bench', '--pin', PIN, '--so-pin', PIN],
    {
      env: { ...process.env, ...env },
      stdio: 'ignore',
    },
  );
  const pin = join(dir, 'pin');
  writeFileSync(pin, `${PIN}\n`, { mode: 0o600 });
  return { ...env, BATON_KMS: `pkcs11:token=bench?module-path=${MODULE}&pin-source=${pin}` };
}

export async function pkcs11Section(c: Context) {
  if (!existsSync(MODULE)) throw new Error(`SoftHSM2 is not installed (${MODULE}; Debian softhsm2)`);
  if (!(await postgresReachable())) throw new Error('PostgreSQL does not answer on 127.0.0.1:5432');
  const tokenEnv = softHsmToken(c.work);
  const db = await createDatabase('baton_bench_pkcs11');
  let server: BatonServer | undefined;
  try {
    server = await startBaton({
      databaseUrl: db.url,
      workers: c.o.workers,
      logLevel: c.o.logLevel,
      env: { ...BATON_ENV, ...tokenEnv },
    });
    log(`   baton on PostgreSQL, keys in SoftHSM2: ${server.url}`);
    await batonIssuance(c, server, 'issuance_pkcs11', [16]);
    // The names for the two headline figures; the rest keep the prefix's.
    set(c, 'issuance_c16_pkcs11_per_s', c.figures.issuance_pkcs11_c16_per_s!);
    set(c, 'issuance_c16_pkcs11_p99_ms', c.figures.issuance_pkcs11_c16_p99_ms!);
    delete c.figures.issuance_pkcs11_c16_per_s;
    delete c.figures.issuance_pkcs11_c16_p99_ms;
    log(
      `   c16 with the keys in SoftHSM2: ${c.figures.issuance_c16_pkcs11_per_s!.median}/s (KEK-wrapped, same run: ${c.figures.issuance_c16_per_s?.median ?? 'not measured'}/s)`,
    );
  } finally {
    await server?.stop();
    await db.drop().catch(() => undefined);
  }
}
