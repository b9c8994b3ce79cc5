import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { BatonError } from '../ground/errors';
import { MAX_JWT_TTL_MS } from '../ground/ttl';
import { spkiOf } from '../pki/keys';
import { auditEvent, SYSTEM_ACTOR } from './audit';
import type { Clock } from './clock';
import { custodyOf, type KeyCustodySource } from './key-custody';
import type { CaRecord, CrossCertificateRecord, JwtKeyRecord, Storage } from './ports';

/**
 * JWT-SVID signing keys (issue 16; CONTRACT "JWT-SVIDs"). Each signing intermediate has one ES256
 * key (P-256), made with it (`baton ca init`, `baton ca rotate`) and retired when the next one takes
 * over. The private key is kept like a CA key (domain/key-custody.ts): PKCS#8 wrapped under the KEK
 * (AES-256-GCM), the kid as additional data so a wrapped key cannot be moved to another row
 * unnoticed; or, with `--kms`, made and kept in the PKCS#11 token, labelled with its kid.
 *
 * Publication (the JWKS, SPIFFE Trust Domain and Bundle §4): the current key and every retired key
 * until the last token it may have signed has expired: a token lives at most MAX_JWT_TTL_MS, and
 * JWT_KEY_GRACE_MS more cover a replica that signed with the key until its next keyring reload
 * (BATON_BACKGROUND_INTERVAL) and clocks that differ between the rotating host and the replicas.
 */

/** How long past MAX_JWT_TTL_MS a retired key stays published (see above). */
export const JWT_KEY_GRACE_MS = 5 * 60_000;

/** The key that signs new JWT-SVIDs on this replica. */
export interface JwtSigningKey {
  kid: string;
  caId: string;
  /** ES256 over the JWS signing input: r || s (RFC 7518 §3.4), wherever the key is kept. */
  signJws(data: Uint8Array): Buffer;
  publicKey: KeyObject;
  /** In memory only when the key is KEK-wrapped (never with --kms). */
  privateKey?: KeyObject;
  /** the signing CA's notAfter: no token outlives it */
  notAfter: Date;
}

/** A key as the JWKS publishes it (never the private part). */
export interface JwtPublishedKey {
  kid: string;
  /** SubjectPublicKeyInfo DER. */
  spki: Buffer;
  retiredAt: Date | null;
}

export interface JwtKeyring {
  /** The key of the active signing CA; null when it has none or it cannot sign on this replica. */
  active: JwtSigningKey | null;
  /** Every key ever made, retired ones included, oldest first: `publishedJwtKeys` picks those to publish. */
  keys: JwtPublishedKey[];
}

/** The public members of a P-256 key as a JWK (RFC 7518 §6.2.1). */
export interface EcPublicJwk {
  kty: 'EC';
  crv: 'P-256';
  x: string;
  y: string;
}

/** The public JWK of a P-256 SubjectPublicKeyInfo: exactly kty, crv, x, y (no `d`, ever). */
export function jwtPublicJwk(spki: Buffer): EcPublicJwk {
  const jwk = createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || !jwk.x || !jwk.y)
    throw new BatonError('ERR_CA_UNAVAILABLE', 'a JWT signing key is not an EC P-256 key');
  return { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y };
}

/**
 * RFC 7638 §3: the base64url SHA-256 of the JSON of the required members in lexicographic order,
 * no whitespace; for an EC key `{"crv","kty","x","y"}` (§3.2).
 */
export function jwkThumbprint(jwk: EcPublicJwk): string {
  const json = `{"crv":${JSON.stringify(jwk.crv)},"kty":${JSON.stringify(jwk.kty)},"x":${JSON.stringify(jwk.x)},"y":${JSON.stringify(jwk.y)}}`;
  return createHash('sha256').update(json, 'utf8').digest('base64url');
}

/**
 * A new signing key for the signing intermediate `caId`, made by the custody (`kek`: the KEK or the
 * custody that stands in for it): its record (wrapped, or a token reference) and its private key
 * when it is in memory (KEK custody only).
 */
export function createJwtKey(p: { kek: KeyCustodySource; caId: string; now: Date }): {
  record: JwtKeyRecord;
  privateKey?: KeyObject;
} {
  const key = custodyOf(p.kek).generate();
  const spki = spkiOf(key.publicKey);
  const kid = jwkThumbprint(jwtPublicJwk(spki));
  return {
    record: {
      kid,
      caId: p.caId,
      spki,
      wrappedKey: key.store(kid),
      createdAt: p.now,
      retiredAt: null,
    },
    ...(key.privateKey ? { privateKey: key.privateKey } : {}),
  };
}

/**
 * The JWT part of the keyring: every key for publication, and the signing CA's unretired key
 * loaded from its custody (ERR_KEK_INVALID on a wrong KEK or tampered blob, as for the CA keys).
 */
