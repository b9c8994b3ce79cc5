import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BatonError } from '../ground/errors';

/**
 * `--kms` / BATON_KMS: an RFC 7512 PKCS#11 URI naming the token that keeps the CA and JWT-SVID keys,
 * the module that reaches it and where its user PIN comes from, e.g.
 * `pkcs11:token=baton?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/baton/pin`.
 *
 * Path attributes (RFC 7512 §2.3) select the token: `token` (CK_TOKEN_INFO label), `manufacturer`,
 * `serial`, `model`, `slot-id`, `slot-description`, `slot-manufacturer`, `library-manufacturer`,
 * `library-description`. `object`, `id` and `type` are refused: Baton names its own keys.
 * Query attributes: `module-path` (required: an absolute path to the module), and exactly one of
 * `pin-source` (a file, or a `file:` URI; read once, here, a trailing newline ignored) and
 * `pin-value`. `module-name` is refused (it leaves the library search to the platform).
 * Vendor attributes (`x-…`) are ignored, as §2.3 allows. Every value is percent-decoded.
 *
 * The PIN is never printed: the parsed URI's `toString()`/`toJSON()` show `pin-value` as `***`,
 * and no error message quotes a value of the query.
 */
export interface Pkcs11TokenSelector {
  token?: string;
  manufacturer?: string;
  serial?: string;
  model?: string;
  slotId?: number;
  slotDescription?: string;
  slotManufacturer?: string;
  libraryManufacturer?: string;
  libraryDescription?: string;
}

export class Pkcs11Uri {
  readonly #pin: string;
  constructor(
    readonly modulePath: string,
    readonly selector: Readonly<Pkcs11TokenSelector>,
    pin: string,
    /** Where the PIN came from, for messages: `pin-source <path>` or `pin-value`. */
    readonly pinOrigin: string,
    /** The URI as given with any pin-value replaced: safe to print. */
    readonly redacted: string,
  ) {
    this.#pin = pin;
  }

  /** The user PIN (CKU_USER). Read it only to log in. */
  pin(): string {
    return this.#pin;
  }

  toString(): string {
    return this.redacted;
  }

  toJSON(): string {
    return this.redacted;
  }
}

const PATH_ATTRS: Record<string, keyof Pkcs11TokenSelector> = {
  token: 'token',
  manufacturer: 'manufacturer',
  serial: 'serial',
  model: 'model',
  'slot-id': 'slotId',
  'slot-description': 'slotDescription',
  'slot-manufacturer': 'slotManufacturer',
  'library-manufacturer': 'libraryManufacturer',
  'library-description': 'libraryDescription',
};

const invalid = (what: string, message: string): never => {
  throw new BatonError('ERR_CONFIG_INVALID', `${what}: ${message}`);
};

/** `pin-value=…` shown as `pin-value=***`, wherever it stands; the rest as given. */
export function redactPkcs11Uri(text: string): string {
  return text.replace(/(^|[?&;])(pin-value=)[^&;]*/gi, '$1$2***');
}

function decode(value: string, name: string, what: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    // The value itself is not quoted: for pin-value it is the PIN.
    return invalid(what, `the value of ${name} is not valid percent-encoding (RFC 7512 §2.3)`);
  }
}

/** Splits `a=b;c=d` (or with `&`) into decoded pairs, refusing a repeated attribute (§2.3). */
function attributes(part: string, sep: string, what: string): Map<string, string> {
  const out = new Map<string, string>();
  if (part === '') return out;
  for (const item of part.split(sep)) {
    const eq = item.indexOf('=');
    if (eq <= 0) invalid(what, `expected attribute=value, got "${redactPkcs11Uri(item).slice(0, 40)}"`);
    const name = item.slice(0, eq).toLowerCase();
    if (out.has(name)) invalid(what, `the attribute ${name} appears more than once (RFC 7512 §2.3)`);
    out.set(name, decode(item.slice(eq + 1), name, what));
  }
  return out;
}

