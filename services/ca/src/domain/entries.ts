import { MAX_TTL, MIN_TTL_MS } from '../ground/ttl';
import { type AuditContext, auditEvent } from './audit';
import type { Clock } from './clock';
import type { DnsName } from './dns-name';
import { BatonError, isBatonError } from '../ground/errors';
import type { EntryRecord, Repositories, Selector } from './ports';
import type { WorkloadSpiffeId } from './spiffe-id';

export const ENTRY_NAME_RE = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
export const MAX_DNS_NAMES = 32;
export const MAX_SELECTORS = 16;

declare const checked: unique symbol;
/** An entry name that validateEntryName accepted (a type only: still a string). */
export type EntryName = string & { readonly [checked]: true };

/**
 * A registration entry to create, every value already checked by the validators of the domain
 * (validateEntryName, validateWorkloadSpiffeId, parseSelector, validateDnsName, checkListLength):
 * the branded types say so. The HTTP edge (http/params/entries.ts) reads the body into this.
 */
export interface CreateEntryParams {
  name: EntryName;
  spiffeId: WorkloadSpiffeId;
  /** The id of the node that may mint this identity; it must exist and be active. */
  parentNodeId: string;
  selectors: readonly Selector[];
  /** Checked with `allowWildcard: allowWildcardDns`; duplicates are dropped here. */
  dnsNames: readonly DnsName[];
  allowWildcardDns: boolean;
  ttlMs: number | null;
  /** validateHint's; absent or empty: none. */
  hint?: string;
  createdBy: string;
  audit: AuditContext;
}

export const MAX_HINT_CHARS = 128;

/**
 * The Workload API `hint` of an entry (SPIFFE Workload API: "an operator-specified string used to
 * provide guidance on how this identity should be used", e.g. `internal`): at most MAX_HINT_CHARS,
 * no control characters. Empty means none.
 */
export function validateHint(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (text.length > MAX_HINT_CHARS || /[\u0000-\u001f\u007f]/.test(text))
    throw new BatonError(
      'ERR_BAD_REQUEST',
      `hint: at most ${MAX_HINT_CHARS} characters, no control characters`,
    );
  return text;
}

export function validateEntryName(name: string): EntryName {
  if (!ENTRY_NAME_RE.test(name)) {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      'invalid entry name: lowercase letters, digits, ".", "-", "_" (at most 63)',
    );
  }
  return name as EntryName;
}

const SELECTOR_USAGE = 'invalid selector: use unix:uid:N, unix:gid:N or unix:path:/absolute/path';
/** PATH_MAX (limits.h), the terminating NUL included. */
const MAX_SELECTOR_PATH_BYTES = 4095;

/**
 * `unix:uid:N`, `unix:gid:N`, `unix:path:/abs/path` (SPIRE's unix workload attestor selectors). A
 * path is matched against the caller's executable as the kernel resolves it (/proc/<pid>/exe), which
 * is always absolute and canonical: a relative path, `.` or `..` segments, `//`, a trailing `/`
 * or a control character could never match, so they are refused here rather than silently never
 * matching on the node.
 */
export function parseSelector(text: string): Selector {
  const path = /^unix:path:(\/.*)$/s.exec(text);
  if (path) {
    const p = path[1]!;
    const segments = p.slice(1).split('/');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
    const controls = /[\u0000-\u001f\u007f]/;
    if (
      p === '/' ||
      segments.some((seg) => seg === '' || seg === '.' || seg === '..') ||
      controls.test(p) ||
      Buffer.byteLength(p) > MAX_SELECTOR_PATH_BYTES
    )
      throw new BatonError(
        'ERR_BAD_REQUEST',
        'invalid selector: unix:path takes the canonical absolute path of an executable',
      );
    return { type: 'unix', key: 'path', value: p };
  }
  const m = /^unix:(uid|gid):(0|[1-9][0-9]{0,9})$/.exec(text);
  if (!m || Number(m[2]) > 2 ** 31 - 1) {
    throw new BatonError('ERR_BAD_REQUEST', SELECTOR_USAGE);
  }
  return { type: 'unix', key: m[1] as 'uid' | 'gid', value: Number(m[2]) };
}

export const formatSelector = (s: Selector): string => `${s.type}:${s.key}:${s.value}`;

/** The selectors (MAX_SELECTORS) and DNS names (MAX_DNS_NAMES) of an entry are bounded lists. */
export function checkListLength<T>(items: readonly T[], max: number): readonly T[] {
  if (items.length > max) throw new BatonError('ERR_BAD_REQUEST', `a list of at most ${max}`);
  return items;
}

/** Records a registration entry; the parent node must exist and be active. */
export async function createEntry(
  deps: { clock: Clock; repos: Repositories; defaultTtlMs: number },
  p: CreateEntryParams,
): Promise<EntryRecord> {
  const entry: EntryRecord = {
    name: p.name,
    spiffeId: p.spiffeId,
    parentNodeId: p.parentNodeId,
    selectors: [...p.selectors],
    dnsNames: [...new Set(p.dnsNames)],
    allowWildcardDns: p.allowWildcardDns,
    ttlMs: p.ttlMs,
    ...(p.hint ? { hint: p.hint } : {}),
    createdBy: p.createdBy,
    createdAt: deps.clock.now(),
  };
  if (entry.ttlMs !== null && (entry.ttlMs < MIN_TTL_MS || entry.ttlMs > MAX_TTL.workload)) {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      `an entry lifetime must be between 1m and ${MAX_TTL.workload / 86_400_000}d`,
    );
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
  await announceEntryChange(deps.repos, entry.parentNodeId, p.audit, entry.createdAt);
  return entry;
}

/**
 * An `entry` event on the feed for the parent node, in the transaction of the change: the node's
 * agent, following the feed, lists its entries at once rather than at its next sync, and the
 * Workload API's streams follow (CONTRACT "SPIFFE Workload API": within 1 s of a new or deleted
 * entry). The event says only which node to look; the entries themselves are read over mTLS.
 */
async function announceEntryChange(repos: Repositories, nodeId: string, audit: AuditContext, at: Date) {
  await repos.revocations.appendEvent({
    kind: 'entry',
    nodeId,
    serials: [],
    reason: 0,
    actor: audit.actor,
    createdAt: at,
  });
}

/** Deletes an entry; issued SVIDs stay valid until they expire or are revoked. */
export async function deleteEntry(
  deps: { clock: Clock; repos: Repositories },
  p: { name: string; audit: AuditContext },
): Promise<void> {
  const entry = await deps.repos.entries.findByName(p.name);
  if (!entry || !(await deps.repos.entries.delete(p.name)))
    throw new BatonError('ERR_NOT_FOUND', 'no such entry');
  const now = deps.clock.now();
  await deps.repos.audit.append(
    auditEvent(p.audit, now, 'entry.deleted', entry.spiffeId, 'success', { name: entry.name }),
  );
  await announceEntryChange(deps.repos, entry.parentNodeId, p.audit, now);
}

/** The lifetime of a workload SVID for this entry: the entry's TTL or the default, within the server maximum. */
export const entryTtlMs = (e: EntryRecord, defaultTtlMs: number): number =>
  Math.min(e.ttlMs ?? defaultTtlMs, MAX_TTL.workload);
