import { MAX_TTL, MIN_TTL_MS } from '../ground/ttl';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import { validateDnsName } from './dns-name';
import { BatonError, isBatonError } from '../ground/errors';
import type { EntryRecord, Repositories, Selector } from './ports';
import { validateWorkloadSpiffeId } from './spiffe-id';

export const ENTRY_NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
const MAX_DNS_NAMES = 32;
const MAX_SELECTORS = 16;

export interface CreateEntryParams {
  name: unknown;
  spiffeId: unknown;
  parentNodeId: unknown;
  selectors?: unknown;
  dnsNames?: unknown;
  allowWildcardDns?: boolean;
  ttlMs?: number | null;
  createdBy: string;
  audit: AuditContext;
}

/** `unix:uid:N` / `unix:gid:N` (SPIRE's unix workload attestor selectors). */
export function parseSelector(text: unknown): Selector {
  const m = typeof text === 'string' ? /^unix:(uid|gid):(0|[1-9][0-9]{0,9})$/.exec(text) : null;
  if (!m || Number(m[2]) > 2 ** 31 - 1) {
    throw new BatonError('ERR_BAD_REQUEST', 'invalid selector: use unix:uid:N or unix:gid:N');
  }
  return { type: 'unix', key: m[1] as 'uid' | 'gid', value: Number(m[2]) };
}

export const formatSelector = (s: Selector): string => `${s.type}:${s.key}:${s.value}`;

function list(v: unknown, field: string, max: number): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.length > max)
    throw new BatonError('ERR_BAD_REQUEST', `${field}: a list of at most ${max}`);
  return v;
}

/** Validates and records a registration entry; the parent node must exist and be active. */
export async function createEntry(
  deps: { clock: Clock; repos: Repositories; trustDomain: string; defaultTtlMs: number },
  p: CreateEntryParams,
): Promise<EntryRecord> {
  if (typeof p.name !== 'string' || !ENTRY_NAME_RE.test(p.name)) {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      'invalid entry name: lowercase letters, digits, ".", "-", "_" (at most 63)',
    );
  }
  // A missing parent is a malformed request (400), not a node that does not exist (404).
  if (typeof p.parentNodeId !== 'string' || p.parentNodeId === '')
    throw new BatonError(
      'ERR_BAD_REQUEST',
      'parent: the id of the node that may mint this identity is required',
    );
  const allowWildcardDns = p.allowWildcardDns === true;
  const entry: EntryRecord = {
    name: p.name,
    spiffeId: validateWorkloadSpiffeId(p.spiffeId, deps.trustDomain),
    parentNodeId: p.parentNodeId,
    selectors: list(p.selectors, 'selectors', MAX_SELECTORS).map(parseSelector),
    dnsNames: [
      ...new Set(
        list(p.dnsNames, 'dns_names', MAX_DNS_NAMES).map((d) =>
          validateDnsName(d, { allowWildcard: allowWildcardDns }),
        ),
      ),
    ],
    allowWildcardDns,
    ttlMs: p.ttlMs ?? null,
    createdBy: p.createdBy,
    createdAt: deps.clock.now(),
  };
  if (entry.ttlMs !== null && (entry.ttlMs < MIN_TTL_MS || entry.ttlMs > MAX_TTL.workload)) {
    throw new BatonError('ERR_BAD_REQUEST', `ttl: must be between 1m and ${MAX_TTL.workload / 86_400_000}d`);
  }
  const parent = await deps.repos.nodes.findById(entry.parentNodeId);
  if (!parent) throw new BatonError('ERR_NOT_FOUND', 'no such parent node');
  if (parent.status !== 'active')
    throw new BatonError('ERR_NODE_REVOKED', 'the parent node has been revoked');
  try {
    await deps.repos.entries.insert(entry);
  } catch (e) {
    if (isBatonError(e, 'ERR_CONFLICT')) {
      throw new BatonError(
        'ERR_CONFLICT',
        'an entry with this name, or this SPIFFE ID under this parent, exists',
      );
    }
    throw e;
  }
  await deps.repos.audit.append(
    auditEvent(p.audit, entry.createdAt, 'entry.created', entry.spiffeId, 'success', {
      name: entry.name,
      parent: entry.parentNodeId,
      dns_names: entry.dnsNames,
    }),
  );
  return entry;
}

/** Deletes an entry; issued SVIDs stay valid until they expire or are revoked. */
export async function deleteEntry(
  deps: { clock: Clock; repos: Repositories },
  p: { name: string; audit: AuditContext },
): Promise<void> {
  const entry = await deps.repos.entries.findByName(p.name);
  if (!entry || !(await deps.repos.entries.delete(p.name)))
    throw new BatonError('ERR_NOT_FOUND', 'no such entry');
  await deps.repos.audit.append(
    auditEvent(p.audit, deps.clock.now(), 'entry.deleted', entry.spiffeId, 'success', { name: entry.name }),
  );
}

/** The lifetime of a workload SVID for this entry: the entry's TTL or the default, within the server maximum. */
export const entryTtlMs = (e: EntryRecord, defaultTtlMs: number): number =>
  Math.min(e.ttlMs ?? defaultTtlMs, MAX_TTL.workload);
