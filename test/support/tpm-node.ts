import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPem } from '../../services/ca/src/pki/der-reader';
import { tpmQualifyingData } from '../../services/ca/src/pki/tpm';
import { type HttpsResult, https } from './https';
import { keyAndCsr } from './node-client';
import type { SoftwareTpm } from './swtpm';

/**
 * A node's side of TPM attestation, driven through tpm2-tools on a software TPM exactly as
 * docs/api.md "TPM attestation" tells an agent to: the default EK (`tpm2_createek`), an AK under
 * it (`tpm2_createak`), the EK certificate from NV, `tpm2_activatecredential` with a policy
 * session on the EK, `tpm2_quote`. swtpm has no resource manager, so every tool that loads an
 * object is followed by `tpm2_flushcontext -t`, and the session is flushed.
 */
export interface TpmNode {
  readonly tpm: SoftwareTpm;
  /** TPM2B_PUBLIC of the EK and the AK (`-f tss`). */
  readonly ekPublic: Buffer;
  readonly akPublic: Buffer;
  /** The EK certificate DER from NV, when the TPM was manufactured with one. */
  readonly ekCertificate: Buffer | null;
  /** The EK's SubjectPublicKeyInfo DER (`tpm2_readpublic -f der`). */
  readonly ekSpki: Buffer;
  /** SHA-256 of the EK's SPKI DER, hex. */
  readonly ekId: string;
  /** The challenge request body's TPM fields. */
  challengeFields(o?: { withCertificate?: boolean }): Record<string, string>;
  /** tpm2_activatecredential on the wire fields of a challenge; the credential, or throws. */
  activate(
    challenge: { credential_blob: string; encrypted_secret: string },
    ak?: 'own' | string,
  ): Promise<Buffer>;
  /** tpm2_quote of PCR 0 over `qualifyingData` by the AK (or the AK context file `akCtx`). */
  quote(qualifyingData: Buffer, akCtx?: string): Promise<{ quote: Buffer; signature: Buffer }>;
  /** A second AK under the same EK: its public area and context file. */
  newAk(type?: 'ecc' | 'rsa'): Promise<{ akPublic: Buffer; akCtx: string }>;
}

/** The NV index of the RSA 2048 EK certificate (TCG EK Credential Profile 2.x §2.2.1.4). */
const RSA_EK_CERT_NV = '0x01c00002';

let made = 0;

export async function tpmNode(
  tpm: SoftwareTpm,
  o: { ekType?: 'rsa' | 'ecc'; akType?: 'ecc' | 'rsa' } = {},
): Promise<TpmNode> {
  // One directory per node: a TPM may serve several (its RSA EK and its ECC EK are two identities).
  const dir = mkdtempSync(join(tpm.dir, 'node-'));
  const f = (name: string) => join(dir, name);
  const flush = () => tpm.tool('tpm2_flushcontext', ['-t']);
  const ekType = o.ekType ?? 'rsa';
  await tpm.tool('tpm2_createek', ['-c', f('ek.ctx'), '-G', ekType, '-u', f('ek.pub'), '-f', 'tss']);
  await flush();
  await tpm.tool('tpm2_readpublic', ['-c', f('ek.ctx'), '-f', 'der', '-o', f('ek.der')]);
  await flush();
  const makeAk = async (type: 'ecc' | 'rsa', stem: string) => {
    await tpm.tool('tpm2_createak', [
      '-C',
      f('ek.ctx'),
      '-c',
      f(`${stem}.ctx`),
      '-G',
      type,
      '-g',
      'sha256',
      '-s',
      type === 'ecc' ? 'ecdsa' : 'rsassa',
      '-u',
      f(`${stem}.pub`),
      '-f',
      'tss',
    ]);
    await flush();
    return { akPublic: readFileSync(f(`${stem}.pub`)), akCtx: f(`${stem}.ctx`) };
  };
  const ak = await makeAk(o.akType ?? 'ecc', 'ak');
  let ekCertificate: Buffer | null = null;
  if (tpm.ekCertDir && ekType === 'rsa') {
    await tpm.tool('tpm2_nvread', [RSA_EK_CERT_NV, '-o', f('ek.crt')]);
    ekCertificate = readFileSync(f('ek.crt'));
  }
  const ekPublic = readFileSync(f('ek.pub'));
  const ekSpki = readFileSync(f('ek.der'));
  const ekId = createHash('sha256').update(ekSpki).digest('hex');
  return {
    tpm,
    ekPublic,
    ekSpki,
    akPublic: ak.akPublic,
    ekCertificate,
    ekId,
    challengeFields: (c = {}) => ({
      ek_public: ekPublic.toString('base64'),
      ak_public: ak.akPublic.toString('base64'),
      ...((c.withCertificate ?? true) && ekCertificate
        ? { ek_certificate: ekCertificate.toString('base64') }
        : {}),
    }),
    activate: async (challenge, akCtx = 'own') => {
      const n = ++made;
      const cred = f(`cred-${n}`);
      // tpm2-tools' credential file: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
      const head = Buffer.alloc(8);
      head.writeUInt32BE(0xbadcc0de, 0);
      head.writeUInt32BE(1, 4);
      writeFileSync(
        cred,
        Buffer.concat([
          head,
          Buffer.from(challenge.credential_blob, 'base64'),
          Buffer.from(challenge.encrypted_secret, 'base64'),
        ]),
      );
      const session = f(`session-${n}.ctx`);
      await tpm.tool('tpm2_startauthsession', ['--policy-session', '-S', session]);
      try {
        await tpm.tool('tpm2_policysecret', ['-S', session, '-c', 'e']);
        await tpm.tool('tpm2_activatecredential', [
          '-c',
          akCtx === 'own' ? ak.akCtx : akCtx,
          '-C',
          f('ek.ctx'),
          '-i',
          cred,
          '-o',
          f(`secret-${n}`),
          '-P',
          `session:${session}`,
        ]);
      } finally {
        await tpm.tool('tpm2_flushcontext', [session]).catch(() => undefined);
        await flush();
      }
      return readFileSync(f(`secret-${n}`));
    },
    quote: async (qualifyingData, akCtx = ak.akCtx) => {
      const n = ++made;
      await tpm.tool('tpm2_quote', [
        '-c',
        akCtx,
        '-l',
        'sha256:0',
        '-q',
        qualifyingData.toString('hex'),
        '-g',
        'sha256',
        '-m',
        f(`quote-${n}.msg`),
        '-s',
        f(`quote-${n}.sig`),
      ]);
      await flush();
      return { quote: readFileSync(f(`quote-${n}.msg`)), signature: readFileSync(f(`quote-${n}.sig`)) };
    },
    newAk: (type = 'ecc') => makeAk(type, `ak-${++made}`),
  };
}

