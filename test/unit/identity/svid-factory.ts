import { KeyObject, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

/**
 * A builder of small PKIs for the identity library's unit tests (STYLE 12: fixtures are builders).
 * It makes certificates Baton would never issue (two URI SANs, none, a CA leaf), which is why it
 * uses @peculiar/x509 rather than the CA's issuer.
 */

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const HOUR = 3600_000;

type Keys = webcrypto.CryptoKeyPair;

const newKeys = async (): Promise<Keys> =>
  (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as unknown as Keys;

const keyPem = (keys: Keys): string =>
  KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }) as string;

export interface LeafParams {
  uris?: string[];
  dns?: string[];
  /** e.g. 'O=td, OU=manager, CN=n1' */
  subject?: string;
  notBefore?: Date;
  notAfter?: Date;
  ca?: boolean;
}

export interface TestLeaf {
  /** Leaf + intermediate, as the agent writes cert.pem. */
  certPem: string;
  keyPem: string;
  keys: Keys;
  cert: NodeX509;
  /** Lowercase hex, as Identity reports it. */
  serial: string;
}

export interface TestPki {
  trustDomain: string;
  bundlePem: string;
  leaf(p?: LeafParams): Promise<TestLeaf>;
}

/** A root and an intermediate for `td`, both valid from an hour ago for ten years. */
export async function testPki(td = 'test.example.org'): Promise<TestPki> {
  const now = Date.now();
  const rootKeys = await newKeys();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: `O=${td}, CN=root`,
    keys: rootKeys,
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 87600 * HOUR),
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const interKeys = await newKeys();
  const inter = await x509.X509CertificateGenerator.create({
    subject: `O=${td}, CN=intermediate`,
    issuer: root.subject,
    publicKey: interKeys.publicKey,
    signingKey: rootKeys.privateKey,
    notBefore: new Date(now - HOUR),
    notAfter: new Date(now + 8760 * HOUR),
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const interPem = inter.toString('pem');
  return {
    trustDomain: td,
    bundlePem: `${root.toString('pem')}\n`,
    leaf: async (p = {}) => {
      const keys = await newKeys();
      const names: x509.JsonGeneralNames = [
        ...(p.uris ?? [`spiffe://${td}/web`]).map((value) => ({ type: 'url' as const, value })),
        ...(p.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
      ];
      const leaf = await x509.X509CertificateGenerator.create({
        subject: p.subject ?? `O=${td}, CN=web`,
        issuer: inter.subject,
        publicKey: keys.publicKey,
        signingKey: interKeys.privateKey,
        notBefore: p.notBefore ?? new Date(Date.now() - 60_000),
        notAfter: p.notAfter ?? new Date(Date.now() + HOUR),
        signingAlgorithm: SIGN,
        extensions: [
          new x509.BasicConstraintsExtension(p.ca ?? false, undefined, true),
          new x509.KeyUsagesExtension(
            p.ca ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature,
            true,
          ),
          new x509.ExtendedKeyUsageExtension([
            x509.ExtendedKeyUsage.serverAuth,
            x509.ExtendedKeyUsage.clientAuth,
          ]),
          ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : []),
          await x509.AuthorityKeyIdentifierExtension.create(interKeys.publicKey),
        ],
      });
      const leafPem = leaf.toString('pem');
      const cert = new NodeX509(leafPem);
      return {
        certPem: `${leafPem}\n${interPem}\n`,
        keyPem: keyPem(keys),
        keys,
        cert,
        serial: normalize(cert.serialNumber),
      };
    },
  };
}

const normalize = (hex: string): string => {
  const s = hex.toLowerCase();
  return s.length % 2 ? `0${s}` : s;
};

/** Writes cert.pem, key.pem and bundle.pem into `dir` the plain way (tests control the ordering). */
export function writeIdentityDir(dir: string, files: { cert?: string; key?: string; bundle?: string }): void {
  mkdirSync(dir, { recursive: true });
  if (files.cert !== undefined) writeFileSync(join(dir, 'cert.pem'), files.cert);
  if (files.key !== undefined) writeFileSync(join(dir, 'key.pem'), files.key, { mode: 0o600 });
  if (files.bundle !== undefined) writeFileSync(join(dir, 'bundle.pem'), files.bundle);
}
