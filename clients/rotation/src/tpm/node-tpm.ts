import { createPublicKey } from 'node:crypto';
import { AgentError } from '../agent-error';
import { createFile } from '../safe-fs';
import { credentialFile, ekCertificateFor, ekIdentifier, type TpmChallenge } from './tpm-wire';
import type { Tpm2Tools } from './tpm2-tools';
import { TpmWorkspace } from './tpm-workspace';

/**
 * The node's TPM for attestation (issue 19; docs/api.md "TPM attestation"), through tpm2-tools:
 *
 *   EK   tpm2_createek -G rsa|ecc: the TCG default EK (EK Credential Profile 2.x templates L-1,
 *        RSA 2048, and L-2, ECC P-256), made again from the endorsement seed: the same key every
 *        time, so nothing is kept on the node between attestations;
 *   cert the EK certificate from NV, when the manufacturer put one there (EK Credential Profile
 *        §2.2.1.4: 0x01c00002 for RSA 2048, 0x01c0000a for ECC P-256);
 *   AK   tpm2_createak under the EK: ECC P-256, ECDSA-SHA256, restricted signing, fixedTPM;
 *   then TPM2_ActivateCredential of the CA's challenge (the EK's policy is PolicySecret of the
 *   endorsement hierarchy, EK Credential Profile §2.1.5.1) and TPM2_Quote over the qualifying data.
 *
 * No resource manager is assumed (swtpm, or /dev/tpm0 directly): after every tool that loads an
 * object, `tpm2_flushcontext -t`; the policy session is flushed by its file; close() does both
 * again, so that nothing is left loaded in the TPM when an attestation ends, even a failed one.
 * Without a resource manager the TPM is one shared table: run one TPM user at a time there.
 */

export type EkType = 'rsa' | 'ecc';
export const EK_TYPES: readonly EkType[] = ['rsa', 'ecc'];

const EK_CERT_NV_INDEX: Record<EkType, number> = { rsa: 0x01c00002, ecc: 0x01c0000a };

export interface TpmEndorsement {
  /** TPM2B_PUBLIC of the EK, as `tpm2_createek -f tss` writes it. */
  ekPublic: Buffer;
  /** The EK's SubjectPublicKeyInfo, DER. */
  ekSpki: Buffer;
  /** ekIdentifier(ekSpki). */
  ekId: string;
  /** The EK certificate from NV, DER, when there is one for this EK. */
  ekCertificate?: Buffer;
}

export interface TpmQuote {
  /** TPMS_ATTEST, as `tpm2_quote -m` writes it. */
  quote: Buffer;
  /** TPMT_SIGNATURE, as `tpm2_quote -s` writes it (-f tss). */
  signature: Buffer;
}

export class NodeTpm {
  constructor(
    readonly tools: Tpm2Tools,
    readonly ekType: EkType,
    /** Where the private working directories are made (see TpmWorkspace). */
    readonly workParent: string,
  ) {}

  /** The EK identifier alone (`baton agent tpm-id`). */
  async ekIdentifier(): Promise<string> {
    const session = await TpmSession.open(this, { certificate: false, ak: false });
    try {
      return session.endorsement.ekId;
    } finally {
      await session.close();
    }
  }

  /** EK, its certificate and a fresh AK, for one attestation; close() it in a finally. */
  open(): Promise<TpmSession> {
    return TpmSession.open(this, { certificate: true, ak: true });
  }
}

export class TpmSession {
  readonly #tpm: NodeTpm;
  readonly #ws: TpmWorkspace;
  /** The policy session saved in this file is live in the TPM until flushed. */
  #policySession = false;
  endorsement!: TpmEndorsement;
  /** TPM2B_PUBLIC of the AK (`tpm2_createak -f tss`). */
  akPublic!: Buffer;

  private constructor(tpm: NodeTpm, ws: TpmWorkspace) {
    this.#tpm = tpm;
    this.#ws = ws;
  }

  static async open(tpm: NodeTpm, what: { certificate: boolean; ak: boolean }): Promise<TpmSession> {
    const session = new TpmSession(tpm, TpmWorkspace.create(tpm.workParent));
    try {
      await session.#createEk(what.certificate);
      if (what.ak) await session.#createAk();
      return session;
    } catch (e) {
      await session.close().catch(() => {});
      throw e;
    }
  }

