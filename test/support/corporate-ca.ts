import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A "corporate" PKI made with the openssl command line, as an operator's CA would run it: `openssl
 * ca` with an extensions file, so that validity dates (expired, not yet valid) and any extension
 * (path length, name constraints, a missing keyCertSign) can be asked for. Used by the upstream CA
 * tests (`baton ca init --upstream-csr`, `baton ca import`).
 */
export interface CorporateCa {
  name: string;
  certFile: string;
  keyFile: string;
  pem: string;
}

export interface SignOptions {
  /** Lines of the extension section, e.g. 'basicConstraints=critical,CA:TRUE,pathlen:0'. */
  ext: string[];
  /** Default: an hour ago. */
  notBefore?: Date;
  /** Default: 30 days from now. */
  notAfter?: Date;
}

/** openssl's YYYYMMDDHHMMSSZ. */
const opensslTime = (d: Date): string => `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;

export const CA_EXT = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'];

export class CorporatePki {
  #n = 0;
  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'newcerts'), { recursive: true });
    writeFileSync(join(dir, 'index.txt'), '');
    writeFileSync(join(dir, 'serial'), '1000\n');
    writeFileSync(
      join(dir, 'openssl.cnf'),
      [
        '[ca]',
        'default_ca = corp',
        '[corp]',
        `database = ${join(dir, 'index.txt')}`,
        `new_certs_dir = ${join(dir, 'newcerts')}`,
        `serial = ${join(dir, 'serial')}`,
        'default_md = sha256',
        'policy = any',
        'unique_subject = no',
        'copy_extensions = none',
        '[any]',
        'organizationName = optional',
        'organizationalUnitName = optional',
        'commonName = optional',
        '[req]',
        'distinguished_name = dn',
        '[dn]',
        '',
      ].join('\n'),
    );
  }

  #file(stem: string): string {
    this.#n++;
    return join(this.dir, `${this.#n}-${stem}`);
  }

  /** A new P-256 key and its CSR for `subject` (e.g. '/O=Corp/CN=Corp Root'). */
  newRequest(subject: string): { keyFile: string; csrFile: string } {
    const keyFile = this.#file('key.pem');
    const csrFile = this.#file('csr.pem');
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile]);
    execFileSync('openssl', [
      'req',
      '-new',
      '-key',
      keyFile,
      '-subj',
      subject,
      '-config',
      join(this.dir, 'openssl.cnf'),
      '-out',
      csrFile,
    ]);
    return { keyFile, csrFile };
  }

  /** Signs the CSR in `csrFile` with `issuer` (undefined: self-signed with `selfKey`); the PEM. */
  sign(csrFile: string, issuer: CorporateCa | { selfKey: string }, o: SignOptions): string {
    const extFile = this.#file('ext.cnf');
    writeFileSync(
      extFile,
      `${[
        // Defaults, unless the caller names them.
        ...['subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid'].filter(
          (d) => !o.ext.some((e) => e.startsWith(d.split('=')[0]!)),
        ),
        ...o.ext,
      ].join('\n')}\n`,
    );
    const out = this.#file('cert.pem');
    const notBefore = o.notBefore ?? new Date(Date.now() - 3600_000);
    const notAfter = o.notAfter ?? new Date(Date.now() + 30 * 86400_000);
    const who =
      'selfKey' in issuer
        ? ['-selfsign', '-keyfile', issuer.selfKey]
        : ['-cert', issuer.certFile, '-keyfile', issuer.keyFile];
    execFileSync(
      'openssl',
      [
        'ca',
        '-batch',
        '-notext',
        '-preserveDN',
        '-rand_serial',
        '-config',
        join(this.dir, 'openssl.cnf'),
        ...who,
        '-in',
        csrFile,
        '-out',
        out,
        '-extfile',
        extFile,
        '-startdate',
        opensslTime(notBefore),
        '-enddate',
        opensslTime(notAfter),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    return readFileSync(out, 'utf8');
  }

  /** A self-signed root with `ext` (default: a CA without a path length limit). */
  root(name: string, o: Partial<SignOptions> = {}): CorporateCa {
    const req = this.newRequest(`/O=Corp/CN=${name}`);
    const pem = this.sign(req.csrFile, { selfKey: req.keyFile }, { ...o, ext: o.ext ?? CA_EXT });
    return this.#save(name, pem, req.keyFile);
  }

  /** `ca` self-signed again (same name and key) with other extensions: e.g. another SKI. */
  reissueRoot(ca: CorporateCa, o: SignOptions): CorporateCa {
    const csrFile = this.#file('again-csr.pem');
    execFileSync(
      'openssl',
      ['x509', '-x509toreq', '-in', ca.certFile, '-signkey', ca.keyFile, '-out', csrFile],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    return this.#save(ca.name, this.sign(csrFile, { selfKey: ca.keyFile }, o), ca.keyFile);
  }

  /** An intermediate CA under `issuer`. */
  intermediate(name: string, issuer: CorporateCa, o: Partial<SignOptions> = {}): CorporateCa {
    const req = this.newRequest(`/O=Corp/CN=${name}`);
    const pem = this.sign(req.csrFile, issuer, { ...o, ext: o.ext ?? CA_EXT });
    return this.#save(name, pem, req.keyFile);
  }

  /** The CRL of `ca` (PEM), valid a day, listing what `revoke` revoked. */
  crl(ca: CorporateCa): string {
    const out = this.#file('crl.pem');
    execFileSync(
      'openssl',
      [
        'ca',
        '-gencrl',
        '-crldays',
        '1',
        '-config',
        join(this.dir, 'openssl.cnf'),
        '-cert',
        ca.certFile,
        '-keyfile',
        ca.keyFile,
        '-out',
        out,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    return readFileSync(out, 'utf8');
  }

  /** Records the revocation of `certPem` (one `ca` signed) for its next CRL. */
  revoke(ca: CorporateCa, certPem: string): void {
    const file = this.#file('revoked.pem');
    writeFileSync(file, certPem);
    execFileSync(
      'openssl',
      [
        'ca',
        '-revoke',
        file,
        '-config',
        join(this.dir, 'openssl.cnf'),
        '-cert',
        ca.certFile,
        '-keyfile',
        ca.keyFile,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  }

  /** Baton's CSR (PEM text) signed by `issuer`. */
  signPem(csrPem: string, issuer: CorporateCa, o: SignOptions): string {
    const csrFile = this.#file('baton-csr.pem');
    writeFileSync(csrFile, csrPem);
    return this.sign(csrFile, issuer, o);
  }

  #save(name: string, pem: string, keyFile: string): CorporateCa {
    const certFile = this.#file('ca.pem');
    writeFileSync(certFile, pem);
    return { name, certFile, keyFile, pem };
  }
}

/** What Baton's signing CA certificate should carry (what `ca init --upstream-csr` asks for). */
export const SIGNING_CA_EXT = (trustDomain: string): string[] => [
  'basicConstraints=critical,CA:TRUE,pathlen:0',
  'keyUsage=critical,keyCertSign,cRLSign',
  `subjectAltName=URI:spiffe://${trustDomain}`,
];
