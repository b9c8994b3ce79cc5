import type { AddManufacturerCasParams, EnrollTpmParams } from '../../domain/tpm-enrollment';
import { parseEkId } from '../../domain/tpm-enrollment';
import { NODE_ROLES } from '../../domain/ports';
import { readManufacturerCas } from '../../pki/tpm';
import { atField, jsonObject, oneOf, requiredString } from '../validate';

/** A PEM file of a root and its intermediates fits well within the 64 KiB body. */
const MAX_PEM_CHARS = 60 * 1024;

/** POST /v1/admin/tpm/enrollments `{"ek_id","role"}`: the EK identifier (64 hex), then the role. */
export function readEnrollTpmParams(parsedBody: unknown): Omit<EnrollTpmParams, 'audit'> {
  const b = jsonObject(parsedBody);
  const ekId = atField('ek_id', () => parseEkId(requiredString(b, 'ek_id', 64)));
  return { ekId, role: oneOf(b, 'role', NODE_ROLES) };
}

/**
 * POST /v1/admin/tpm/cas `{"pem","role"?}`: the certificates (each a CA, no private key in the
 * text: pki/tpm readManufacturerCas), then the role (default worker).
 */
export function readAddManufacturerCasParams(parsedBody: unknown): Omit<AddManufacturerCasParams, 'audit'> {
  const b = jsonObject(parsedBody);
  const pem = requiredString(b, 'pem', MAX_PEM_CHARS);
  const cas = atField('pem', () => readManufacturerCas(pem));
  return { cas, role: oneOf(b, 'role', NODE_ROLES, 'worker') };
}
