import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../../common/src/csr';
import { createJoinToken } from '../../services/ca/src/domain/join-token';
import type { NodeRole } from '../../services/ca/src/domain/ports';
import { type HttpsResult, https } from './https';
import type { TestServer } from './test-server';

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
}

/** A fresh P-256 key and its CSR, made the way the agent makes them. */
export async function keyAndCsr(commonName = 'node'): Promise<KeyAndCsr> {
  const keys = await generateKeyPair();
  const csr = await createCsr(keys, { commonName });
  return { keyPem: await exportPrivateKeyPem(keys.privateKey), csrPem: csr.pem };
}

export async function newToken(
  t: TestServer,
  p: { role?: NodeRole; uses?: number; ttlMs?: number; nodeName?: string; nodeTtlMs?: number } = {},
): Promise<string> {
  const { token } = await createJoinToken(
    { clock: t.clock, tokens: t.ca.storage.tokens },
    {
      role: p.role ?? 'worker',
      ttlMs: p.ttlMs ?? 15 * 60_000,
      uses: p.uses ?? 1,
      nodeName: p.nodeName ?? null,
      nodeTtlMs: p.nodeTtlMs ?? null,
      createdBy: 'test',
      pin: t.ca.keyring.pin,
    },
  );
  return token;
}

export interface IssuanceBody {
  spiffe_id: string;
  serial: string;
  certificate_chain: string;
  bundle: string;
  expires_at: string;
  refresh_at: string;
  node_id?: string;
}

export function attest(t: TestServer, body: Record<string, unknown>): Promise<HttpsResult> {
  return https(`${t.url}/v1/attest`, { method: 'POST', body: JSON.stringify(body), ca: t.bundle });
}

/** Attests a node with a fresh token and key; returns its credential. */
export async function attestedNode(
  t: TestServer,
  p: { role?: NodeRole; nodeName?: string; nodeTtlMs?: number } = {},
): Promise<{ cert: string; key: string; body: IssuanceBody }> {
  const { keyPem, csrPem } = await keyAndCsr();
  const r = await attest(t, { method: 'join_token', token: await newToken(t, p), csr: csrPem });
  if (r.status !== 201) throw new Error(`attest failed: ${r.status} ${r.body}`);
  const body = r.json<IssuanceBody>();
  return { cert: body.certificate_chain, key: keyPem, body };
}

export function renew(
  t: TestServer,
  cred: { cert: string; key: string } | undefined,
  csrPem: string,
): Promise<HttpsResult> {
  return https(`${t.url}/v1/renew`, {
    method: 'POST',
    body: JSON.stringify({ csr: csrPem }),
    ca: t.bundle,
    ...(cred ? { cert: cred.cert, key: cred.key } : {}),
  });
}
