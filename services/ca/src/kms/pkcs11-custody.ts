import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import type { Handle } from 'pkcs11js';
import { oid, seq, uintBytes } from '../../../../common/src/der';
import type { CustodyKey, CustodyKeyHandle, KeyCustody } from '../domain/key-custody';
import type { WrappedKey } from '../domain/ports';
import { BatonError } from '../ground/errors';
import type { Signer } from '../ground/signer';
import { OID } from '../pki/oids';
import type { Pkcs11Uri } from './pkcs11-uri';

/**
 * The PKCS#11 key custody (issue 18; CONTRACT "CA custody and rotation"): the root, signing CA and
 * JWT-SVID keys are EC P-256 keys generated in the token (C_GenerateKeyPair, CKM_EC_KEY_PAIR_GEN),
 * CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE and not CKA_EXTRACTABLE (PKCS#11 v2.40 §4.9): they never
 * leave it. The database records a reference: `alg` `pkcs11`, `kekId` the token's identity,
 * `blob` the key's CKA_ID; CKA_LABEL is the CA id or the kid, for operators.
 *
 * One session per process, opened and logged in (C_Login, CKU_USER) once, and kept for every
 * signature: a login per certificate would cost more than the signature and would count against
 * the token's session limits. pkcs11js calls are synchronous, as the Signer port is, and Node runs
 * one at a time, so C_SignInit/C_Sign pairs never interleave on the session.
 *
 * A token that fails (CKR_SESSION_HANDLE_INVALID, CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED,
 * CKR_USER_NOT_LOGGED_IN, CKR_OBJECT_HANDLE_INVALID after a token came back, any module error)
 * makes that signature throw ERR_CA_UNAVAILABLE (503 with Retry-After): the caller has written
 * nothing yet (certificates are recorded after they are signed, in the transaction that spends a
 * join token). The module is then finalized and, on a later signature, initialized, the token
 * found, a session opened and logged in again, the keys found again by CKA_ID: after an immediate
 * retry, at most once per backoff period (250 ms doubling to 30 s), so a dead token is not
 * hammered. A login is never tried when the token says one more wrong PIN would lock it
 * (CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED: PKCS#11 v2.40, the CK_TOKEN_INFO flags).
 */

/**
 * DER of the P-256 OID (1.2.840.10045.3.1.7): CKA_EC_PARAMS as namedCurve (PKCS#11 Current
 * Mechanisms v2.40 §2.3.3).
 */
const P256_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
/** SubjectPublicKeyInfo prefix of an uncompressed P-256 point (RFC 5480 §2). */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 30_000;

/** The CK_RV name pkcs11js gives a failed call (`CKR_PIN_INCORRECT`), if it is one. */
const pkcs11Code = (e: unknown): string | undefined =>
  e instanceof Error && /^CKR_[A-Z_]+$/.test(e.message) ? e.message : undefined;

const isPkcs11Error = (e: unknown): boolean => e instanceof P.Pkcs11Error || e instanceof P.NativeError;

/**
 * The pkcs11js binding, loaded by the first custody made: its native addon is compiled at install
 * (node-gyp), and a Baton without --kms must run where it is not (an image built without it), so
 * nothing loads it at start.
 */
let P: typeof import('pkcs11js');
function loadBinding(): void {
  try {
    P ??= require('pkcs11js') as typeof import('pkcs11js');
  } catch (e) {
    throw new BatonError(
      'ERR_CA_UNAVAILABLE',
      `the PKCS#11 binding (pkcs11js) is not built here: ${(e as Error).message.split('\n')[0]} (npm rebuild pkcs11js)`,
    );
  }
}

interface KeyRef {
  /** CKA_ID. */
  id: Buffer;
  label: string;
  /** The private key object's handle in the current session epoch. */
  handle: Handle | null;
  epoch: number;
}

interface Session {
  handle: Handle;
  slot: Handle;
  epoch: number;
}

export interface Pkcs11CustodyOptions {
  /** Monotonic milliseconds, for the backoff; default performance.now(). */
  monotonicMs?: () => number;
}

export class Pkcs11Custody implements KeyCustody {
  readonly kind = 'pkcs11' as const;
  /** The token's identity as recorded in `key_kek_id`: `pkcs11:token=…;serial=…` (RFC 7512 form). */
  readonly id: string;
  readonly #lib: InstanceType<typeof import('pkcs11js').PKCS11>;
  readonly #uri: Pkcs11Uri;
  readonly #now: () => number;
  #initialized = false;
  #session: Session | null = null;
  #epoch = 0;
  #failures = 0;
  #retryAt = 0;
  #lastError = '';

