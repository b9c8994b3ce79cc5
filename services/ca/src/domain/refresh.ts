/**
 * When a holder should renew: about half-life (SPIRE rotationutil), with ±5% of the lifetime of
 * jitter so that a fleet issued at once does not renew at once. `random` is injected (tests).
 */
export function refreshAt(issuedAt: Date, notAfter: Date, random: () => number): Date {
  const start = issuedAt.getTime();
  const life = notAfter.getTime() - start;
  return new Date(start + Math.round(life * (0.5 + (random() - 0.5) * 0.1)));
}
