import {
  constants,
  createDecipheriv,
  createHmac,
  createPublicKey,
  diffieHellman,
  type KeyObject,
  privateDecrypt,
  sign,
  timingSafeEqual,
} from 'node:crypto';
import {
  ekIdentifier,
  kdfa,
  kdfe,
  objectName,
  publicKeyOf,
  qualifiedNameUnderEk,
  readPublicArea,
  TpmReader,
} from '../../services/ca/src/pki/tpm';
import {
  akSpec,
  ekSpec,
  freshKeyPair,
  type PublicSpec,
  tpm2bPublic,
  tpmsAttest,
  tpmtSignature,
} from './tpm-structures';

type KeyPair = { privateKey: KeyObject; publicKey: KeyObject };

const keyPair = freshKeyPair;

/**
 * A TPM in JavaScript for domain tests that need no swtpm: the EK and AK are node:crypto keys, and
 * TPM2_ActivateCredential and TPM2_Quote are computed from the specification (Part 1 §24, Part 3
 * §12.5, §18.4). It uses Baton's own KDFs, so it proves nothing about them: the known-answer tests
 * and the swtpm tests do. Options let a test make the TPM misbehave (another AK, another EK spec).
 */
export class FakeTpm {
  readonly ek: KeyPair;
  readonly ak: KeyPair;
  readonly ekPublic: Buffer;
  readonly akPublic: Buffer;

  constructor(
    readonly ekType: 'rsa' | 'ecc' = 'ecc',
    akType: 'rsa' | 'ecc' = 'ecc',
    over: { ek?: Partial<PublicSpec>; ak?: Partial<PublicSpec> } = {},
  ) {
    this.ek = keyPair(ekType);
    this.ak = keyPair(akType);
    this.ekPublic = tpm2bPublic({ ...ekSpec(ekType, this.ek.publicKey), ...over.ek });
    this.akPublic = tpm2bPublic({ ...akSpec(akType, this.ak.publicKey), ...over.ak });
  }

  get ekId(): string {
    return ekIdentifier(publicKeyOf(readPublicArea(this.ekPublic)).spki);
  }

  /** The EK's SubjectPublicKeyInfo DER. */
  get ekSpki(): Buffer {
    return this.ek.publicKey.export({ type: 'spki', format: 'der' });
  }

  /**
   * TPM2_ActivateCredential for the AK `akPublic` (default this TPM's): throws, as the TPM answers
   * TPM_RC_INTEGRITY, when the credential was not made for this EK and that AK's Name.
   */
  activate(idObject: Buffer, encryptedSecret: Buffer, akPublic = this.akPublic): Buffer {
    const name = objectName(readPublicArea(akPublic));
    const seed = this.#seed(encryptedSecret);
    const r = new TpmReader(idObject, 'TPM2B_ID_OBJECT');
    const size = r.u16();
    const integrity = r.tpm2b(64, 'integrityHMAC');
    const encIdentity = r.bytes(size - 2 - integrity.length);
    r.end();
    const hmacKey = kdfa(seed, 'INTEGRITY', Buffer.alloc(0), Buffer.alloc(0), 256);
    const expected = createHmac('sha256', hmacKey).update(encIdentity).update(name).digest();
    if (!timingSafeEqual(expected, integrity)) throw new Error('TPM_RC_INTEGRITY');
    const symKey = kdfa(seed, 'STORAGE', name, Buffer.alloc(0), 128);
    const d = createDecipheriv('aes-128-cfb', symKey, Buffer.alloc(16));
    const plain = Buffer.concat([d.update(encIdentity), d.final()]);
    const inner = new TpmReader(plain, 'TPM2B_DIGEST');
    const secret = inner.tpm2b(64, 'credential');
    inner.end();
    return Buffer.from(secret);
  }

  #seed(encryptedSecret: Buffer): Buffer {
    const r = new TpmReader(encryptedSecret, 'TPM2B_ENCRYPTED_SECRET');
    const body = r.tpm2b(512, 'secret');
    r.end();
    if (this.ekType === 'rsa') {
      return privateDecrypt(
        {
          key: this.ek.privateKey,
          padding: constants.RSA_PKCS1_OAEP_PADDING,
          oaepHash: 'sha256',
          oaepLabel: Buffer.from('IDENTITY\0'),
        },
        body,
      );
    }
    const p = new TpmReader(body, 'TPMS_ECC_POINT');
    const x = p.tpm2b(32, 'x');
    const y = p.tpm2b(32, 'y');
    p.end();
    const e = createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: x.toString('base64url'), y: y.toString('base64url') },
      format: 'jwk',
    });
    const z = diffieHellman({ privateKey: this.ek.privateKey, publicKey: e });
    const ekX = Buffer.from(this.ek.publicKey.export({ format: 'jwk' }).x!, 'base64url');
    return kdfe(z, 'IDENTITY', x, ekX, 256);
  }

  /** TPM2_Quote by this TPM's AK (or `signer`, another key, to forge), over `qualifyingData`. */
  quote(
    qualifyingData: Buffer,
    o: { signer?: KeyPair; qualifiedSigner?: Buffer } = {},
  ): {
    quote: Buffer;
    signature: Buffer;
  } {
    const qualifiedSigner =
      o.qualifiedSigner ?? qualifiedNameUnderEk(readPublicArea(this.ekPublic), readPublicArea(this.akPublic));
    const quote = tpmsAttest({ qualifiedSigner, extraData: qualifyingData });
    const key = (o.signer ?? this.ak).privateKey;
    if (key.asymmetricKeyType === 'rsa') {
      return { quote, signature: tpmtSignature({ sigAlg: 'rsassa', sig: sign('sha256', quote, key) }) };
    }
    const rs = sign('sha256', quote, { key, dsaEncoding: 'ieee-p1363' });
    return {
      quote,
      signature: tpmtSignature({ sigAlg: 'ecdsa', r: rs.subarray(0, 32), s: rs.subarray(32) }),
    };
  }
}
