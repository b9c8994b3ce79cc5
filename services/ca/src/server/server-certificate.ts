import { createPublicKey } from 'node:crypto';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import type { ListenAddress } from '../config';
import type { Clock } from '../domain/clock';
import { issueLeaf, type IssuedLeaf } from '../domain/issue';
import type { Keyring } from '../domain/keyring';
import type { CertificateRepository, Installation } from '../domain/ports';
import { serverSpiffeId } from '../domain/trust-domain';
import { describePublicKey, generateP256, spkiOf } from '../pki/keys';

export interface ServerCredential {
  key: string;
  /** Leaf + intermediate. */
  cert: string;
  issued: IssuedLeaf;
}

/** The names a client may use to reach this server: the listen host and the public URL host. */
export function serverNames(listen: ListenAddress, publicUrl: string): { dns: string[]; ips: string[] } {
  const hosts = new Set<string>();
  const wildcard = listen.host === '0.0.0.0' || listen.host === '::';
  for (const h of wildcard ? ['127.0.0.1', 'localhost', hostname()] : [listen.host]) hosts.add(h);
  hosts.add(new URL(publicUrl).hostname.replace(/^\[|\]$/g, ''));
  const dns = [...hosts].filter((h) => isIP(h) === 0).map((h) => h.toLowerCase());
  const ips = [...hosts].filter((h) => isIP(h) !== 0);
  return { dns, ips };
}

/**
 * The server's own TLS certificate, from its own CA. The key lives only in this process's memory:
 * each replica makes its own at start and at every renewal, so no server key is ever on disk.
 */
export async function issueServerCredential(deps: {
  clock: Clock;
  keyring: Keyring;
  installation: Installation;
  certificates: CertificateRepository;
  listen: ListenAddress;
  publicUrl: string;
  ttlMs: number;
}): Promise<ServerCredential> {
  const { privateKey } = generateP256();
  const names = serverNames(deps.listen, deps.publicUrl);
  const td = deps.installation.trustDomain;
  const issued = await issueLeaf(
    { clock: deps.clock, issuer: deps.keyring.signing, certificates: deps.certificates },
    {
      kind: 'server',
      spiffeId: serverSpiffeId(td),
      subject: { O: td, OU: 'server', CN: names.dns[0] ?? names.ips[0] ?? 'baton' },
      key: describePublicKey(spkiOf(createPublicKey(privateKey))),
      ttlMs: deps.ttlMs,
      dnsNames: names.dns,
      ips: names.ips,
    },
  );
  return {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    cert: issued.chainPem,
    issued,
  };
}
