import { BatonError } from '../ground/errors';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+)(ms|s|m|h|d)/y;

/**
 * Parses `90s`, `15m`, `1h30m`, `7d` into milliseconds. A bare number is refused: a TTL of "24"
 * is ambiguous, and guessing a unit for a certificate lifetime is how outages start.
 */
export function parseDuration(text: string, what = 'duration'): number {
  const s = text.trim();
  if (s === '') throw new BatonError('ERR_CONFIG_INVALID', `${what}: empty duration`);
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < s.length) {
    const start = PART.lastIndex;
    const m = PART.exec(s);
    if (!m || m.index !== start) {
      throw new BatonError(
        'ERR_CONFIG_INVALID',
        `${what}: invalid duration "${text}" (use e.g. 90s, 15m, 24h, 7d)`,
      );
    }
    total += Number(m[1]) * UNITS[m[2]!]!;
  }
  if (!Number.isSafeInteger(total)) throw new BatonError('ERR_CONFIG_INVALID', `${what}: duration too large`);
  return total;
}

export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (ms % size === 0 && ms >= size) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;
