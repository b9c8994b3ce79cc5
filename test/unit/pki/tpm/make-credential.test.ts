import { constants, createPrivateKey, createPublicKey, privateDecrypt } from 'node:crypto';
import { makeCredential, objectName, readPublicArea } from '../../../../services/ca/src/pki/tpm';
import { hex } from '../../../fixtures/tpm-swtpm';
import { FakeTpm } from '../../../support/fake-tpm';
import { akSpec, ekSpec, freshKeyPair, tpm2bPublic } from '../../../support/tpm-structures';

/**
 * TPM2_MakeCredential (pki/tpm/make-credential.ts). Its activation by a real TPM is tested on
 * swtpm (test/integration/tpm-crypto.test.ts); here, known answers with a fixed seed and a fixed
 * ephemeral key, each computed step by step with the openssl command line (KBKDF, SSKDF,
 * `openssl pkeyutl -derive`, `openssl enc -aes-128-cfb`, `openssl mac HMAC`), not with this code:
 *
 *   SYM=KDFa(seed, STORAGE, name, 128); HK=KDFa(seed, INTEGRITY, 256)
 *   printf 0020$SECRET | xxd -r -p | openssl enc -aes-128-cfb -K $SYM -iv 0…0 > enc
 *   openssl mac -digest SHA256 -macopt hexkey:$HK -in <(cat enc; name) HMAC
 */
const SECRET = hex('2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b'); // SHA-256("secret")
const NAME = hex('000b6d417dca5f33ae759b8d971526948fba5536d5dd5fa0a17b0ca0b9a739224606'); // 000b || SHA-256("ak-name")

/** A P-256 EK private key and an ephemeral key, made once with `openssl genpkey`. */
const EK_PRIVATE = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSGY98CH/p883faQJ
XXi+GlqKiocjImPaMiTI27TEpLmhRANCAAQJP24rJrwcoWuytw3WZWdZMFLyBzXQ
awj3cbnjXIshKD2niHBb6d+mozXWw3qLXRh7/qZRa3dzLwzei+OtAzu3
-----END PRIVATE KEY-----
`;
const EPHEMERAL_PRIVATE = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgeqhuXiZEd/zDCJZf
fI1FBh6W9g6nj1tsUGrGeZOIn8GhRANCAARFZ6Akp8DsZTzUK35Ut2VUyHz6ZnR7
K6h1XucUbUlFHKpEYJL124pDQqo/F6PZO9l1VJ7nd2YpRk7W+c4QAloX
-----END PRIVATE KEY-----
`;

describe('TPM2_MakeCredential (pki/tpm/make-credential.ts)', () => {
  it('ok/RSA EK, a fixed seed: the TPM2B_ID_OBJECT is the known answer; the seed travels under RSA-OAEP "IDENTITY"', () => {
    const ek = freshKeyPair('rsa');
    const area = readPublicArea(tpm2bPublic(ekSpec('rsa', ek.publicKey)));
    const seed = hex('19b25856e1c150ca834cffc8b59b23adbd0ec0389e58eb22b3b64768098d002b'); // SHA-256("seed")
    const c = makeCredential(area, NAME, SECRET, { seed });
    expect(c.idObject.toString('hex')).toBe(
      '004400205d3505e81b7fe7f0decbe21e2c8994d041315e338a738d2e7715a9a671cd3a582abf30e8a33f4c76b172cd0eac31f04214e8811a0ba034a21bc5fea2ad2e0b19d00d',
    );
    // TPM2B_ENCRYPTED_SECRET: 256 bytes of OAEP ciphertext that only the EK's private key opens.
    expect(c.encryptedSecret.readUInt16BE(0)).toBe(256);
    expect(c.encryptedSecret).toHaveLength(258);
    const opened = privateDecrypt(
      {
        key: ek.privateKey,
        padding: constants.RSA_PKCS1_OAEP_PADDING,
        oaepHash: 'sha256',
        oaepLabel: Buffer.from('IDENTITY\0'),
      },
      c.encryptedSecret.subarray(2),
    );
    expect(opened.equals(seed)).toBe(true);
    // Without the label's terminating zero, OAEP refuses: the label is part of the contract.
    expect(() =>
      privateDecrypt(
        {
          key: ek.privateKey,
          padding: constants.RSA_PKCS1_OAEP_PADDING,
          oaepHash: 'sha256',
          oaepLabel: Buffer.from('IDENTITY'),
        },
        c.encryptedSecret.subarray(2),
      ),
    ).toThrow();
  });

  it('ok/ECC EK, a fixed ephemeral key: the TPMS_ECC_POINT of e and the TPM2B_ID_OBJECT are the known answers', () => {
    const ekPublic = createPublicKey(createPrivateKey(EK_PRIVATE));
    const area = readPublicArea(tpm2bPublic(ekSpec('ecc', ekPublic)));
    // The ephemeral key's scalar d (RFC 7518 §6.2.2.1), from the imported PEM.
    const d = Buffer.from(createPrivateKey(EPHEMERAL_PRIVATE).export({ format: 'jwk' }).d!, 'base64url');
    const c = makeCredential(area, NAME, SECRET, { ephemeralPrivateKey: d });
    expect(c.encryptedSecret.toString('hex')).toBe(
      '004400204567a024a7c0ec653cd42b7e54b76554c87cfa66747b2ba8755ee7146d49451c0020aa446092f5db8a4342aa3f17a3d93bd975549ee7776629464ed6f9ce10025a17',
    );
    expect(c.idObject.toString('hex')).toBe(
      '004400207ecc38f41ee5ad2cdb63a25132b632040a707f0ac43042942eb583156bb3892e67bdea3a4ae343ff39d5bcd73161176f1060d55b43c89f161d9978ee739e09556225',
    );
  });

  it.each(['rsa', 'ecc'] as const)(
    'ok/%s EK: fresh randomness every time, and the TPM that holds the EK recovers the secret for that AK only',
    (type) => {
      const tpm = new FakeTpm(type);
      const ek = readPublicArea(tpm.ekPublic);
      const name = objectName(readPublicArea(tpm.akPublic));
      const a = makeCredential(ek, name, SECRET);
      const b = makeCredential(ek, name, SECRET);
      expect(a.idObject.equals(b.idObject)).toBe(false);
      expect(a.encryptedSecret.equals(b.encryptedSecret)).toBe(false);
      expect(tpm.activate(a.idObject, a.encryptedSecret).equals(SECRET)).toBe(true);
      // Another AK's Name: the integrity check fails, as TPM2_ActivateCredential's would.
      const otherAk = tpm2bPublic(akSpec('ecc', freshKeyPair('ecc').publicKey));
      expect(() => tpm.activate(a.idObject, a.encryptedSecret, otherAk)).toThrow('TPM_RC_INTEGRITY');
      // Another TPM: its EK does not open the seed (RSA: OAEP fails; ECC: another Z, integrity fails).
      expect(() => new FakeTpm(type).activate(a.idObject, a.encryptedSecret)).toThrow();
    },
  );
});