/** Whether a TPM has no transient object or session left loaded (the agent's duty, and ours here). */
export async function tpmIsClean(tpm: SoftwareTpm): Promise<boolean> {
  const transient = (await tpm.tool('tpm2_getcap', ['handles-transient'])).toString().trim();
  const sessions = (await tpm.tool('tpm2_getcap', ['handles-loaded-session'])).toString().trim();
  return transient === '' && sessions === '' && existsSync(tpm.dir);
}

/** The 201 body of POST /v1/attest/challenge for the tpm method. */
export interface TpmChallengeBody {
  nonce: string;
  expires_at: string;
  credential_blob: string;
  encrypted_secret: string;
}

export interface TpmExchange {
  challenge: HttpsResult;
  /** The challenge's body when it was 201. */
  c?: TpmChallengeBody;
  /** The POST /v1/attest body the node made. */
  body?: Record<string, unknown>;
  /** Its answer, unless `answer: false`. */
  r?: HttpsResult;
}

const b64 = (b: Buffer) => b.toString('base64');

/**
 * The whole exchange as an agent makes it (docs/api.md "TPM attestation"): the challenge with the
 * EK and AK, tpm2_activatecredential, a fresh key and CSR, tpm2_quote over the qualifying data,
 * POST /v1/attest. Options break one step of it.
 */
export async function tpmExchange(
  server: { url: string; bundle: string },
  node: TpmNode,
  o: {
    withCertificate?: boolean;
    /** Fields added to (or replacing those of) the challenge request. */
    fields?: Record<string, unknown>;
    /** The CSR the quote is over (default: the one sent). */
    quotedCsrPem?: string;
    /** false: stop before POST /v1/attest (the test sends the body itself). */
    answer?: boolean;
  } = {},
): Promise<TpmExchange> {
  const post = (path: string, body: Record<string, unknown>) =>
    https(`${server.url}${path}`, { method: 'POST', body: JSON.stringify(body), ca: server.bundle });
  const challenge = await post('/v1/attest/challenge', {
    method: 'tpm',
    ...node.challengeFields({ withCertificate: o.withCertificate }),
    ...o.fields,
  });
  if (challenge.status !== 201) return { challenge };
  const c = challenge.json<TpmChallengeBody>();
  const body = await tpmAnswerBody(node, c.nonce, await node.activate(c), { quotedCsrPem: o.quotedCsrPem });
  return { challenge, c, body, r: o.answer === false ? undefined : await post('/v1/attest', body) };
}

/**
 * The body of POST /v1/attest for challenge `nonce` with the activated `secret`: a fresh CSR and
 * the node's quote over it (or over `quotedCsrPem`), made by its AK or by the AK in `akCtx`.
 */
export async function tpmAnswerBody(
  node: TpmNode,
  nonce: string,
  secret: Buffer,
  o: { quotedCsrPem?: string; akCtx?: string } = {},
): Promise<Record<string, unknown>> {
  const { csrPem } = await keyAndCsr();
  const quoted = fromPem(o.quotedCsrPem ?? csrPem, 'CERTIFICATE REQUEST');
  const q = await node.quote(tpmQualifyingData(nonce, quoted), o.akCtx);
  return {
    method: 'tpm',
    nonce,
    secret: b64(secret),
    quote: b64(q.quote),
    quote_signature: b64(q.signature),
    csr: csrPem,
  };
}
