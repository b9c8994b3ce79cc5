import type { Installation, WrappedKey } from '../../domain/ports';
import { toBuffer } from './db-errors';

/** The installation's settings: the columns of `installation` and of `upstream_pending` (kept until the import). */
export interface SettingsColumns {
  trust_domain: string;
  public_url: string;
  public_http_url: string | null;
  node_ttl_ms: string | number;
  workload_ttl_ms: string | number;
  admin_ttl_ms: string | number;
}

export const settingsColumns = (i: Omit<Installation, 'createdAt'>): SettingsColumns => ({
  trust_domain: i.trustDomain,
  public_url: i.publicUrl,
  public_http_url: i.publicHttpUrl ?? null,
  node_ttl_ms: i.nodeTtlMs,
  workload_ttl_ms: i.workloadTtlMs,
  admin_ttl_ms: i.adminTtlMs,
});

export const settingsOf = (r: SettingsColumns): Omit<Installation, 'createdAt'> => ({
  trustDomain: r.trust_domain,
  publicUrl: r.public_url,
  ...(r.public_http_url ? { publicHttpUrl: r.public_http_url } : {}),
  nodeTtlMs: Number(r.node_ttl_ms),
  workloadTtlMs: Number(r.workload_ttl_ms),
  adminTtlMs: Number(r.admin_ttl_ms),
});

/** A CA or JWT key as stored (KEK-wrapped, a token reference, or none): `cas`, `jwt_keys`, `upstream_pending`. */
export interface KeyColumns {
  key_alg: WrappedKey['alg'];
  key_kek_id: string;
  key_blob: Uint8Array;
}

export const keyColumns = (w: WrappedKey): KeyColumns => ({
  key_alg: w.alg,
  key_kek_id: w.kekId,
  key_blob: w.blob,
});

export const wrappedKeyOf = (r: KeyColumns): WrappedKey => ({
  alg: r.key_alg,
  kekId: r.key_kek_id,
  blob: toBuffer(r.key_blob),
});
