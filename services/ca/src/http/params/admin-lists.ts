import type { Request } from 'express';
import { DEFAULT_PAGE_LIMIT, type ListPageParams, MAX_PAGE_LIMIT } from '../../domain/admin-lists';
import type { ListFilters } from '../../domain/list-cursor';
import {
  type AuditPageFilter,
  type CertificatePageFilter,
  NODE_ROLES,
  type NodePageFilter,
  type NodeStatus,
} from '../../domain/ports';
import { BatonError } from '../../ground/errors';

/**
 * The query of the admin lists (`GET /v1/admin/nodes|certificates|entries|audit`): `limit` and
 * `after` (docs/api.md "Paging"), and each list's filters. Every refusal is a 400 naming the
 * parameter, never echoing it; a parameter given twice is refused (which one would count?).
 */

const bad = (name: string, why: string): BatonError => new BatonError('ERR_BAD_REQUEST', `${name}: ${why}`);

/** Filter values and cursors are short; a longer one is a mistake or an attack, not a query. */
const MAX_QUERY_CHARS = 2048;
const LIMIT = /^[0-9]{1,7}$/;
const NODE_STATUSES: readonly NodeStatus[] = ['active', 'revoked'];
const CERTIFICATE_STATUSES = ['valid', 'revoked', 'expired', 'superseded'] as const;
type CertificateStatusQuery = (typeof CERTIFICATE_STATUSES)[number];

/** One query parameter, given at most once, within MAX_QUERY_CHARS. */
export function queryValue(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw bad(name, 'give it once');
  if (v.length > MAX_QUERY_CHARS) throw bad(name, `at most ${MAX_QUERY_CHARS} characters`);
  return v;
}

function queryOneOf<T extends string>(req: Request, name: string, values: readonly T[]): T | undefined {
  const v = queryValue(req, name);
  if (v !== undefined && !values.includes(v as T)) throw bad(name, `one of ${values.join(', ')}`);
  return v as T | undefined;
}

function queryTime(req: Request, name: string): Date | undefined {
  const v = queryValue(req, name);
  if (v === undefined) return undefined;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw bad(name, 'an ISO 8601 time');
  return d;
}

/** `limit`: digits only (no sign, exponent or fraction), 1 to MAX_PAGE_LIMIT; default DEFAULT_PAGE_LIMIT. */
export function queryLimit(req: Request): number {
  const v = queryValue(req, 'limit');
  if (v === undefined) return DEFAULT_PAGE_LIMIT;
  const n = LIMIT.test(v) ? Number(v) : Number.NaN;
  if (!(n >= 1 && n <= MAX_PAGE_LIMIT)) throw bad('limit', `an integer from 1 to ${MAX_PAGE_LIMIT}`);
  return n;
}

/** `limit` and `after` of one list, with the filters its cursor is bound to. */
function pageParams(req: Request, filters: ListFilters): ListPageParams {
  return { limit: queryLimit(req), after: queryValue(req, 'after'), filters };
}

export interface ListQuery<F> {
  filter: F;
  page: ListPageParams;
}

/** `GET /v1/admin/nodes?status=active|revoked&role=worker|manager`. */
export function readNodeListQuery(req: Request): ListQuery<NodePageFilter> {
  const status = queryOneOf(req, 'status', NODE_STATUSES);
  const role = queryOneOf(req, 'role', NODE_ROLES);
  return { filter: { status, role }, page: pageParams(req, { status, role }) };
}

/**
 * `GET /v1/admin/certificates?node=ID&status=valid|revoked|expired|superseded`. `valid` is valid
 * and unexpired at `now`, `expired` valid but past notAfter (what renderCertificate calls expired):
 * the cursor is bound to the word, and each page applies it at its own `now`.
 */
export function readCertificateListQuery(req: Request, now: Date): ListQuery<CertificatePageFilter> {
  const node = queryValue(req, 'node');
  const status: CertificateStatusQuery | undefined = queryOneOf(req, 'status', CERTIFICATE_STATUSES);
  return {
    filter: {
      nodeId: node,
      status: status === 'expired' ? 'valid' : status,
      expiredAt: status === 'expired' ? now : undefined,
      validAt: status === 'valid' ? now : undefined,
    },
    page: pageParams(req, { node, status }),
  };
}

/** `GET /v1/admin/entries`: no filters. */
export function readEntryListQuery(req: Request): ListQuery<Record<string, never>> {
  return { filter: {}, page: pageParams(req, {}) };
}

/** `GET /v1/admin/audit?actor=&subject=&event=&since=&until=` (exact matches; since inclusive, until exclusive). */
export function readAuditListQuery(req: Request): ListQuery<AuditPageFilter> {
  const filter: AuditPageFilter = {
    actor: queryValue(req, 'actor'),
    subject: queryValue(req, 'subject'),
    event: queryValue(req, 'event'),
    since: queryTime(req, 'since'),
    until: queryTime(req, 'until'),
  };
  return {
    filter,
    page: pageParams(req, {
      actor: filter.actor,
      subject: filter.subject,
      event: filter.event,
      since: filter.since?.toISOString(),
      until: filter.until?.toISOString(),
    }),
  };
}
