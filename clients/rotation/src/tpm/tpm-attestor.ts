import { AgentError } from '../agent-error';
import {
  checkIssued,
  type NewNodeIdentity,
  type NodeAttestor,
  holdsOtherRoot,
  pinnedRoots,
  trustedForBootstrap,
} from '../bootstrap';
import { CaClientError, type Issuance, type NodeCaApi, type TpmCaApi } from '../ca-client';
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../../../common/src/csr';
import { parseCertificates } from '../pem';
import { ensurePrivateDirectory, readOwnFile } from '../safe-fs';
import type { NodeTpm, TpmSession } from './node-tpm';
import { nodeIdOfEk, qualifyingData } from './tpm-wire';

/**
 * `baton agent --tpm` (issue 19; docs/api.md "TPM attestation"): a node identity rooted in the
 * TPM's endorsement key, with no token to leak.
 *
 * Trust on first contact: with no token to carry the root pin, DIR/bundle.pem (the roots the
 * agent already holds and has kept current through root rotations) when it exists, else `--pin`
 * checked against the server's bundle exactly as a token's pin is (bootstrap.ts): the agent sends
 * nothing, not even its EK, to a server whose chain does not lead to those roots.
 *
 * Then, over TLS verified against them:
 *   1. POST /v1/attest/challenge with the EK (and its certificate from NV) and a fresh AK;
 *   2. the TPM activates the CA's credential (only the TPM holding that EK can, and only for an AK
 *      it holds: TPM 2.0 Library Part 1 §24) and quotes, with the AK, the qualifying data that
 *      binds the nonce to the CSR of a key made here;
 *   3. POST /v1/attest with the secret, the quote and the CSR. The key never leaves the node.
 * The TPM work runs in a TpmSession, closed (everything flushed, files removed) before step 3.
 */

export interface TpmAttestorOptions {
  client: NodeCaApi & TpmCaApi;
  tpm: NodeTpm;
  /** The root pin (`--pin`): lowercase base32 SHA-256 of the root's SPKI, as in join tokens. */
  pin?: string;
  /** DIR/bundle.pem: when present, the roots the agent trusts instead of the pin. */
  bundlePath: string;
}

/** The roots of a bundle file are a few KiB; a bound keeps a planted huge file out of memory. */
const MAX_BUNDLE_BYTES = 1024 * 1024;

export class TpmAttestor implements NodeAttestor {
  readonly #o: TpmAttestorOptions;

  constructor(o: TpmAttestorOptions) {
    this.#o = o;
  }

  async attest(): Promise<NewNodeIdentity> {
    const { client } = this.#o;
    const trust = await this.#trust();
    const trustBundlePem = await trustedForBootstrap(client, trust.rootsPem, trust.askCaCertificates);
    // The working directory goes in DIR, which must be the agent's alone (safe-fs, STYLE §18).
    ensurePrivateDirectory(this.#o.tpm.workParent, 0o755);
    const session = await this.#o.tpm.open();
    const ekId = session.endorsement.ekId;
    let evidence: Evidence;
    try {
      evidence = await this.#evidence(session, trustBundlePem);
    } catch (e) {
      await session.close().catch(() => {});
      throw refusal(e, ekId, trust.source);
    }
    await session.close();
    let issued: Issuance;
    try {
      issued = await client.attestTpm({ ...evidence.wire, csrPem: evidence.csrPem, trustBundlePem });
    } catch (e) {
      throw refusal(e, ekId, trust.source);
    }
    const identity = { ...issued, keyPem: evidence.keyPem };
    checkIssued(identity);
    // CONTRACT "TPM node attestation": the node ID derives from the EK identifier, always the same.
    if (identity.nodeId !== nodeIdOfEk(ekId))
      throw new AgentError(
        'ERR_BAD_RESPONSE',
        `the CA issued the certificate to node ${identity.nodeId}, not to this TPM's ${nodeIdOfEk(ekId)}`,
      );
    return identity;
  }

  /** The roots to verify the server against: DIR/bundle.pem when it exists, else the pinned root. */
  async #trust(): Promise<{ rootsPem: string; source: string; askCaCertificates: boolean }> {
    const held = readOwnFile(this.#o.bundlePath, { maxBytes: MAX_BUNDLE_BYTES })?.toString('utf8');
    // A held bundle may predate a root rotation the server is in: ask for its cross-certificates.
    if (held !== undefined && parseCertificates(held).some((c) => c.ca))
      return { rootsPem: held, source: 'a root of DIR/bundle.pem', askCaCertificates: true };
    if (!this.#o.pin)
      throw new AgentError(
        'ERR_PIN_REQUIRED',
        'no CA to trust yet: pass --pin with the root pin `baton ca init` printed',
      );
    const bundlePem = await this.#o.client.fetchBundleUnverified();
    const rootsPem = pinnedRoots(bundlePem, this.#o.pin, '--pin');
    // As for a token (bootstrap.ts): a cross-certificate exists only while another root is in the
    // bundle, so a join outside a root rotation is the challenge and the attestation alone.
    return {
      rootsPem,
      source: 'the root of --pin',
      askCaCertificates: holdsOtherRoot(bundlePem, this.#o.pin),
    };
  }

  async #evidence(session: TpmSession, trustBundlePem: string): Promise<Evidence> {
    const { ekPublic, ekCertificate } = session.endorsement;
    const challenge = await this.#o.client.tpmChallenge({
      ekPublic,
      ekCertificate,
      akPublic: session.akPublic,
      trustBundlePem,
    });
    const secret = await session.activateCredential(challenge);
    const keys = await generateKeyPair();
    const csr = await createCsr(keys);
    const { quote, signature } = await session.quote(qualifyingData(challenge.nonce, csr.der));
    return {
      wire: { nonce: challenge.nonce, secret, quote, quoteSignature: signature },
      csrPem: csr.pem,
      keyPem: await exportPrivateKeyPem(keys.privateKey),
    };
  }
}

interface Evidence {
  wire: { nonce: string; secret: Buffer; quote: Buffer; quoteSignature: Buffer };
  csrPem: string;
  keyPem: string;
}

/** The CA's refusals worded for the operator of the node, naming the EK so that it can be enrolled. */
function refusal(e: unknown, ekId: string, trusted: string): unknown {
  if (!(e instanceof CaClientError)) return e;
  if (e.code === 'ERR_SERVER_UNTRUSTED')
    // TLS refused before any byte of the request was sent: the EK did not leave the node.
    return new AgentError('ERR_PIN_MISMATCH', `the server's certificate does not lead to ${trusted}`, {
      cause: e,
    });
  if (e.code === 'ERR_ATTESTATION_FAILED')
    return new AgentError(
      e.code,
      `the CA refused this TPM (EK id ${ekId}): ${e.message}; an admin admits it with \`baton node enroll --tpm-ek-id ${ekId}\` or \`baton tpm ca add\``,
      { cause: e },
    );
  if (e.code === 'ERR_NODE_REVOKED')
    return new AgentError(
      e.code,
      `this node has been revoked: the CA refuses its TPM (EK id ${ekId}) until \`baton node enroll --tpm-ek-id\` admits it again`,
      { cause: e },
    );
  return e;
}
