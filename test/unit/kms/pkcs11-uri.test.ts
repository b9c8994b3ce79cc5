import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BatonError } from '../../../services/ca/src/ground/errors';
import { loadAdminClientConfig, loadStorageConfig } from '../../../services/ca/src/config';
import { parsePkcs11Uri, redactPkcs11Uri } from '../../../services/ca/src/kms/pkcs11-uri';
import { tempDir } from '../../support/tools';

/**
 * `--kms` (issue 18; CONTRACT "CA custody and rotation"): an RFC 7512 PKCS#11 URI. The module must
 * exist, so these tests name a file that does on every machine (the parser checks only that it is
 * a file; loading it is the custody's business).
 */
const MODULE = process.execPath;
const dir = tempDir('baton-pkcs11-uri-');
afterAll(() => dir.cleanup());

const pinFile = (name: string, text: string, mode = 0o600): string => {
  const path = join(dir.path, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
};

const errorOf = (f: () => unknown): BatonError => {
  try {
    f();
  } catch (e) {
    if (e instanceof BatonError) return e;
    throw e;
  }
  throw new Error('no error');
};

describe('parsePkcs11Uri', () => {
  it('ok/the contract example: token label, module-path, pin-source with its trailing newline ignored', () => {
    const pin = pinFile('pin', 'Secret-pin 1\n');
    const uri = parsePkcs11Uri(`pkcs11:token=baton?module-path=${MODULE}&pin-source=${pin}`);
    expect(uri.modulePath).toBe(MODULE);
    expect(uri.selector).toEqual({ token: 'baton' });
    expect(uri.pin()).toBe('Secret-pin 1');
    expect(uri.pinOrigin).toBe(`pin-source ${pin}`);
  });

  it('ok/percent-encoding, every token and slot attribute, a file: pin-source, vendor attributes ignored', () => {
    const pin = pinFile('pin2', 'p\n\n');
    const uri = parsePkcs11Uri(
      `pkcs11:token=My%20Token;manufacturer=SoftHSM%20project;serial=71912e58a8cb9350;model=SoftHSM%20v2;slot-id=7;slot-description=s;slot-manufacturer=m;library-manufacturer=lm;library-description=ld;x-vendor=1?module-path=${MODULE}&pin-source=file://${pin}&x-other=2`,
    );
    expect(uri.selector).toEqual({
      token: 'My Token',
      manufacturer: 'SoftHSM project',
      serial: '71912e58a8cb9350',
      model: 'SoftHSM v2',
      slotId: 7,
      slotDescription: 's',
      slotManufacturer: 'm',
      libraryManufacturer: 'lm',
      libraryDescription: 'ld',
    });
    // Only one trailing newline is dropped: the rest is the PIN as written.
    expect(uri.pin()).toBe('p\n');
  });

  it('ok/pin-value, never printed: toString, toJSON and JSON.stringify show it as ***', () => {
    const uri = parsePkcs11Uri(`pkcs11:token=baton?module-path=${MODULE}&pin-value=hunter2%21`);
    expect(uri.pin()).toBe('hunter2!');
    expect(String(uri)).toBe(`pkcs11:token=baton?module-path=${MODULE}&pin-value=***`);
    expect(JSON.stringify({ kms: uri })).not.toContain('hunter2');
    expect(JSON.stringify(uri)).not.toContain('hunter2');
    expect(Object.keys(uri)).not.toContain('pin');
  });

  it.each([
    ['fail/not a pkcs11 URI', 'https://hsm.example/baton', /expected an RFC 7512 PKCS#11 URI/],
    ['fail/no token named', `pkcs11:?module-path=${MODULE}&pin-value=1`, /name the token/],
    [
      'fail/an object is named',
      `pkcs11:token=t;object=k?module-path=${MODULE}&pin-value=1`,
      /object: Baton names its own keys/,
    ],
    [
      'fail/an id is named',
      `pkcs11:token=t;id=%01?module-path=${MODULE}&pin-value=1`,
      /id: Baton names its own keys/,
    ],
    [
      'fail/an unknown path attribute',
      `pkcs11:token=t;colour=red?module-path=${MODULE}&pin-value=1`,
      /unsupported path attribute colour/,
    ],
    [
      'fail/a repeated attribute (RFC 7512 §2.3)',
      `pkcs11:token=a;token=b?module-path=${MODULE}&pin-value=1`,
      /token appears more than once/,
    ],
    ['fail/no module-path', 'pkcs11:token=t?pin-value=1', /module-path is required/],
    [
      'fail/module-name instead',
      'pkcs11:token=t?module-name=softhsm2&pin-value=1',
      /module-name is not supported/,
    ],
    [
      'fail/a relative module-path',
      'pkcs11:token=t?module-path=lib/x.so&pin-value=1',
      /module-path must be an absolute path/,
    ],
    [
      'fail/a module that is not there',
      'pkcs11:token=t?module-path=/nonexistent/libx.so&pin-value=1',
      /module-path \/nonexistent\/libx\.so: no such file/,
    ],
    [
      'fail/no PIN',
      `pkcs11:token=t?module-path=${MODULE}`,
      /exactly one of pin-source \(a file\) and pin-value/,
    ],
    ['fail/both PINs', `pkcs11:token=t?module-path=${MODULE}&pin-value=1&pin-source=/x`, /exactly one of/],
    [
      'fail/a PIN program',
      `pkcs11:token=t?module-path=${MODULE}&pin-source=%7C/bin/pin`,
      /only a file path or a file: URI/,
    ],
    [
      'fail/a missing pin-source',
      `pkcs11:token=t?module-path=${MODULE}&pin-source=/nonexistent/pin`,
      /cannot read pin-source \/nonexistent\/pin \(ENOENT\)/,
    ],
    [
      'fail/slot-id not a number',
      `pkcs11:slot-id=x?module-path=${MODULE}&pin-value=1`,
      /slot-id: a decimal number/,
    ],
    ['fail/a fragment', `pkcs11:token=t?module-path=${MODULE}&pin-value=1#x`, /no fragment/],
  ])('%s: ERR_CONFIG_INVALID, one line', (_name, text, message) => {
    const e = errorOf(() => parsePkcs11Uri(text));
    expect(e.code).toBe('ERR_CONFIG_INVALID');
    expect(e.message).toMatch(/^--kms: /);
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain('\n');
  });

  it('fail/a pin-source others can read, or an empty one', () => {
    const open = pinFile('open-pin', '1234\n', 0o644);
    expect(
      errorOf(() => parsePkcs11Uri(`pkcs11:token=t?module-path=${MODULE}&pin-source=${open}`)).message,
    ).toMatch(/must not be accessible to others/);
    // Group-readable is fine (a root-owned file for the service's group).
    const group = pinFile('group-pin', '1234\n', 0o640);
    expect(parsePkcs11Uri(`pkcs11:token=t?module-path=${MODULE}&pin-source=${group}`).pin()).toBe('1234');
    const empty = pinFile('empty-pin', '\n');
    expect(
      errorOf(() => parsePkcs11Uri(`pkcs11:token=t?module-path=${MODULE}&pin-source=${empty}`)).message,
    ).toMatch(/is empty/);
  });

  it('fail/no message quotes a pin-value, not even a malformed one', () => {
    for (const text of [
      `pkcs11:token=t?module-path=${MODULE}&pin-value=s3cr%ZZet`,
      `pkcs11:token=t?module-path=/nonexistent&pin-value=s3cret`,
      `pkcs11:token=t;pin-value=s3cret?module-path=${MODULE}`,
      `pkcs11:token=t?module-path=${MODULE}&pin-value=s3cret&bogus`,
    ]) {
      expect(errorOf(() => parsePkcs11Uri(text)).message).not.toMatch(/s3cr/);
    }
  });

  it('ok/redactPkcs11Uri hides pin-value wherever it stands', () => {
    expect(redactPkcs11Uri('pkcs11:token=a?pin-value=x&module-path=/m')).toBe(
      'pkcs11:token=a?pin-value=***&module-path=/m',
    );
    expect(redactPkcs11Uri('pkcs11:token=a?module-path=/m&PIN-VALUE=x')).toBe(
      'pkcs11:token=a?module-path=/m&PIN-VALUE=***',
    );
  });
});

describe('loadStorageConfig --kms / BATON_KMS', () => {
  it('ok/the flag, else the environment; unset: no custody but the KEK', () => {
    const uri = `pkcs11:token=baton?module-path=${MODULE}&pin-value=1`;
    expect(loadStorageConfig({ kms: uri }, {}).kms?.selector).toEqual({ token: 'baton' });
    expect(loadStorageConfig({}, { BATON_KMS: uri }).kms?.modulePath).toBe(MODULE);
    expect(loadStorageConfig({}, {}).kms).toBeUndefined();
    expect(errorOf(() => loadStorageConfig({}, { BATON_KMS: 'pkcs11:' })).message).toMatch(/^BATON_KMS: /);
  });

  it('ok/admin commands (they talk to the server) never parse BATON_KMS nor read its PIN file', () => {
    const env = { BATON_KMS: `pkcs11:token=t?module-path=${MODULE}&pin-source=/nonexistent/pin` };
    expect(loadAdminClientConfig({ 'data-dir': '/srv/baton' }, env).adminDir).toBe('/srv/baton/admin');
  });
});
