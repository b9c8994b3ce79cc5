import { oid, printable, seq, set, utf8 } from '../../../../common/src/der';
import { OID } from './oids';

export interface NameParts {
  O?: string;
  OU?: string;
  CN?: string;
}

/**
 * A distinguished name in the order O, OU, CN, one attribute per RDN (RFC 5280 §4.1.2.4).
 * Values are UTF8String, as RFC 5280 requires for certificates issued after 2003.
 */
export function encodeName(parts: NameParts): Buffer {
  const rdns: Buffer[] = [];
  const add = (type: string, value: string | undefined) => {
    if (value !== undefined) rdns.push(set(seq(oid(type), utf8(value))));
  };
  add(OID.organizationName, parts.O);
  add(OID.organizationalUnitName, parts.OU);
  add(OID.commonName, parts.CN);
  return seq(...rdns);
}

export { printable };