export function loadJwtKeyring(
  records: readonly JwtKeyRecord[],
  kek: KeyCustodySource,
  signingCa: CaRecord,
): JwtKeyring {
  const keys = [...records]
    .sort(
      (a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0),
    )
    .map((r) => ({ kid: r.kid, spki: Buffer.from(r.spki), retiredAt: r.retiredAt }));
  const current = records.find((r) => r.caId === signingCa.id && r.retiredAt === null);
  if (!current) return { active: null, keys };
  const key = custodyOf(kek).load(current.wrappedKey, current.kid);
  // The row's public key and kid must be this private key's: tokens it signs must verify against
  // what the JWKS publishes.
  const spki = spkiOf(key.publicKey);
  if (!spki.equals(current.spki) || jwkThumbprint(jwtPublicJwk(spki)) !== current.kid)
    throw new BatonError(
      'ERR_CA_UNAVAILABLE',
      `the JWT signing key ${current.kid} does not match its recorded public key`,
    );
  return {
    active: {
      kid: current.kid,
      caId: current.caId,
      signJws: key.signJws,
      publicKey: key.publicKey,
      ...(key.privateKey ? { privateKey: key.privateKey } : {}),
      notAfter: signingCa.notAfter,
    },
    keys,
  };
}

/** When a key retired at `retiredAt` leaves the JWKS. */
export const jwtKeyLeavesAt = (retiredAt: Date): Date =>
  new Date(retiredAt.getTime() + MAX_JWT_TTL_MS + JWT_KEY_GRACE_MS);

const published = (k: Pick<JwtKeyRecord, 'retiredAt'>, now: Date): boolean =>
  k.retiredAt === null || jwtKeyLeavesAt(k.retiredAt).getTime() > now.getTime();

/** The keys the JWKS holds at `now`: every unretired key, and retired ones until they leave. */
export function publishedJwtKeys(jwt: JwtKeyring, now: Date): JwtPublishedKey[] {
  return jwt.keys.filter((k) => published(k, now));
}

/**
 * `spiffe_sequence`: grows on every change of the published set and never goes back. A root or a
 * key enters the set once and a key leaves it once (rows are never deleted, and nothing comes back):
 * roots + keys ever made + keys that have left.
 */
export function jwksSequence(
  roots: number,
  records: readonly Pick<JwtKeyRecord, 'retiredAt'>[],
  now: Date,
): number {
  return roots + records.length + records.filter((k) => !published(k, now)).length;
}

/** The CA set and JWT keys as one replica read them, in an order that keeps them consistent. */
export interface KeyState {
  cas: CaRecord[];
  jwtKeys: JwtKeyRecord[];
  /** Cross-certificates of the CAs (a root rotation's), read after them. */
  cross: CrossCertificateRecord[];
}

/**
 * Keys before CAs: a rotation commits its CA and its key together, so a key read here has its CA
 * in the CA read that follows (each statement sees every commit made before it started).
 */
export async function readKeyState(storage: Pick<Storage, 'cas' | 'jwtKeys'>): Promise<KeyState> {
  const jwtKeys = await storage.jwtKeys.list();
  const cas = await storage.cas.listCas();
  // After the CAs: a rotation commits a CA with its cross-certificate, so each one read has its CA.
  const cross = await storage.cas.listCrossCertificates();
  return { cas, jwtKeys, cross };
}

const activeSigningCa = (cas: readonly CaRecord[]): CaRecord | undefined =>
  cas.find((c) => c.kind === 'intermediate' && c.active);

/** The CA set changed under a key being added: that key is not wanted any more. */
class SigningCaChanged extends Error {}

/**
 * Makes sure the active signing CA has a JWT key (an installation initialized before JWT-SVIDs has
 * none), and returns the state read after. Replicas may run it at once: one insert wins (the CA's
 * key is unique), the others get ERR_CONFLICT and read the winner's. The new key retires every
 * other one, unless a rotation committed meanwhile (then it is not added: the rotation made its own).
 */
export async function ensureJwtKey(deps: {
  storage: Storage;
  kek: KeyCustodySource;
  clock: Clock;
}): Promise<KeyState> {
  const state = await readKeyState(deps.storage);
  const signing = activeSigningCa(state.cas);
  if (!signing || state.jwtKeys.some((k) => k.caId === signing.id)) return state;
  // A key wrapped under another KEK than the CA's (or kept in another custody) would not load on
  // the replicas that can sign.
  const custody = custodyOf(deps.kek);
  if (signing.wrappedKey.kekId !== custody.id) return state;
  const now = deps.clock.now();
  const { record } = createJwtKey({ kek: custody, caId: signing.id, now });
  try {
    await deps.storage.transaction(async (tx) => {
      await tx.jwtKeys.insert(record);
      // After the insert, so that a rotation committing at any point is either seen here (and
      // this key rolled back) or retires this key itself once this commits.
      if (activeSigningCa(await tx.cas.listCas())?.id !== signing.id) throw new SigningCaChanged();
      await tx.jwtKeys.retireOthers(record.kid, now);
      await tx.audit.append(
        auditEvent(SYSTEM_ACTOR, now, 'jwt.key_created', record.kid, 'success', { ca: signing.id }),
      );
    });
  } catch (e) {
    const lost = e instanceof SigningCaChanged || (e instanceof BatonError && e.code === 'ERR_CONFLICT');
    if (!lost) throw e;
  }
  return readKeyState(deps.storage);
}
