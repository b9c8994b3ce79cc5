import { type DnsName, validateDnsName } from '../../domain/dns-name';
import {
  type CreateEntryParams,
  checkListLength,
  MAX_DNS_NAMES,
  MAX_SELECTORS,
  parseSelector,
  validateEntryName,
  validateHint,
} from '../../domain/entries';
import { validateWorkloadSpiffeId } from '../../domain/spiffe-id';
import { BatonError } from '../../ground/errors';
import { MAX_TTL, MIN_TTL_MS } from '../../ground/ttl';
import { atField, jsonObject, optionalDurationMs, textOrEmpty } from '../validate';

/** POST /v1/admin/entries as the edge reads it; the route adds who creates it. */
export type EntryBodyParams = Omit<CreateEntryParams, 'createdBy' | 'audit'>;

/**
 * The body of POST /v1/admin/entries, field by field in this order (the first refusal wins):
 * allow_wildcard_dns, ttl, name, parent, spiffe_id, selectors, dns_names, hint. Each field's JSON type is
 * checked here and its value by the domain's validator; a refusal is 400 ERR_BAD_REQUEST.
 */
export function readCreateEntryParams(parsedBody: unknown, trustDomain: string): EntryBodyParams {
  const b = jsonObject(parsedBody);
  if (b.allow_wildcard_dns !== undefined && typeof b.allow_wildcard_dns !== 'boolean') {
    throw new BatonError('ERR_BAD_REQUEST', 'allow_wildcard_dns: a boolean');
  }
  const allowWildcardDns = b.allow_wildcard_dns === true;
  const ttlMs = optionalDurationMs(b, 'ttl', MIN_TTL_MS, MAX_TTL.workload) ?? null;
  const name = validateEntryName(textOrEmpty(b.name));
  // A missing parent is a malformed request (400), not a node that does not exist (404).
  if (typeof b.parent !== 'string' || b.parent === '') {
    throw new BatonError(
      'ERR_BAD_REQUEST',
      'parent: the id of the node that may mint this identity is required',
    );
  }
  const parentNodeId = b.parent;
  const spiffeId = validateWorkloadSpiffeId(textOrEmpty(b.spiffe_id), trustDomain);
  const selectors = listField(b, 'selectors', MAX_SELECTORS).map((s) => parseSelector(textOrEmpty(s)));
  const dnsNames: DnsName[] = listField(b, 'dns_names', MAX_DNS_NAMES).map((d) =>
    validateDnsName(textOrEmpty(d), { allowWildcard: allowWildcardDns }),
  );
  if (b.hint !== undefined && b.hint !== null && typeof b.hint !== 'string')
    throw new BatonError('ERR_BAD_REQUEST', 'hint: a string');
  const hint = typeof b.hint === 'string' ? validateHint(b.hint) : '';
  return {
    name,
    spiffeId,
    parentNodeId,
    selectors,
    dnsNames,
    allowWildcardDns,
    ttlMs,
    ...(hint ? { hint } : {}),
  };
}

/** An optional array field of at most `max` items: absent or null is empty. */
function listField(b: Record<string, unknown>, field: string, max: number): readonly unknown[] {
  const v = b[field];
  if (v === undefined || v === null) return [];
  return atField(field, () => {
    // Not an array: the same refusal as a list too long, as documented.
    if (!Array.isArray(v)) throw new BatonError('ERR_BAD_REQUEST', `a list of at most ${max}`);
    return checkListLength(v, max);
  });
}
