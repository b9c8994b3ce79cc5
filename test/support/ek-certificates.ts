import { execFileSync } from 'node:child_process';
import { createPublicKey, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * EK certificates made with the openssl command line (`x509 -new -force_pubkey`, OpenSSL 3.0), for a
 * TPM's EK public key the test knows, under any issuer whose certificate and key are files (a
 * CorporatePki CA, or swtpm_localca's intermediate). Their extensions follow the TCG EK Credential
 * Profile 2.x §3.2 unless a test asks otherwise: an empty subject, a critical subjectAltName
 * directoryName with the TPM manufacturer, model and version, critical basicConstraints CA:FALSE,
 * critical keyUsage (keyEncipherment for RSA, keyAgreement for ECC) and the issuer's key identifier.
 */
export interface EkCertificateOptions {
  /** Extension lines replacing the keyUsage line, e.g. ['keyUsage=critical,digitalSignature']. */
  keyUsage?: string[];
  /** More extension lines, e.g. ['1.2.3.4.5=critical,DER:0500'] for an unknown critical one. */
  extra?: string[];
  /** openssl -days from now (default 3650): an expired certificate is a clock moved past it. */
  days?: number;
  /** The basicConstraints line (default critical CA:FALSE). */
  basicConstraints?: string;
}

export function issueEkCertificate(
  dir: string,
  issuer: { certFile: string; keyFile: string },
  ekSpki: Buffer,
  o: EkCertificateOptions = {},
): Buffer {
  const tag = randomBytes(6).toString('hex');
  const pubFile = join(dir, `ek-${tag}.pub.pem`);
  const extFile = join(dir, `ek-${tag}.ext`);
  const outFile = join(dir, `ek-${tag}.der`);
  const key = createPublicKey({ key: ekSpki, format: 'der', type: 'spki' });
  writeFileSync(pubFile, key.export({ type: 'spki', format: 'pem' }));
  const usage = key.asymmetricKeyType === 'rsa' ? 'keyEncipherment' : 'keyAgreement';
  writeFileSync(
    extFile,
    `${[
      o.basicConstraints ?? 'basicConstraints=critical,CA:FALSE',
      ...(o.keyUsage ?? [`keyUsage=critical,${usage}`]),
      'authorityKeyIdentifier=keyid',
      'subjectAltName=critical,dirName:tpm_dn',
      ...(o.extra ?? []),
      // openssl reads the part of a DN field name before the first dot as a counter.
      '[tpm_dn]',
      '0.2.23.133.2.1=id:00001014',
      '1.2.23.133.2.2=swtpm',
      '2.2.23.133.2.3=id:20191023',
    ].join('\n')}\n`,
  );
  execFileSync(
    'openssl',
    [
      'x509',
      '-new',
      '-subj',
      '/',
      '-force_pubkey',
      pubFile,
      '-CA',
      issuer.certFile,
      '-CAkey',
      issuer.keyFile,
      '-set_serial',
      `0x${randomBytes(12).toString('hex')}`,
      '-days',
      String(o.days ?? 3650),
      '-extfile',
      extFile,
      '-outform',
      'DER',
      '-out',
      outFile,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return readFileSync(outFile);
}
