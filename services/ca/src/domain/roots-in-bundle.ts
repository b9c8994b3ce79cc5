import type { CaRecord } from './ports';

/**
 * The roots in the bundle, the current one first: the one that certified the active signing CA
 * (the rotation's new root; creation times may tie), then the newest.
 */
export const inBundle = (cas: readonly CaRecord[]): CaRecord[] => {
  const current = cas.find((c) => c.kind === 'intermediate' && c.active)?.parentId;
  return cas
    .filter((c) => c.kind === 'root' && c.active)
    .sort((a, b) => Number(b.id === current) - Number(a.id === current) || +b.createdAt - +a.createdAt);
};