  /** Loads the module and opens the session: throws ERR_CA_UNAVAILABLE when it cannot (at start). */
  constructor(uri: Pkcs11Uri, opts: Pkcs11CustodyOptions = {}) {
    this.#uri = uri;
    this.#now = opts.monotonicMs ?? (() => performance.now());
    loadBinding();
    this.#lib = new P.PKCS11();
    try {
      this.#lib.load(uri.modulePath);
    } catch (e) {
      throw new BatonError(
        'ERR_CA_UNAVAILABLE',
        `cannot load the PKCS#11 module ${uri.modulePath}: ${(e as Error).message}`,
      );
    }
    let session: Session;
    try {
      session = this.#open();
    } catch (e) {
      this.#drop();
      if (e instanceof BatonError) throw e;
      throw new BatonError(
        'ERR_CA_UNAVAILABLE',
        `the PKCS#11 token is unavailable (${pkcs11Code(e) ?? (e as Error).message})`,
        {
          cause: e,
        },
      );
    }
    const info = this.#lib.C_GetTokenInfo(this.#lib.C_GetSessionInfo(session.handle).slotID);
    this.id = `pkcs11:token=${encodeURIComponent(info.label.trimEnd())};serial=${encodeURIComponent(info.serialNumber.trimEnd())}`;
  }

