/**
 * Oracles for the fuzz suite: whether a generated body is a valid request, restated from the
 * contract rather than imported from the server, so that the two are checked against each other.
 * The hostile generators draw field names and values such as "manager" from the routes' own
 * vocabulary, so now and then they write a valid request. A route whose valid request needs no
 * secret (a CSR, a token, an existing node) must say which bodies are valid; the others cannot be
 * satisfied by chance.
 */

/** The JSON body limit of the contract's abuse controls: a larger body is a 413 whatever it says. */
const BODY_LIMIT_BYTES = 64 * 1024;
const MINUTE_S = 60;
const DAY_S = 86_400;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** The body as the server sees it: JSON.parse, where the last of duplicate keys wins. */
function parsed(text: string): Record<string, unknown> | undefined {
  if (Buffer.byteLength(text, 'utf8') > BODY_LIMIT_BYTES) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  return v !== null && typeof v === 'object' && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

/** Own fields only: an inherited name (`toString`) is not a field the client sent. */
const field = (b: Record<string, unknown>, name: string): unknown =>
  Object.hasOwn(b, name) ? b[name] : undefined;

const absent = (v: unknown): boolean => v === undefined || v === null;

/** A duration as docs/configuration.md words it: `90s`, `1h30m`, `7d`, or a whole number of seconds. */
function durationSeconds(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  if (typeof v !== 'string' || v.length > 32) return undefined;
  const s = v.trim();
  if (!/^(\d+(ms|s|m|h|d))+$/.test(s)) return undefined;
  let ms = 0;
  for (const [, n, unit] of s.matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(n) * UNIT_MS[unit!]!;
  return Number.isSafeInteger(ms) ? ms / 1000 : undefined;
}

const durationWithin = (v: unknown, min: number, max: number): boolean => {
  if (absent(v)) return true;
  const s = durationSeconds(v);
  return s !== undefined && s >= min && s <= max;
};

/**
 * POST /v1/admin/tokens (CONTRACT "Join tokens"): a role of worker or manager; optional ttl from
 * 1m to 30d, uses from 1 to 10,000, node_name a lowercase DNS-style label that binds a one-use
 * token, node_ttl from 1m to the node maximum (30d). Other keys are ignored.
 */
export function isValidTokenRequest(text: string): boolean {
  const b = parsed(text);
  if (!b) return false;
  const role = field(b, 'role');
  const uses = field(b, 'uses');
  const nodeName = field(b, 'node_name');
  if (role !== 'worker' && role !== 'manager') return false;
  if (!durationWithin(field(b, 'ttl'), MINUTE_S, 30 * DAY_S)) return false;
  if (!durationWithin(field(b, 'node_ttl'), MINUTE_S, 30 * DAY_S)) return false;
  if (!absent(uses) && !(Number.isInteger(uses) && (uses as number) >= 1 && (uses as number) <= 10_000))
    return false;
  if (absent(nodeName)) return true;
  return (
    typeof nodeName === 'string' &&
    /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/.test(nodeName) &&
    (absent(uses) || uses === 1)
  );
}
