import * as der from '../../../../common/src/der-reader';
import { BatonError } from '../ground/errors';

/**
 * The CA's face of the one strict DER reader (common/src/der-reader.ts): the same functions, but a
 * malformed input is a BatonError ERR_BAD_REQUEST with the reader's message ("malformed CSR:
 * trailing data", "malformed OID", "expected a PEM CERTIFICATE"), as the HTTP layer and the CLI
 * expect. common/ cannot throw BatonError (it imports nothing of services/), and an error factory
 * passed down every call would change every signature and reach into the reader's recursion; the
 * translation here is a try/catch at the entry of each call, which costs nothing until something
 * throws. Every reader call of services/ goes through this module.
 */

export type Tlv = der.Tlv;

function translated(e: unknown): never {
  if (e instanceof der.DerError) throw new BatonError('ERR_BAD_REQUEST', e.message);
  throw e;
}

export function readTlv(buf: Buffer, offset = 0, what = 'DER'): Tlv {
  try {
    return der.readTlv(buf, offset, what);
  } catch (e) {
    return translated(e);
  }
}

/** The children of a constructed element, in order. */
export function children(el: Tlv, what = 'DER', depth = 0): Tlv[] {
  try {
    return der.children(el, what, depth);
  } catch (e) {
    return translated(e);
  }
}

/** Reads exactly one element spanning the whole buffer. */
export function readWhole(buf: Buffer, what = 'DER'): Tlv {
  try {
    return der.readWhole(buf, what);
  } catch (e) {
    return translated(e);
  }
}

export function decodeOid(value: Buffer): string {
  try {
    return der.decodeOid(value);
  } catch (e) {
    return translated(e);
  }
}

export function fromPem(pem: string, label: string): Buffer {
  try {
    return der.fromPem(pem, label);
  } catch (e) {
    return translated(e);
  }
}

/** Never throws: every block of `label`, as DER. */
export const allPem = der.allPem;