  generate(): CustodyKey {
    const id = randomBytes(20);
    const label = 'baton-new';
    const { privateKey, publicKey } = this.#call((s) => {
      const keys = this.#lib.C_GenerateKeyPair(
        s,
        { mechanism: P.CKM_EC_KEY_PAIR_GEN },
        [
          { type: P.CKA_TOKEN, value: true },
          { type: P.CKA_PRIVATE, value: false },
          { type: P.CKA_VERIFY, value: true },
          { type: P.CKA_ENCRYPT, value: false },
          { type: P.CKA_WRAP, value: false },
          { type: P.CKA_EC_PARAMS, value: P256_PARAMS },
          { type: P.CKA_ID, value: id },
          { type: P.CKA_LABEL, value: label },
        ],
        [
          { type: P.CKA_TOKEN, value: true },
          { type: P.CKA_PRIVATE, value: true },
          { type: P.CKA_SENSITIVE, value: true },
          { type: P.CKA_EXTRACTABLE, value: false },
          { type: P.CKA_SIGN, value: true },
          // Signing only: no decryption, unwrapping or derivation with a CA key (least privilege).
          { type: P.CKA_DECRYPT, value: false },
          { type: P.CKA_UNWRAP, value: false },
          { type: P.CKA_DERIVE, value: false },
          { type: P.CKA_ID, value: id },
          { type: P.CKA_LABEL, value: label },
        ],
      );
      // A token may ignore a template attribute it does not support; this one must not have.
      const [sensitive, extractable] = this.#lib.C_GetAttributeValue(s, keys.privateKey, [
        { type: P.CKA_SENSITIVE },
        { type: P.CKA_EXTRACTABLE },
      ]);
      if (!isTrue(sensitive?.value) || isTrue(extractable?.value)) {
        this.#lib.C_DestroyObject(s, keys.privateKey);
        this.#lib.C_DestroyObject(s, keys.publicKey);
        throw new BatonError(
          'ERR_CA_UNAVAILABLE',
          'the token made a key that is not sensitive or is extractable',
        );
      }
      return keys;
    });
    const point = this.#call((s) => this.#lib.C_GetAttributeValue(s, publicKey, [{ type: P.CKA_EC_POINT }]));
    const ref: KeyRef = { id, label, handle: privateKey, epoch: this.#session!.epoch };
    return {
      ...this.#handle(ref, spkiFromEcPoint(point[0]?.value)),
      store: (name) => {
        // CKA_LABEL is modifiable (PKCS#11 v2.40 §4.4): the CA id or kid, for `pkcs11-tool --list-objects`.
        // Found again by CKA_ID: the session may have been opened anew since the key was made.
        this.#call((s) => {
          for (const cls of [P.CKO_PRIVATE_KEY, P.CKO_PUBLIC_KEY]) {
            const o = this.#find(s, cls, id);
            if (o === null)
              throw new BatonError('ERR_CA_UNAVAILABLE', `the new key ${name} is gone from the token`);
            this.#lib.C_SetAttributeValue(s, o, [{ type: P.CKA_LABEL, value: name }]);
          }
        });
        ref.label = name;
        return { alg: 'pkcs11', kekId: this.id, blob: Buffer.from(id) };
      },
    };
  }

  load(stored: WrappedKey, name: string): CustodyKeyHandle {
    if (stored.alg !== 'pkcs11')
      throw new BatonError(
        'ERR_KEK_INVALID',
        `the key of ${name} is wrapped under a key-encryption key, not kept in a PKCS#11 token: start without --kms`,
      );
    const ref: KeyRef = { id: Buffer.from(stored.blob), label: name, handle: null, epoch: -1 };
    const publicHandle = this.#call((s) => this.#find(s, P.CKO_PUBLIC_KEY, ref.id));
    if (publicHandle === null)
      throw new BatonError(
        'ERR_CA_UNAVAILABLE',
        `the public key of ${name} (recorded in ${stored.kekId}) is not in the token ${this.id}`,
      );
    const point = this.#call((s) =>
      this.#lib.C_GetAttributeValue(s, publicHandle, [{ type: P.CKA_EC_POINT }]),
    );
    const handle = this.#handle(ref, spkiFromEcPoint(point[0]?.value));
    // Found now, so that a missing private key stops the start rather than the first request.
    this.#call((s) => this.#privateHandle(s, ref));
    return handle;
  }

  #handle(ref: KeyRef, spki: Buffer): CustodyKeyHandle {
    const rawSign = (data: Uint8Array): Buffer => {
      const digest = createHash('sha256').update(data).digest();
      // CKM_ECDSA over the SHA-256 digest (PKCS#11 Current Mechanisms v2.40 §2.3.6): the
      // signature is r || s.
      return this.#call((s) => {
        this.#lib.C_SignInit(s, { mechanism: P.CKM_ECDSA }, this.#privateHandle(s, ref));
        return Buffer.from(this.#lib.C_Sign(s, digest, Buffer.alloc(64)));
      });
    };
    const signer: Signer = {
      algorithmIdentifier: seq(oid(OID.ecdsaWithSHA256)),
      available: () => this.available(),
      // X.509, CRLs and OCSP want the DER ECDSA-Sig-Value (RFC 5758 §3.2, RFC 3279 §2.2.3).
      sign: (data) => derSignature(rawSign(data)),
    };
    return {
      publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }),
      signer,
      signJws: rawSign,
    };
  }

  #privateHandle(s: Handle, ref: KeyRef): Handle {
    if (ref.handle !== null && ref.epoch === this.#epoch) return ref.handle;
    const h = this.#find(s, P.CKO_PRIVATE_KEY, ref.id);
    if (h === null)
      throw new BatonError(
        'ERR_CA_UNAVAILABLE',
        `the private key of ${ref.label} is not in the token ${this.id}`,
      );
    ref.handle = h;
    ref.epoch = this.#epoch;
    return h;
  }

  #find(s: Handle, cls: number, id: Buffer): Handle | null {
    this.#lib.C_FindObjectsInit(s, [
      { type: P.CKA_CLASS, value: cls },
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_ID, value: id },
    ]);
    try {
      return this.#lib.C_FindObjects(s, 1)[0] ?? null;
    } finally {
      this.#lib.C_FindObjectsFinal(s);
    }
  }

  /**
   * Runs `fn` on the session. A PKCS#11 failure drops the session and the module, and `fn` is tried
   * once more on a fresh one unless the backoff says to wait; a failure then is ERR_CA_UNAVAILABLE.
   */
  #call<T>(fn: (session: Handle) => T): T {
    for (let attempt = 0; ; attempt++) {
      const session = this.#ensure();
      try {
        const out = fn(session.handle);
        this.#failures = 0;
        return out;
      } catch (e) {
        if (!isPkcs11Error(e)) throw e;
        this.#drop();
        this.#lastError = pkcs11Code(e) ?? 'module error';
        if (attempt > 0 || this.#now() < this.#retryAt) throw this.#unavailable(e);
      }
    }
  }

  #ensure(): Session {
    if (this.#session) return this.#session;
    if (this.#now() < this.#retryAt) throw this.#unavailable();
    try {
      return this.#open();
    } catch (e) {
      this.#drop();
      this.#failures++;
      this.#retryAt = this.#now() + Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.#failures - 1));
      this.#lastError = e instanceof BatonError ? e.message : (pkcs11Code(e) ?? 'module error');
      throw this.#unavailable(e);
    }
  }

  /** C_Initialize, the token the URI selects, a read-write session, C_Login. */
  #open(): Session {
    const lib = this.#lib;
    if (!this.#initialized) {
      try {
        lib.C_Initialize();
      } catch (e) {
        if (pkcs11Code(e) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw e;
      }
      this.#initialized = true;
    }
    const slot = this.#selectSlot();
    const info = lib.C_GetTokenInfo(slot);
    if (info.flags & (P.CKF_USER_PIN_LOCKED | P.CKF_USER_PIN_FINAL_TRY))
      throw new BatonError(
        'ERR_CA_UNAVAILABLE',
        'the token says one more wrong PIN would lock it (or it is locked): not logging in; check the PIN source',
      );
    const handle = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
    try {
      lib.C_Login(handle, P.CKU_USER, this.#uri.pin());
    } catch (e) {
      if (pkcs11Code(e) !== 'CKR_USER_ALREADY_LOGGED_IN') {
        if (pkcs11Code(e) === 'CKR_PIN_INCORRECT')
          throw new BatonError('ERR_CA_UNAVAILABLE', `the token refused the PIN (${this.#uri.pinOrigin})`);
        throw e;
      }
    }
    this.#epoch++;
    this.#session = { handle, slot, epoch: this.#epoch };
    return this.#session;
  }

  #selectSlot(): Handle {
    const lib = this.#lib;
    const sel = this.#uri.selector;
    const libInfo = lib.C_GetInfo();
    const same = (want: string | undefined, have: string) => want === undefined || want === have.trimEnd();
    if (
      !same(sel.libraryManufacturer, libInfo.manufacturerID) ||
      !same(sel.libraryDescription, libInfo.libraryDescription)
    )
      throw new BatonError('ERR_CA_UNAVAILABLE', `the module is not the one ${this.#uri} names`);
    const matches = lib.C_GetSlotList(true).filter((slot) => {
      if (sel.slotId !== undefined && slot.readUIntLE(0, Math.min(6, slot.length)) !== sel.slotId)
        return false;
      const s = lib.C_GetSlotInfo(slot);
      const t = lib.C_GetTokenInfo(slot);
      return (
        same(sel.slotDescription, s.slotDescription) &&
        same(sel.slotManufacturer, s.manufacturerID) &&
        same(sel.token, t.label) &&
        same(sel.manufacturer, t.manufacturerID) &&
        same(sel.serial, t.serialNumber) &&
        same(sel.model, t.model)
      );
    });
    if (matches.length === 0)
      throw new BatonError('ERR_CA_UNAVAILABLE', `no token present matches ${this.#uri}`);
    if (matches.length > 1)
      throw new BatonError(
        'ERR_CA_UNAVAILABLE',
        `${matches.length} tokens match ${this.#uri}: add serial=… to the URI`,
      );
    return matches[0]!;
  }

  /** Closes the session and finalizes the module, ignoring their errors: the next call starts anew. */
  #drop(): void {
    const session = this.#session;
    this.#session = null;
    if (session) {
      try {
        this.#lib.C_CloseSession(session.handle);
      } catch {
        // the session is gone already
      }
    }
    if (this.#initialized) {
      try {
        this.#lib.C_Finalize();
      } catch {
        // a module in trouble; C_Initialize is tried again on the next open
      }
      this.#initialized = false;
    }
  }

  #unavailable(cause?: unknown): BatonError {
    return new BatonError(
      'ERR_CA_UNAVAILABLE',
      `the PKCS#11 token is unavailable (${this.#lastError || 'not open'}): retry later`,
      { cause },
    );
  }

  /**
   * Whether the token answers now: C_GetTokenInfo on the open session's slot (a session may outlive
   * its token: SoftHSM keeps it after the token is gone), or, when there is none and
   * the backoff allows, opening it again (so a replica taken out of rotation by /readyz comes back
   * without a signing request). Never throws.
   */
  available(): boolean {
    try {
      this.#call(() => this.#lib.C_GetTokenInfo(this.#session!.slot));
      return true;
    } catch {
      return false;
    }
  }

  /** Logs out and finalizes the module (process exit, tests). */
  close(): void {
    this.#drop();
  }
}

