import { AgentError } from './agent-error';
import { CaClientError, type Issuance, type NodeCaApi } from './ca-client';
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../../common/src/csr';
import { certificatePin, chainProblem, isKeyForCertificate, parseCertificates } from './pem';
import { trustStorePem } from '../../../common/src/trust-store';

/**
 * Pinned bootstrap, as SwarmKit joins a node: the token carries a hash of the CA root, so a node
 * that trusts nothing yet can still tell the real CA from an impostor before it hands over the
 * token. CONTRACT "Join tokens": "The agent refuses to talk to a server whose chain does not lead
 * to the pinned root."
 *
 * 1. GET /v1/bundle without verifying TLS (nothing secret is sent on that connection);
 * 2. keep only the roots whose SPKI SHA-256 equals the pin, refusing if there is none;
 * 3. during a root rotation only (the bundle holds another root besides), GET /v1/ca-certificates;
 * 4. POST /v1/attest over TLS verified against those pinned roots only. Trusting the whole
 *    downloaded bundle would let an impostor that appends its own root next to the real one
 *    receive the token.
 *
 * So a first join is one round trip after the bundle (issue 20): the attestation itself.
 */

/** `BATON1-<pin>-<id>.<secret>`: 52 base32 characters of pin, 16 hex of id, the secret. */
const TOKEN_RE = /^BATON1-([a-z2-7]{52})-([0-9a-f]{16})\.([a-z2-7]{26,})$/;

export interface ParsedJoinToken {
  pin: string;
  id: string;
}

/** Parses a join token; the error never repeats the token (it is a secret). */
export function parseJoinToken(token: string): ParsedJoinToken {
  const m = TOKEN_RE.exec(token.trim());
  if (!m) {
    throw new AgentError(
      'ERR_TOKEN_INVALID',
      'the token is not a Baton join token (expected BATON1-<pin>-<id>.<secret>)',
    );
  }
  return { pin: m[1]!, id: m[2]! };
}

/**
 * The PEM of the bundle's roots whose pin is `pin`, or a refusal. `whose` names the pin in the
 * message: the token's, or `--pin` for a TPM attestation.
 */
export function pinnedRoots(bundlePem: string, pin: string, whose = "the token's pin"): string {
  let roots: ReturnType<typeof parseCertificates>;
  try {
    roots = parseCertificates(bundlePem);
  } catch (e) {
    throw new AgentError('ERR_PIN_MISMATCH', `the server's CA does not match ${whose}`, { cause: e });
  }
  const pinned = roots.filter((r) => r.ca && certificatePin(r) === pin);
  if (pinned.length === 0)
    throw new AgentError('ERR_PIN_MISMATCH', `the server's CA does not match ${whose}`);
  return pinned.map((r) => r.toString()).join('');
}

/** Whether the bundle holds a root besides the pinned one: a root rotation's overlap. */
export const holdsOtherRoot = (bundlePem: string, pin: string): boolean =>
  parseCertificates(bundlePem).some((r) => r.ca && certificatePin(r) !== pin);

/**
 * What the pinned roots (or, for a TPM agent, the roots it already holds) let OpenSSL verify: the
 * server's own chain may list another root's certificate of its CA first (a root rotation), so the
 * trusted root's certificate of that CA joins the trusted set (common/src/trust-store.ts). Only
 * what a trusted root signed; a server without the route has nothing to add. `askCaCertificates`
 * false: the bundle holds no other root, so there is no cross-certificate to find (one request less).
 */
export async function trustedForBootstrap(
  client: NodeCaApi,
  rootsPem: string,
  askCaCertificates = true,
): Promise<string> {
  const caCertificates =
    askCaCertificates && client.fetchCaCertificatesUnverified
      ? await client.fetchCaCertificatesUnverified().catch(() => '')
      : '';
  return trustStorePem(rootsPem, caCertificates);
}

/**
 * A way to obtain a first (or, after expiry, a new) node identity, the server checked against what
 * the node trusts on first contact: a join token with its pin (tokenAttestor), or the TPM
 * (tpm/tpm-attestor.ts).
 */
export interface NodeAttestor {
  attest(): Promise<NewNodeIdentity>;
}

export const tokenAttestor = (client: NodeCaApi, token: string): NodeAttestor => ({
  attest: () => bootstrap(client, token),
});

/** A freshly issued node identity, with the key made here for it. */
export interface NewNodeIdentity extends Issuance {
  keyPem: string;
}

/**
 * Attests with `token` after checking the server against the token's pin, with a new P-256 key.
 * Nothing is written: the caller stores the result.
 */
export async function bootstrap(client: NodeCaApi, token: string): Promise<NewNodeIdentity> {
  const { pin } = parseJoinToken(token);
  const bundlePem = await client.fetchBundleUnverified();
  const pinned = pinnedRoots(bundlePem, pin);
  // Asked only once the bundle holds the pinned root beside another one (a cross-certificate is
  // served only while its issuer is in the bundle: domain/keyring.ts).
  const trustBundlePem = await trustedForBootstrap(client, pinned, holdsOtherRoot(bundlePem, pin));
  const keys = await generateKeyPair();
  const csr = await createCsr(keys);
  const issued = await client
    .attest({ token: token.trim(), csrPem: csr.pem, trustBundlePem })
    .catch((e: unknown) => {
      // TLS refused before any byte of the request was sent: the token did not leave the node.
      if (e instanceof CaClientError && e.code === 'ERR_SERVER_UNTRUSTED')
        throw new AgentError(
          'ERR_PIN_MISMATCH',
          "the server's certificate does not lead to the token's pinned root",
          {
            cause: e,
          },
        );
      throw e;
    });
  const identity = { ...issued, keyPem: await exportPrivateKeyPem(keys.privateKey) };
  checkIssued(identity);
  return identity;
}

/**
 * STYLE §9: swap to a new certificate only after it verifies: it must certify our new key and
 * lead to a root of the bundle it came with.
 */
export function checkIssued(identity: NewNodeIdentity): void {
  if (!isKeyForCertificate(identity.certificateChainPem, identity.keyPem))
    throw new AgentError('ERR_BAD_RESPONSE', 'the CA returned a certificate for another key');
  const problem = chainProblem(identity.certificateChainPem, identity.bundlePem);
  if (problem)
    throw new AgentError('ERR_BAD_RESPONSE', `the CA returned a bad certificate chain: ${problem}`);
}