  async #createEk(withCertificate: boolean): Promise<void> {
    const ws = this.#ws;
    await this.#loading('tpm2_createek', [
      '-c',
      ws.file('ek.ctx'),
      '-G',
      this.#tpm.ekType,
      '-u',
      ws.file('ek.pub'),
      '-f',
      'tss',
    ]);
    // The SPKI exactly as tpm2-tools converts the TPMT_PUBLIC (RSA exponent 0 means 65537).
    await this.#loading('tpm2_readpublic', ['-c', ws.file('ek.ctx'), '-f', 'pem', '-o', ws.file('ek.pem')]);
    const ekPublic = ws.read('ek.pub');
    const ekSpki = createPublicKey(ws.read('ek.pem')).export({ type: 'spki', format: 'der' });
    this.endorsement = { ekPublic, ekSpki, ekId: ekIdentifier(ekSpki) };
    if (withCertificate) this.endorsement.ekCertificate = await this.#readEkCertificate(ekSpki);
  }

  /** The EK certificate in NV, read with the index's own (empty) authorization; none is no error. */
  async #readEkCertificate(ekSpki: Buffer): Promise<Buffer | undefined> {
    const index = EK_CERT_NV_INDEX[this.#tpm.ekType];
    const handles = (await this.#run('tpm2_getcap', ['handles-nv-index'])).toString('utf8');
    const present = handles.split('\n').some((l) => Number.parseInt(l.replace(/^\s*-\s*/, ''), 16) === index);
    if (!present) return undefined;
    const out = this.#ws.file('ek-cert.der');
    try {
      await this.#run('tpm2_nvread', [`0x${index.toString(16)}`, '-o', out]);
    } catch (e) {
      // An index this TPM does not let us read (a platform that set other attributes): the EK can
      // still be enrolled by its identifier, which needs no certificate.
      if (e instanceof AgentError && e.code === 'ERR_TPM_FAILED') return undefined;
      throw e;
    }
    return ekCertificateFor(this.#ws.read('ek-cert.der'), ekSpki);
  }

  async #createAk(): Promise<void> {
    const ws = this.#ws;
    await this.#loading('tpm2_createak', [
      '-C',
      ws.file('ek.ctx'),
      '-c',
      ws.file('ak.ctx'),
      '-G',
      'ecc',
      '-g',
      'sha256',
      '-s',
      'ecdsa',
      '-u',
      ws.file('ak.pub'),
      '-f',
      'tss',
    ]);
    this.akPublic = ws.read('ak.pub');
  }

  /**
   * TPM2_ActivateCredential (Part 3 §12.5): the TPM releases the CA's secret only if the EK can
   * decrypt the seed and the credential names this AK, loaded in the same TPM. Returns the secret.
   */
  async activateCredential(
    challenge: Pick<TpmChallenge, 'credentialBlob' | 'encryptedSecret'>,
  ): Promise<Buffer> {
    const ws = this.#ws;
    createFile(ws.file('credential.bin'), credentialFile(challenge), 0o600);
    const session = ws.file('session.ctx');
    await this.#run('tpm2_startauthsession', ['--policy-session', '-S', session]);
    this.#policySession = true;
    let failed: { error: unknown } | undefined;
    try {
      await this.#run('tpm2_policysecret', ['-S', session, '-c', 'e']);
      await this.#loading('tpm2_activatecredential', [
        '-c',
        ws.file('ak.ctx'),
        '-C',
        ws.file('ek.ctx'),
        '-i',
        ws.file('credential.bin'),
        '-o',
        ws.file('secret.bin'),
        '-P',
        `session:${session}`,
      ]);
    } catch (error) {
      failed = { error };
    }
    // The session is flushed either way; its own failure is reported only when nothing else was.
    await this.#flushPolicySession().catch((error: unknown) => {
      failed ??= { error };
    });
    if (failed) throw failed.error;
    const secret = ws.read('secret.bin', 64);
    ws.drop('secret.bin');
    if (secret.length === 0) throw new AgentError('ERR_TPM_FAILED', 'the TPM released an empty credential');
    return secret;
  }

  /** TPM2_Quote (Part 3 §18.4) of PCR sha256:0 by the AK, over `qualifyingData`. */
  async quote(qualifyingData: Buffer): Promise<TpmQuote> {
    const ws = this.#ws;
    await this.#loading('tpm2_quote', [
      '-c',
      ws.file('ak.ctx'),
      '-l',
      'sha256:0',
      '-q',
      qualifyingData.toString('hex'),
      '-g',
      'sha256',
      '-m',
      ws.file('quote.msg'),
      '-s',
      ws.file('quote.sig'),
    ]);
    return { quote: ws.read('quote.msg'), signature: ws.read('quote.sig') };
  }

  /** Flushes what may still be loaded and removes the files. Safe to call more than once. */
  async close(): Promise<void> {
    try {
      await this.#flushPolicySession();
      await this.#tpm.tools.flushTransient(this.#ws.dir);
    } finally {
      this.#ws.remove();
    }
  }

  async #flushPolicySession(): Promise<void> {
    if (!this.#policySession) return;
    await this.#run('tpm2_flushcontext', [this.#ws.file('session.ctx')]);
    this.#policySession = false;
  }

  #run(tool: string, args: string[]): Promise<Buffer> {
    return this.#tpm.tools.run(tool, args, { cwd: this.#ws.dir });
  }

  /** A tool that loads objects, then `tpm2_flushcontext -t`, whether it succeeded or not. */
  async #loading(tool: string, args: string[]): Promise<Buffer> {
    let out: Buffer;
    try {
      out = await this.#run(tool, args);
    } catch (e) {
      await this.#tpm.tools.flushTransient(this.#ws.dir).catch(() => {});
      throw e;
    }
    await this.#tpm.tools.flushTransient(this.#ws.dir);
    return out;
  }
}
