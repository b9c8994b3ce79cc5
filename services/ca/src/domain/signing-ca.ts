import type { Signer } from '../ground/signer';
import type { IssuerTemplate } from '../pki/certificate';
import type { CaRecord } from './ports';

/** A CA loaded once, its key ready to sign through its custody (or, an outside CA, none). */
export interface SigningCa {
  record: CaRecord;
  /** Signs with this CA's key, wherever the key is kept (ground/signer.ts). */
  signer: Signer;
  certPem: string;
  /**
   * What is served after a leaf this CA signs: its own certificate, then any certificate that links
   * it to another trusted root (CONTRACT "Certificate profile": leaf + intermediate).
   */
  chainPem: string;
  subjectName: Buffer;
  keyId: Buffer;
  spki: Buffer;
  /** Pre-encoded issuer parts for every leaf this CA signs. */
  template: IssuerTemplate;
  /**
   * An outside CA of an upstream CA (domain/upstream-ca.ts): Baton holds no key for it, so it signs
   * nothing, CRLs and OCSP answers included; its `signer` refuses.
   */
  outside?: true;
}
