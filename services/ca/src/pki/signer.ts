import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import { BatonError } from '../ground/errors';
import type { Signer } from '../ground/signer';
import { nullValue, oid, seq } from '../../../../common/src/der';
import { OID } from './oids';

/**
 * Signs with a native KeyObject: parsed once when the CA is loaded, never per request
 * (re-parsing a PEM costs more than the signature itself).
 */
export function keyObjectSigner(privateKey: KeyObject): Signer {
  const type = privateKey.asymmetricKeyType;
  const curve = privateKey.asymmetricKeyDetails?.namedCurve;
  let hash: string;
  let algOid: string;
  if (type === 'ec' && curve === 'prime256v1') [hash, algOid] = ['sha256', OID.ecdsaWithSHA256];
  else if (type === 'ec' && curve === 'secp384r1') [hash, algOid] = ['sha384', OID.ecdsaWithSHA384];
  else if (type === 'rsa') [hash, algOid] = ['sha256', OID.sha256WithRSAEncryption];
  else throw new BatonError('ERR_CA_UNAVAILABLE', `unsupported CA key type ${type ?? 'unknown'}`);
  // RFC 5758 §3.2: ECDSA AlgorithmIdentifiers omit the parameters; RFC 4055 §5: RSA ones carry NULL.
  const algorithmIdentifier = type === 'rsa' ? seq(oid(algOid), nullValue()) : seq(oid(algOid));
  return {
    algorithmIdentifier,
    sign: (data: Uint8Array) => cryptoSign(hash, data, privateKey),
  };
}
