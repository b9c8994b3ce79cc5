/**
 * When to renew a certificate and how long to wait after a failure. Pure functions: the time and
 * the random source are inputs, so the rotator can be driven by a fake clock and a fixed random in
 * tests, and the same inputs always give the same schedule.
 *
 * The schedule follows SPIRE's pkg/common/rotationutil: renew once half the lifetime has passed
 * (ShouldRotateX509: `ttl <= lifetime/2`), which leaves the other half for retries while the current
 * certificate still works, and treat a certificate at or past notAfter as expired (X509Expired:
 * `!now.Before(NotAfter)`). Unlike SPIRE, the half-life point is jittered so that nodes attested
 * together (a cluster brought up at once) do not all renew in the same second.
 */

export interface CertValidity {
  notBefore: Date;
  notAfter: Date;
  /** The server's `refresh_at` from the issuance response, when it sent one. */
  refreshAt?: Date;
}

/** `expired` means renewal over mTLS is no longer possible: the caller must re-attest with a new token. */
export type RotationState = 'valid' | 'due' | 'expired';

/** Jitter is ±10% of the lifetime around the half-life point (STYLE §9). */
export const JITTER_FRACTION = 0.1;

/** The smallest safety margin, for certificates long enough to afford it (CONTRACT: TTL ≥ 1m). */
export const MIN_SAFETY_MARGIN_MS = 60_000;

/**
 * How long before notAfter a refresh must have started at the latest: 10% of the lifetime and at
 * least a minute, so that a late `refresh_at` still leaves room for a few backoff retries. It is
 * capped at a quarter of the lifetime, so that the latest refresh is never earlier than three
 * quarters of it: the lifetime counts the minute of backdating (notBefore), and with the shortest
 * lifetime the contract allows (1m, so 2m from notBefore) a cap at half would put the latest
 * refresh at the moment of issue, and the agent would renew without pause.
 */
export function safetyMarginMs(lifetimeMs: number): number {
  return Math.min(lifetimeMs / 4, Math.max(lifetimeMs * 0.1, MIN_SAFETY_MARGIN_MS));
}

/**
 * The moment to start renewing `cert`.
 *
 * - With a server `refresh_at`: that moment. The server already chose it near half-life with its
 *   own jitter (CONTRACT "HTTP API": "the agent follows it"), so no second jitter is added and
 *   `random` is not called.
 * - Without one: notBefore + lifetime/2 ± 10% of the lifetime, from `random()` in [0, 1)
 *   (0 gives 40% of the lifetime, 0.5 gives exactly half, values near 1 give 60%).
 *
 * Either way the result is clamped to [notBefore, notAfter − safetyMarginMs(lifetime)].
 */
export function nextRefreshAt(cert: CertValidity, random: () => number): Date {
  const notBefore = timeOf(cert.notBefore);
  const notAfter = timeOf(cert.notAfter);
  const lifetime = Math.max(0, notAfter - notBefore);
  const latest = notAfter - safetyMarginMs(lifetime);
  const serverTarget = cert.refreshAt?.getTime();
  const target =
    serverTarget !== undefined && Number.isFinite(serverTarget)
      ? serverTarget
      : notBefore + lifetime / 2 + (2 * unit(random()) - 1) * JITTER_FRACTION * lifetime;
  return new Date(Math.round(Math.min(Math.max(target, notBefore), Math.max(latest, notBefore))));
}

/**
 * `expired` at or after notAfter, `due` from nextRefreshAt on, `valid` before. A certificate whose
 * notBefore is still in the future (clock skew) is `valid`: it is fresh, not due.
 *
 * `random` is called once per evaluation; a rotator that polls should compute nextRefreshAt once
 * per certificate and keep it, or its target moves between polls.
 */
export function rotationState(now: Date, cert: CertValidity, random: () => number): RotationState {
  const t = timeOf(now);
  if (t >= timeOf(cert.notAfter)) return 'expired';
  return t >= nextRefreshAt(cert, random).getTime() ? 'due' : 'valid';
}

/** True when the certificate should be renewed now (due) or replaced by re-attestation (expired). */
export function shouldRotate(now: Date, cert: CertValidity, random: () => number): boolean {
  return rotationState(now, cert, random) !== 'valid';
}

export interface BackoffOptions {
  /** The cap of the first retry's delay. Default 1 s. */
  baseMs?: number;
  /** The largest delay ever returned. Default 5 minutes. */
  maxMs?: number;
}

/**
 * Delay before retry number `attempt` (0 for the first retry): exponential backoff with "full
 * jitter", a uniform delay in [0, min(maxMs, baseMs·2^attempt)). Full jitter spreads the retries of
 * many agents after a server outage better than equal or no jitter (AWS Architecture Blog,
 * "Exponential Backoff And Jitter", 2015), so a restarted CA is not hit by every node at once.
 */
export function backoffDelay(attempt: number, random: () => number, options: BackoffOptions = {}): number {
  const { baseMs = 1000, maxMs = 5 * 60_000 } = options;
  if (!Number.isInteger(attempt) || attempt < 0)
    throw new RangeError('attempt must be a non-negative integer');
  if (!(baseMs > 0) || !(maxMs >= 0)) throw new RangeError('baseMs must be positive and maxMs non-negative');
  // 2 ** attempt overflows to Infinity for large attempts; min() then yields maxMs.
  const cap = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.floor(unit(random()) * cap);
}

function timeOf(d: Date): number {
  const t = d.getTime();
  if (!Number.isFinite(t)) throw new RangeError('invalid date in certificate validity');
  return t;
}

/** Keeps a misbehaving random source inside [0, 1] so the bounds above always hold. */
function unit(r: number): number {
  return Number.isFinite(r) ? Math.min(Math.max(r, 0), 1) : 0.5;
}
