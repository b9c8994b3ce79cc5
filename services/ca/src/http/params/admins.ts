import {
  type AdminName,
  type AdminRole,
  validateAdminName,
  validateAdminRole,
} from '../../domain/admin-identity';
import { MAX_TTL, MIN_TTL_MS } from '../../ground/ttl';
import { type ParsedCsr, parseCsr } from '../../pki/csr';
import { atField, jsonObject, optionalDurationMs, requiredString, textOrEmpty } from '../validate';

/** POST /v1/admin/admins as the edge reads it. */
export interface AdminBodyParams {
  /** Parsed, its signature verified and its key within the key policy. */
  csr: ParsedCsr;
  name: AdminName;
  role: AdminRole;
  /** Absent: the installation's admin lifetime. */
  ttlMs: number | undefined;
}

/**
 * The body of POST /v1/admin/admins in this order (the first refusal wins): csr, ttl, name, role.
 * Each field's JSON type is checked here and its value by the domain (or pki/csr.ts).
 */
export function readIssueAdminParams(parsedBody: unknown): AdminBodyParams {
  const b = jsonObject(parsedBody);
  const csr = parseCsr(requiredString(b, 'csr', 16 * 1024));
  const ttlMs = optionalDurationMs(b, 'ttl', MIN_TTL_MS, MAX_TTL.admin);
  const name = validateAdminName(textOrEmpty(b.name));
  const role = atField('role', () => validateAdminRole(textOrEmpty(b.role)));
  return { csr, name, role, ttlMs };
}
