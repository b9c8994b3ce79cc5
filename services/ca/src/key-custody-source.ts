import type { StorageConfig } from './config';
import { type KeyCustody, kekCustody } from './domain/key-custody';
import { resolveKek } from './kek-source';
import { Pkcs11Custody } from './kms/pkcs11-custody';
import type { Kek } from './pki/kek';

/**
 * Where the CA and JWT-SVID keys are kept: the PKCS#11 token `--kms` (BATON_KMS) names, or, without
 * it, the KEK (kek-source.ts: BATON_KEK or <data-dir>/kek). With --kms no KEK is read or made.
 *
 * One PKCS#11 custody per process and URI: the module is initialized once (a second C_Initialize
 * in the same process would be refused) and its one logged-in session serves every command that
 * opens the CA in this process (`server --init-trust-domain` inits, then opens).
 */
const tokens = new Map<string, Pkcs11Custody>();

export function resolveCustody(
  cfg: StorageConfig,
  opts: { create: boolean },
): { custody: KeyCustody; kek?: Kek } {
  if (!cfg.kms) {
    const kek = resolveKek(cfg, opts);
    return { custody: kekCustody(kek), kek };
  }
  const key = `${cfg.kms.modulePath}\n${cfg.kms.redacted}`;
  let custody = tokens.get(key);
  if (!custody) {
    custody = new Pkcs11Custody(cfg.kms);
    tokens.set(key, custody);
  }
  return { custody };
}
