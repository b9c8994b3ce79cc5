import { buildCertificate, randomSerial } from '../pki/certificate';
import { toPem } from '../../../../common/src/der';
import { keyFingerprint, type PublicKeyInfo } from '../pki/keys';
import { type NameParts, encodeName } from '../pki/names';
import type { Clock } from './clock';
import { BACKDATE_MS } from './ca-hierarchy';
import { BatonError, isBatonError } from '../ground/errors';
import type { SigningCa } from './keyring';
import { leafExtensions } from './leaf-profile';
import type { CertificateKind, CertificateRecord, CertificateRepository } from './ports';

export interface IssueLeafParams {
  kind: CertificateKind;
  spiffeId: string;
  subject: NameParts;
  key: PublicKeyInfo;
  ttlMs: number;
  dnsNames?: string[];
  ips?: string[];
  nodeId?: string | null;
  issuedVia?: string | null;
}

export interface IssuedLeaf {
  record: CertificateRecord;
  certificatePem: string;
  /** Leaf + signing intermediate (CONTRACT "Certificate profile"). */
  chainPem: string;
}

export interface IssueDeps {
  clock: Clock;
  issuer: SigningCa;
  certificates: CertificateRepository;
}

const SERIAL_ATTEMPTS = 3;

/**
 * Builds, signs and records a leaf. The record is written before the certificate is returned,
 * so nothing a client holds is unknown to revocation. notAfter is capped at the issuer's notAfter
 * (a chain never outlives its CA).
 */
export async function issueLeaf(deps: IssueDeps, p: IssueLeafParams): Promise<IssuedLeaf> {
  const leaf = await recordLeaf(deps, p, async (l) => {
    await deps.certificates.insert(l.record);
    return true;
  });
  return leaf!;
}

/**
 * Builds and signs a leaf, then hands it to `record`, which must write it durably (true) or refuse
 * it (false: recordLeaf returns null, and the certificate, never recorded, is never seen again).
 * A serial collision (ERR_CONFLICT from the unique index) draws a new serial.
 */
export async function recordLeaf(
  deps: Omit<IssueDeps, 'certificates'>,
  p: IssueLeafParams,
  record: (leaf: IssuedLeaf) => Promise<boolean>,
): Promise<IssuedLeaf | null> {
  if (!(p.ttlMs >= 60_000))
    throw new BatonError('ERR_TTL_INVALID', 'certificate lifetime must be at least 1m');
  const now = deps.clock.now().getTime();
  const notBefore = new Date(now - BACKDATE_MS);
  const caNotAfter = deps.issuer.record.notAfter.getTime();
  if (caNotAfter <= now) throw new BatonError('ERR_CA_UNAVAILABLE', 'the signing CA has expired');
  const notAfter = new Date(Math.min(now + p.ttlMs, caNotAfter));
  const extensions = leafExtensions({ key: p.key, spiffeId: p.spiffeId, dnsNames: p.dnsNames, ips: p.ips });
  const subjectName = encodeName(p.subject);
  for (let attempt = 1; ; attempt++) {
    const serial = randomSerial();
    const der = buildCertificate(deps.issuer.template, {
      serial,
      notBefore,
      notAfter,
      subjectName,
      spki: p.key.spki,
      extensions,
    });
    const certificatePem = toPem('CERTIFICATE', der);
    const leaf: IssuedLeaf = {
      record: {
        serial: serial.toString('hex'),
        caId: deps.issuer.record.id,
        kind: p.kind,
        spiffeId: p.spiffeId,
        nodeId: p.nodeId ?? null,
        issuedVia: p.issuedVia ?? null,
        notBefore,
        notAfter,
        keyFingerprint: keyFingerprint(p.key.spki),
        der,
        status: 'valid',
        createdAt: new Date(now),
        revokedAt: null,
        revocationReason: null,
      },
      certificatePem,
      chainPem: certificatePem + deps.issuer.chainPem,
    };
    try {
      return (await record(leaf)) ? leaf : null;
    } catch (e) {
      // A 128-bit serial collision is astronomically unlikely, but uniqueness is enforced by the
      // database, never assumed: draw again.
      if (isBatonError(e, 'ERR_CONFLICT') && attempt < SERIAL_ATTEMPTS) continue;
      throw e;
    }
  }
}
