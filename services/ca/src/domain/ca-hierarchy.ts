import { type KeyObject, createPublicKey } from 'node:crypto';
import { buildCaCertificate } from '../pki/ca-certificates';
import { randomSerial } from '../pki/certificate';
import { keyIdentifier, spkiOf } from '../pki/keys';
import { readCertificate } from '../pki/certificate-reader';
import type { Signer } from '../ground/signer';
import { type CustodyKey, custodyOf, type KeyCustodySource } from './key-custody';
import type { CaRecord, CrossCertificateRecord } from './ports';
import { DAY } from './duration';
import { crlUrl } from './urls';

/** CONTRACT "Certificate profile": a 10-year root and a 1-year signing intermediate. */
export const ROOT_LIFETIME_MS = 3650 * DAY;
export const INTERMEDIATE_LIFETIME_MS = 365 * DAY;
/** Backdating absorbs small clock differences between Baton and its verifiers. */
export const BACKDATE_MS = 60_000;

export interface CreatedCa {
  record: CaRecord;
  signer: Signer;
}

export const caIdFor = (publicKey: KeyObject): string =>
  `ca-${keyIdentifier(spkiOf(publicKey)).subarray(0, 8).toString('hex')}`;

/** `kek`: the KEK, or the custody that keeps the keys instead (domain/key-custody.ts, `--kms`). */
export function createRootCa(params: { trustDomain: string; now: Date; kek: KeyCustodySource }): CreatedCa {
  const key = custodyOf(params.kek).generate();
  const { publicKey } = key;
  const id = caIdFor(publicKey);
  const notBefore = new Date(params.now.getTime() - BACKDATE_MS);
  const notAfter = new Date(params.now.getTime() + ROOT_LIFETIME_MS);
  const der = buildCaCertificate({
    subject: { O: params.trustDomain, OU: 'baton', CN: `Baton Root CA ${id.slice(3)}` },
    publicKey,
    selfSigner: key.signer,
    serial: randomSerial(),
    notBefore,
    notAfter,
    pathLen: 1,
    trustDomainId: `spiffe://${params.trustDomain}`,
  });
  return {
    record: caRecord(id, 'root', null, der, notBefore, notAfter, key, params),
    signer: key.signer,
  };
}

/** A signing intermediate under `root`; its notAfter never passes the root's (RFC 5280 §6.1.3). */
export function createIntermediateCa(params: {
  trustDomain: string;
  now: Date;
  kek: KeyCustodySource;
  root: CreatedCa;
  publicUrl: string;
  lifetimeMs?: number;
}): CreatedCa {
  const key = custodyOf(params.kek).generate();
  const { publicKey } = key;
  const id = caIdFor(publicKey);
  const root = params.root.record;
  const notBefore = new Date(params.now.getTime() - BACKDATE_MS);
  const wanted = params.now.getTime() + (params.lifetimeMs ?? INTERMEDIATE_LIFETIME_MS);
  const notAfter = new Date(Math.min(wanted, root.notAfter.getTime()));
  const rootFields = readCertificate(root.certificateDer);
  const der = buildCaCertificate({
    subject: signingCaSubject(params.trustDomain, id),
    publicKey,
    issuer: {
      name: rootFields.subjectRaw,
      keyId: keyIdentifier(rootFields.spkiRaw),
      signer: params.root.signer,
    },
    serial: randomSerial(),
    notBefore,
    notAfter,
    pathLen: 0,
    crlUrl: crlUrl(params.publicUrl, root.id),
    trustDomainId: `spiffe://${params.trustDomain}`,
  });
  return {
    record: caRecord(id, 'intermediate', root.id, der, notBefore, notAfter, key, params),
    signer: key.signer,
  };
}

const signingCaSubject = (trustDomain: string, id: string) => ({
  O: trustDomain,
  OU: 'baton',
  CN: `Baton Signing CA ${id.slice(3)}`,
});

/**
 * A cross-certificate of a signing intermediate by another root (root rotation): the same subject
 * and key, so leaves it signs chain to either root, and the same pathLen 0, so no path length is
 * exceeded (the roots have pathLen 1; certifying the new root itself under the old one would need
 * 2). Its notAfter passes neither the intermediate's nor the issuer's (RFC 5280 §6.1.3).
 */
export function crossCertifyIntermediate(params: {
  trustDomain: string;
  now: Date;
  intermediate: CaRecord;
  issuer: { record: CaRecord; signer: Signer };
  publicUrl: string;
}): CrossCertificateRecord {
  const { intermediate, issuer } = params;
  const fields = readCertificate(intermediate.certificateDer);
  const issuerFields = readCertificate(issuer.record.certificateDer);
  const notBefore = new Date(params.now.getTime() - BACKDATE_MS);
  const notAfter = new Date(Math.min(intermediate.notAfter.getTime(), issuer.record.notAfter.getTime()));
  const der = buildCaCertificate({
    subject: signingCaSubject(params.trustDomain, intermediate.id),
    publicKey: createPublicKey({ key: fields.spkiRaw, format: 'der', type: 'spki' }),
    issuer: {
      name: issuerFields.subjectRaw,
      keyId: keyIdentifier(issuerFields.spkiRaw),
      signer: issuer.signer,
    },
    serial: randomSerial(),
    notBefore,
    notAfter,
    pathLen: 0,
    crlUrl: crlUrl(params.publicUrl, issuer.record.id),
    trustDomainId: `spiffe://${params.trustDomain}`,
  });
  // The subject must be the intermediate's to the byte, or leaves would not chain through it.
  if (!readCertificate(der).subjectRaw.equals(fields.subjectRaw))
    throw new Error(`cross-certificate of ${intermediate.id}: the subject differs from the CA's`);
  return {
    caId: intermediate.id,
    issuerId: issuer.record.id,
    certificateDer: der,
    notBefore,
    notAfter,
    createdAt: params.now,
  };
}

function caRecord(
  id: string,
  kind: CaRecord['kind'],
  parentId: string | null,
  der: Buffer,
  notBefore: Date,
  notAfter: Date,
  key: CustodyKey,
  p: { now: Date },
): CaRecord {
  return {
    id,
    kind,
    parentId,
    certificateDer: der,
    notBefore,
    notAfter,
    active: true,
    wrappedKey: key.store(id),
    createdAt: p.now,
  };
}