function readPin(source: string, what: string): { pin: string; path: string } {
  let path = source;
  if (/^file:/i.test(source)) {
    try {
      path = fileURLToPath(source);
    } catch {
      invalid(what, 'pin-source: not a file path or file: URI');
    }
  } else if (/^[a-z][a-z0-9+.-]*:/i.test(source) || source.startsWith('|')) {
    invalid(what, 'pin-source: only a file path or a file: URI is supported');
  }
  path = resolve(path);
  let text = '';
  try {
    // Group-readable is allowed (a root-owned file for the service's group); others never.
    if ((statSync(path).mode & 0o007) !== 0)
      invalid(what, `pin-source ${path} must not be accessible to others (chmod 600 or 640)`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof BatonError) throw e;
    invalid(what, `cannot read pin-source ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  // A trailing newline (one line written by `echo`) is not part of the PIN.
  const pin = text.replace(/\r?\n$/, '');
  if (pin === '') invalid(what, `pin-source ${path} is empty`);
  return { pin, path };
}

/**
 * Parses and checks a `--kms` URI (`what` names the flag in messages); reads the PIN file once.
 * Every failure is ERR_CONFIG_INVALID with one line that never contains the PIN.
 */
export function parsePkcs11Uri(text: string, what = '--kms'): Pkcs11Uri {
  const trimmed = text.trim();
  if (!/^pkcs11:/i.test(trimmed))
    invalid(what, 'expected an RFC 7512 PKCS#11 URI (pkcs11:token=…?module-path=…&pin-source=…)');
  const body = trimmed.slice('pkcs11:'.length);
  if (body.includes('#')) invalid(what, 'a PKCS#11 URI has no fragment');
  const q = body.indexOf('?');
  const path = attributes(q < 0 ? body : body.slice(0, q), ';', what);
  const query = attributes(q < 0 ? '' : body.slice(q + 1), '&', what);

  const selector: Pkcs11TokenSelector = {};
  for (const [name, value] of path) {
    if (name.startsWith('x-')) continue;
    if (name === 'object' || name === 'id' || name === 'type')
      invalid(what, `${name}: Baton names its own keys; the URI names only the token`);
    const key = PATH_ATTRS[name];
    if (!key) invalid(what, `unknown or unsupported path attribute ${name}`);
    if (key === 'slotId') {
      if (!/^\d{1,10}$/.test(value)) invalid(what, 'slot-id: a decimal number');
      selector.slotId = Number(value);
    } else {
      (selector as Record<string, string>)[key!] = value;
    }
  }
  if (Object.keys(selector).length === 0)
    invalid(what, 'name the token (token=LABEL, or serial=…, or slot-id=…)');

  for (const name of query.keys()) {
    if (name.startsWith('x-')) continue;
    if (name === 'module-name')
      invalid(what, 'module-name is not supported: give module-path, the absolute path of the module');
    if (!['module-path', 'pin-source', 'pin-value'].includes(name))
      invalid(what, `unknown or unsupported query attribute ${name}`);
  }
  const modulePath = query.get('module-path');
  if (!modulePath) invalid(what, 'module-path is required (e.g. /usr/lib/softhsm/libsofthsm2.so)');
  if (!isAbsolute(modulePath!)) invalid(what, 'module-path must be an absolute path');
  if (!existsSync(modulePath!) || !statSync(modulePath!).isFile())
    invalid(what, `module-path ${modulePath}: no such file`);

  const source = query.get('pin-source');
  const value = query.get('pin-value');
  if ((source === undefined) === (value === undefined))
    invalid(what, 'give exactly one of pin-source (a file) and pin-value');
  if (value === '') invalid(what, 'pin-value is empty');
  const { pin, origin } =
    source !== undefined
      ? (({ pin, path }) => ({ pin, origin: `pin-source ${path}` }))(readPin(source, what))
      : { pin: value!, origin: 'pin-value' };
  return new Pkcs11Uri(modulePath!, Object.freeze(selector), pin, origin, redactPkcs11Uri(trimmed));
}
