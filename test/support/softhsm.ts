import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasTool, type Requirement, tempDir } from './tools';

/** Debian's SoftHSM2 module (package softhsm2), the PKCS#11 token the tests keep CA keys in. */
export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export const softHsm: Requirement = {
  what: 'SoftHSM2 (Debian softhsm2)',
  met: existsSync(SOFTHSM_MODULE) && hasTool('softhsm2-util'),
};

/** One object of the token, as a separate process reads it with pkcs11js (C_FindObjects, C_GetAttributeValue). */
export interface TokenObject {
  class: 'private' | 'public' | 'other';
  label: string;
  /** CKA_ID, hex. */
  id: string;
  /** Private keys only. */
  sensitive?: boolean;
  extractable?: boolean;
  alwaysSensitive?: boolean;
  neverExtractable?: boolean;
  /** What reading CKA_VALUE gave: the CK_RV of the refusal, or `read` when the token gave it out. */
  value?: string;
}

/**
 * The child process that talks to the token: the test's own process never loads the module, so a
 * custody under test in it is the only user there (C_Initialize is once per process).
 */
const TOKEN_SCRIPT = `
const p = require(${JSON.stringify(require.resolve('pkcs11js'))});
const [op, module, label, pin, arg] = process.argv.slice(1);
const m = new p.PKCS11();
m.load(module);
m.C_Initialize();
try {
  const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trimEnd() === label);
  const s = m.C_OpenSession(slot, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
  m.C_Login(s, p.CKU_USER, pin);
  if (op === 'set-pin') {
    m.C_SetPIN(s, pin, arg);
  } else {
    m.C_FindObjectsInit(s, []);
    const handles = m.C_FindObjects(s, 1000);
    m.C_FindObjectsFinal(s);
    const bool = (h, t) => m.C_GetAttributeValue(s, h, [{ type: t }])[0].value[0] !== 0;
    const out = handles.map((h) => {
      const [cls, lab, id] = m.C_GetAttributeValue(s, h, [{ type: p.CKA_CLASS }, { type: p.CKA_LABEL }, { type: p.CKA_ID }]);
      const c = cls.value.readUInt32LE(0);
      const o = { class: c === p.CKO_PRIVATE_KEY ? 'private' : c === p.CKO_PUBLIC_KEY ? 'public' : 'other', label: lab.value.toString(), id: id.value.toString('hex') };
      if (c === p.CKO_PRIVATE_KEY) {
        o.sensitive = bool(h, p.CKA_SENSITIVE);
        o.extractable = bool(h, p.CKA_EXTRACTABLE);
        o.alwaysSensitive = bool(h, p.CKA_ALWAYS_SENSITIVE);
        o.neverExtractable = bool(h, p.CKA_NEVER_EXTRACTABLE);
        try { m.C_GetAttributeValue(s, h, [{ type: p.CKA_VALUE }]); o.value = 'read'; } catch (e) { o.value = e.message; }
      }
      return o;
    });
    process.stdout.write(JSON.stringify(out));
  }
  m.C_Logout(s);
} finally {
  m.C_Finalize();
}
`;

/**
 * Points SoftHSM in this process at `token`. The module reads SOFTHSM2_CONF with getenv() at
 * C_Initialize, from the real environment, which jest's sandboxed `process.env` (a copy) does not
 * reach; `process.loadEnvFile` (Node's own function) sets the real one. It sets a variable only
 * once per process, so it names a file of this process whose contents each caller replaces.
 */
export function useSoftHsmConfInProcess(token: SoftHsmToken): () => void {
  const conf = join(tmpdir(), `baton-softhsm2-${process.pid}.conf`);
  copyFileSync(token.env.SOFTHSM2_CONF!, conf);
  const envFile = `${conf}.env`;
  writeFileSync(envFile, `SOFTHSM2_CONF=${conf}\n`);
  process.loadEnvFile(envFile);
  return () => {
    rmSync(conf, { force: true });
    rmSync(envFile, { force: true });
  };
}

export interface SoftHsmToken {
  label: string;
  pin: string;
  /** SOFTHSM2_CONF for every process that uses the token. */
  env: Record<string, string>;
  /** The `--kms` URI; `pin` `source` reads a 0600 file, `value` puts the PIN in the URI. */
  uri(pin?: 'source' | 'value', pinText?: string): string;
  /** Takes the token's directory away: the module finds no token (and its open handles go invalid). */
  unplug(): void;
  plug(): void;
  /** Every object of the token (a separate process, logged in with the current PIN). */
  objects(pin?: string): TokenObject[];
  /** C_SetPIN from a separate process. */
  setPin(oldPin: string, newPin: string): void;
  cleanup(): void;
}

/** A SoftHSM2 token of its own: a temp dir with its own softhsm2.conf and token directory. */
export function softHsmToken(label = 'baton', pin = 'Baton-pin-5150'): SoftHsmToken {
  const dir = tempDir('baton-softhsm-');
  const tokens = join(dir.path, 'tokens');
  const away = join(dir.path, 'away');
  mkdirSync(tokens);
  const conf = join(dir.path, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const env = { SOFTHSM2_CONF: conf };
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', 'Baton-so-5678'],
    { env: { ...process.env, ...env }, stdio: 'ignore' },
  );
  const pinPath = join(dir.path, 'pin');
  let tokenDir = '';
  const token: SoftHsmToken = {
    label,
    pin,
    env,
    uri: (how = 'source', pinText = pin) => {
      if (how === 'value')
        return `pkcs11:token=${label}?module-path=${SOFTHSM_MODULE}&pin-value=${encodeURIComponent(pinText)}`;
      writeFileSync(pinPath, `${pinText}\n`, { mode: 0o600 });
      return `pkcs11:token=${label}?module-path=${SOFTHSM_MODULE}&pin-source=${pinPath}`;
    },
    unplug: () => {
      tokenDir = readdirSync(tokens)[0]!;
      renameSync(join(tokens, tokenDir), away);
    },
    plug: () => renameSync(away, join(tokens, tokenDir)),
    objects: (p = pin) => {
      const r = spawnSync(process.execPath, ['-e', TOKEN_SCRIPT, 'list', SOFTHSM_MODULE, label, p], {
        env: { ...process.env, ...env },
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`listing the token failed: ${r.stderr}`);
      return JSON.parse(r.stdout) as TokenObject[];
    },
    setPin: (oldPin, newPin) => {
      const r = spawnSync(
        process.execPath,
        ['-e', TOKEN_SCRIPT, 'set-pin', SOFTHSM_MODULE, label, oldPin, newPin],
        {
          env: { ...process.env, ...env },
          encoding: 'utf8',
        },
      );
      if (r.status !== 0) throw new Error(`C_SetPIN failed: ${r.stderr}`);
    },
    cleanup: () => dir.cleanup(),
  };
  return token;
}