const isTrue = (v: unknown): boolean => Buffer.isBuffer(v) && v.length > 0 && v[0] !== 0;

/**
 * CKA_EC_POINT is the DER OCTET STRING of the X9.62 point (PKCS#11 Current Mechanisms v2.40
 * §2.3.3); some modules give the bare point. Either way an uncompressed P-256 point
 * (0x04 || X || Y), in a SubjectPublicKeyInfo.
 */
export function spkiFromEcPoint(value: unknown): Buffer {
  if (!Buffer.isBuffer(value)) throw new BatonError('ERR_CA_UNAVAILABLE', 'the token returned no EC point');
  let point = value;
  if (point.length === 67 && point[0] === 0x04 && point[1] === 0x41) point = point.subarray(2);
  if (point.length !== 65 || point[0] !== 0x04)
    throw new BatonError(
      'ERR_CA_UNAVAILABLE',
      'the token returned an EC point that is not uncompressed P-256',
    );
  return Buffer.concat([P256_SPKI_PREFIX, point]);
}

/** r || s (32 bytes each) → ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3). */
export function derSignature(raw: Buffer): Buffer {
  if (raw.length !== 64)
    throw new BatonError('ERR_CA_UNAVAILABLE', 'the token returned a malformed ECDSA signature');
  return seq(uintBytes(raw.subarray(0, 32)), uintBytes(raw.subarray(32)));
}
