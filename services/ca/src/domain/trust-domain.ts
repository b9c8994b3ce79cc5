import { BatonError } from '../ground/errors';

/**
 * SPIFFE ID spec §2.1: a trust domain name is lowercase letters, digits, dots, dashes and
 * underscores. Baton refuses anything else rather than normalizing it.
 */
export function validateTrustDomain(td: string): string {
  if (!/^[a-z0-9._-]{1,255}$/.test(td) || td.startsWith('.') || td.endsWith('.') || td.includes('..')) {
    throw new BatonError(
      'ERR_CONFIG_INVALID',
      `invalid trust domain "${td}": use lowercase letters, digits, ".", "-" and "_" (e.g. prod.example.org)`,
    );
  }
  return td;
}

export const nodeSpiffeId = (td: string, nodeId: string): string => `spiffe://${td}/node/${nodeId}`;
export const adminSpiffeId = (td: string, name: string): string => `spiffe://${td}/admin/${name}`;
export const serverSpiffeId = (td: string): string => `spiffe://${td}/baton/server`;
