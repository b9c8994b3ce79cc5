import { isIP } from 'node:net';
import { domainToASCII, domainToUnicode } from 'node:url';
import { BatonError } from '../ground/errors';

/**
 * DNS SANs of a workload (RFC 5280 §4.2.1.6 preferred name syntax, RFC 1123 labels): lowercase
 * LDH labels of 1–63 characters, at most 253 in all, no trailing dot, no IP literal, no
 * all-numeric top label. Internationalized names only as valid A-labels (RFC 5890 "xn--"),
 * never as Unicode. A wildcard only as the whole leftmost label, and only when the entry allows it.
 */
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

declare const checked: unique symbol;
/** A DNS name that validateDnsName accepted (a type only: still a string). */
export type DnsName = string & { readonly [checked]: true };

/** Refuses anything outside the rules above; the empty string is a missing name ("required"). */
export function validateDnsName(name: string, opts: { allowWildcard: boolean }): DnsName {
  const bad = (why: string): never => {
    throw new BatonError('ERR_BAD_REQUEST', `invalid DNS name: ${why}`);
  };
  if (name.length === 0) return bad('required');
  if (name.length > 253) bad('longer than 253 characters');
  if (isIP(name) || isIP(name.replace(/^\[|\]$/g, ''))) bad('IP addresses are not DNS names');
  if (name.endsWith('.')) bad('trailing dot');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is the point: ASCII only
  if (!/^[\x00-\x7f]*$/.test(name)) bad('internationalized names must be given as A-labels (xn--)');
  if (name !== name.toLowerCase()) bad('must be lowercase');
  const labels = name.split('.');
  if (labels.length < 2) bad('must have at least two labels');
  for (const [i, label] of labels.entries()) {
    if (label === '*') {
      if (i !== 0) bad('a wildcard may only be the leftmost label');
      if (!opts.allowWildcard) bad('wildcards need an entry that allows them');
      if (labels.length < 3) bad('a wildcard needs at least two labels after it');
      continue;
    }
    if (label.includes('*')) bad('partial-label wildcards are not allowed');
    if (!LABEL.test(label)) bad('labels are letters, digits and inner hyphens, 1 to 63 characters');
    if (label.startsWith('xn--') && domainToASCII(domainToUnicode(label)) !== label) bad('invalid A-label');
    if (label.slice(2, 4) === '--' && !label.startsWith('xn--'))
      bad('reserved label form (RFC 5891 §4.2.3.1)');
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) bad('an all-numeric top label is not allowed');
  return name as DnsName;
}
