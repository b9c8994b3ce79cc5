import { execFileSync } from 'node:child_process';
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
} from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { x509popSignedBytes } from '../../services/ca/src/domain/attestation/x509pop-attestor';
import { fromPem } from '../../services/ca/src/pki/der-reader';
import { describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { attest, type IssuanceBody, keyAndCsr } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { opensslText, run, tempDir, writeFiles } from '../support/tools';
import { errorBodyOf } from '../support/errors';

/**
 * Issue 3: x509pop attestation. The provisioning PKI is made with the openssl CLI, the way an
 * operator makes one; the proof of possession is signed with node:crypto, and once with the openssl
 * recipe of docs/attestation.md to pin the exact signed bytes.
 */

const EXTENSIONS = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ca_pathlen0]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf_no_digital_signature]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

type KeyType = 'P-256' | 'P-384' | 'RSA';

interface Issued {
  certPem: string;
  keyPem: string;
  certFile: string;
  keyFile: string;
}

/** A small openssl-driven PKI in a temp directory. */
class OpensslPki {
  #n = 0;
  constructor(readonly dir: string) {
    writeFileSync(join(dir, 'ext.cnf'), EXTENSIONS);
  }

  #key(type: KeyType): string {
    const file = join(this.dir, `k${++this.#n}.key`);
    const opt =
      type === 'RSA'
        ? ['RSA', '-pkeyopt', 'rsa_keygen_bits:2048']
        : ['EC', '-pkeyopt', `ec_paramgen_curve:${type}`];
    execFileSync('openssl', ['genpkey', '-algorithm', ...opt, '-out', file]);
    return file;
  }

  #result(certFile: string, keyFile: string): Issued {
    return {
      certPem: execFileSync('openssl', ['x509', '-in', certFile], { encoding: 'utf8' }),
      keyPem: execFileSync('openssl', ['pkey', '-in', keyFile], { encoding: 'utf8' }),
      certFile,
      keyFile,
    };
  }

  ca(cn: string, days = 30): Issued {
    const keyFile = this.#key('P-256');
    const certFile = join(this.dir, `c${++this.#n}.pem`);
    execFileSync('openssl', [
      'req',
      '-x509',
      '-new',
      '-config',
      join(this.dir, 'ext.cnf'),
      '-extensions',
      'ca',
      '-key',
      keyFile,
      '-subj',
      `/O=Provisioning/CN=${cn}`,
      '-days',
      String(days),
      '-out',
      certFile,
    ]);
    return this.#result(certFile, keyFile);
  }

  issue(issuer: Issued, p: { cn: string; ext?: string; key?: KeyType; days?: number }): Issued {
    const keyFile = this.#key(p.key ?? 'P-256');
    const csrFile = join(this.dir, `r${++this.#n}.csr`);
    const certFile = join(this.dir, `c${this.#n}.pem`);
    execFileSync('openssl', [
      'req',
      '-new',
      '-config',
      join(this.dir, 'ext.cnf'),
      '-key',
      keyFile,
      '-subj',
      `/CN=${p.cn}`,
      '-out',
      csrFile,
    ]);
    execFileSync('openssl', [
      'x509',
      '-req',
      '-in',
      csrFile,
      '-CA',
      issuer.certFile,
      '-CAkey',
      issuer.keyFile,
      '-set_serial',
      `0x${randomBytes(12).toString('hex')}`,
      '-days',
      String(p.days ?? 30),
      '-extfile',
      join(this.dir, 'ext.cnf'),
      '-extensions',
      p.ext ?? 'leaf',
      '-out',
      certFile,
    ]);
    return this.#result(certFile, keyFile);
  }
}

const hashFor = (keyPem: string): 'sha256' | 'sha384' =>
  createPrivateKey(keyPem).asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'sha384' : 'sha256';

const csrDer = (csrPem: string): Buffer => fromPem(csrPem, 'CERTIFICATE REQUEST');

const expectedNodeId = (certPem: string): string =>
  `x509pop-${createHash('sha256')
    .update(new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex')
    .slice(0, 16)}`;

describeEachBackend('x509pop attestation (issue 3)', (backend) => {
  const dir = tempDir();
  const pki = new OpensslPki(dir.path);
  const provisioning = pki.ca('Provisioning CA');
  const otherRoot = pki.ca('Provisioning Root');
  const intermediate = pki.issue(otherRoot, { cn: 'Provisioning Intermediate', ext: 'ca_pathlen0' });
  const strangerCa = pki.ca('Unknown CA');
  const bundleFile = join(dir.path, 'provisioning-bundle.pem');
  writeFileSync(bundleFile, provisioning.certPem + otherRoot.certPem);

  let t: TestServer;
  let plain: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ backend, serverFlags: { 'x509pop-ca': bundleFile } });
    plain = await startTestServer({ backend });
  });
  afterAll(async () => {
    await t?.close();
    await plain?.close();
    dir.cleanup();
  });
  // openssl 3.0 `x509 -req` stamps notBefore with the real time of issuance (no -not_before before
  // 3.4): each test starts the server clock a little after now, so certificates made during the
  // test (an RSA key takes a moment) are already valid.
  beforeEach(() => t.clock.set(new Date(Date.now() + 10_000)));

  const challenge = async (server = t, method: unknown = 'x509pop') =>
    https(`${server.url}/v1/attest/challenge`, {
      method: 'POST',
      body: JSON.stringify({ method }),
      ca: server.bundle,
    });

  const nonce = async (): Promise<string> => {
    const r = await challenge();
    expect(r.status).toBe(201);
    return r.json<{ nonce: string }>().nonce;
  };

  /** One attestation: a fresh node key and CSR, a proof by `signer` over `signedCsr` (default: that CSR). */
  const attestPop = async (p: { chain: string; signer: string; nonce?: string; signedCsrPem?: string }) => {
    const { csrPem, keyPem } = await keyAndCsr();
    const n = p.nonce ?? (await nonce());
    const data = x509popSignedBytes(n, csrDer(p.signedCsrPem ?? csrPem));
    const signature = sign(hashFor(p.signer), data, p.signer).toString('base64');
    const r = await attest(t, {
      method: 'x509pop',
      certificate_chain: p.chain,
      nonce: n,
      signature,
      csr: csrPem,
    });
    return { r, nonce: n, keyPem };
  };

  const expectFailed = (r: Awaited<ReturnType<typeof attest>>, secret?: string) => {
    expect(r.status).toBe(401);
    const e = errorBodyOf(r);
    expect(e.code).toBe('ERR_ATTESTATION_FAILED');
    if (secret) expect(e.message).not.toContain(secret);
  };

  const nonceRow = (n: string) => t.db.knex('attestation_nonces').where({ nonce: n }).first();

  it('ok/challenge: 201 with a 32-byte base64url nonce that expires in 5 minutes, stored in the database', async () => {
    const r = await challenge();
    expect(r.status).toBe(201);
    const b = r.json<{ nonce: string; expires_at: string }>();
    expect(b.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(b.nonce, 'base64url')).toHaveLength(32);
    expect(Date.parse(b.expires_at) - t.clock.now().getTime()).toBe(5 * 60_000);
    expect(await nonceRow(b.nonce)).toMatchObject({ method: 'x509pop', used_at: null });
    expect((await nonce()) === b.nonce).toBe(false);
  });

  it('ok/attest, then re-attest with the same provisioning certificate: the same node, a new SVID', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-a' });
    const first = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    expect(first.r.status).toBe(201);
    const b = first.r.json<IssuanceBody>();
    expect(b.node_id).toBe(expectedNodeId(leaf.certPem));
    expect(b.node_id).toMatch(/^x509pop-[0-9a-f]{16}$/);
    expect(b.spiffe_id).toBe(`spiffe://test.example.org/node/${b.node_id}`);
    expect(opensslText(b.certificate_chain)).toMatch(
      new RegExp(`Subject: O = test.example.org, OU = worker, CN = ${b.node_id}`),
    );
    expect(await t.ca.storage.nodes.findById(b.node_id!)).toMatchObject({
      role: 'worker',
      status: 'active',
      attestationMethod: 'x509pop',
    });
    expect((await nonceRow(first.nonce)).used_at).not.toBeNull();

    // Node SVIDs from x509pop follow the same profile: strict openssl verification.
    const [svid, inter] = b.certificate_chain.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    const f = writeFiles(dir.path, { 'bundle.pem': t.bundle, 'svid.pem': svid!, 'inter.pem': inter! });
    const v = run('openssl', [
      'verify',
      '-x509_strict',
      '-CAfile',
      f['bundle.pem']!,
      '-untrusted',
      f['inter.pem']!,
      f['svid.pem']!,
    ]);
    expect(v.out.trim()).toBe(`${f['svid.pem']}: OK`);

    t.clock.advance(30 * 24 * 3600_000 - 3600_000); // a month of downtime, still inside the provisioning cert
    const again = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    expect(again.r.status).toBe(201);
    const b2 = again.r.json<IssuanceBody>();
    expect(b2.node_id).toBe(b.node_id);
    expect(b2.serial).not.toBe(b.serial);
    expect((await t.ca.storage.certificates.findBySerial(b.serial))?.status).toBe('superseded');
  });

  it.each([
    ['ok/EC P-384 provisioning key (SHA-384)', 'P-384'],
    ['ok/RSA 2048 provisioning key (PKCS#1 v1.5, SHA-256)', 'RSA'],
  ] as const)('%s', async (_name, key) => {
    const leaf = pki.issue(provisioning, { cn: `node-${key}`, key });
    const { r } = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    expect(r.status).toBe(201);
    expect(r.json<IssuanceBody>().node_id).toBe(expectedNodeId(leaf.certPem));
  });

  it('ok/a chain through an intermediate to the second CA of the bundle', async () => {
    const leaf = pki.issue(intermediate, { cn: 'node-via-intermediate' });
    const { r } = await attestPop({ chain: leaf.certPem + intermediate.certPem, signer: leaf.keyPem });
    expect(r.status).toBe(201);
  });

  it('ok/the openssl recipe of docs/attestation.md signs the right bytes', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-openssl' });
    const n = await nonce();
    const csrFile = join(dir.path, 'node.csr');
    const script = [
      `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/node.key" -subj /CN=node -out "$D/node.csr" 2>/dev/null`,
      `CSR_HASH=$(openssl req -in "$D/node.csr" -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\\n')`,
      `printf 'baton-x509pop-v1\\n%s\\n%s' "$NONCE" "$CSR_HASH" > "$D/tosign.bin"`,
      `openssl dgst -sha256 -sign "$KEY" "$D/tosign.bin" | base64 | tr -d '\\n'`,
    ].join('\n');
    const signature = execFileSync('sh', ['-ec', script], {
      encoding: 'utf8',
      env: { ...process.env, D: dir.path, NONCE: n, KEY: leaf.keyFile },
    });
    const csr = execFileSync('openssl', ['req', '-in', csrFile], { encoding: 'utf8' });
    const r = await attest(t, {
      method: 'x509pop',
      certificate_chain: leaf.certPem,
      nonce: n,
      signature,
      csr,
    });
    expect(r.status).toBe(201);
  });

  it('ok/a nonce still works a second before it expires', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-late' });
    const n = await nonce();
    t.clock.advance(5 * 60_000 - 1000);
    expect((await attestPop({ chain: leaf.certPem, signer: leaf.keyPem, nonce: n })).r.status).toBe(201);
  });

  it('fail/a certificate from an unknown CA: 401 ERR_ATTESTATION_FAILED, nonce not spent', async () => {
    const leaf = pki.issue(strangerCa, { cn: 'intruder' });
    const { r, nonce: n } = await attestPop({
      chain: leaf.certPem + strangerCa.certPem,
      signer: leaf.keyPem,
    });
    expectFailed(r, n);
    expect(errorBodyOf(r).message).toBe('the certificate chain does not lead to a provisioning CA');
    expect((await nonceRow(n)).used_at).toBeNull();
  });

  it('fail/an expired provisioning certificate (clock moved past notAfter)', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-expiring', days: 1 });
    const n = await nonce();
    t.clock.advance(2 * 24 * 3600_000);
    const { r } = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    expectFailed(r, n);
    expect(errorBodyOf(r).message).toBe('a certificate in the chain is expired or not yet valid');
  });

  it('fail/a provisioning certificate that is not yet valid (clock before notBefore)', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-early' });
    t.clock.advance(-24 * 3600_000);
    expectFailed((await attestPop({ chain: leaf.certPem, signer: leaf.keyPem })).r);
  });

  it('fail/nonce reused: the second attestation with one nonce is refused', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-replay' });
    const first = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    expect(first.r.status).toBe(201);
    const second = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem, nonce: first.nonce });
    expectFailed(second.r, first.nonce);
    expect(errorBodyOf(second.r).message).toBe(
      'the nonce is unknown, expired or already used: request a new challenge',
    );
  });

  it('fail/nonce expired after 5 minutes', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-slow' });
    const n = await nonce();
    t.clock.advance(5 * 60_000);
    expectFailed((await attestPop({ chain: leaf.certPem, signer: leaf.keyPem, nonce: n })).r, n);
  });

  it('ok/the background job deletes expired nonces, used or not, and keeps live ones usable', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-purge' });
    const first = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    expect(first.r.status).toBe(201);
    const unused = await nonce();
    t.clock.advance(4 * 60_000);
    const live = await nonce();
    // The first two expire exactly now: `use` already refuses them, so they are only weight.
    t.clock.advance(60_000);
    await t.running.jobs.runOnce();
    expect(await nonceRow(first.nonce)).toBeUndefined();
    expect(await nonceRow(unused)).toBeUndefined();
    expect(await nonceRow(live)).toMatchObject({ used_at: null });
    expect((await attestPop({ chain: leaf.certPem, signer: leaf.keyPem, nonce: live })).r.status).toBe(201);
  });

  it('fail/a well-formed nonce the server never issued', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-forged-nonce' });
    const n = randomBytes(32).toString('base64url');
    expectFailed((await attestPop({ chain: leaf.certPem, signer: leaf.keyPem, nonce: n })).r, n);
  });

  it('fail/a join_token nonce is not an x509pop nonce', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-other-method' });
    const n = randomBytes(32).toString('base64url');
    await t.ca.storage.nonces.insert(n, 'join_token', new Date(t.clock.now().getTime() + 60_000));
    expectFailed((await attestPop({ chain: leaf.certPem, signer: leaf.keyPem, nonce: n })).r, n);
  });

  it('fail/signature over another CSR: a stolen nonce and signature do not work with another key', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-stolen' });
    const victimCsr = (await keyAndCsr()).csrPem;
    const { r, nonce: n } = await attestPop({
      chain: leaf.certPem,
      signer: leaf.keyPem,
      signedCsrPem: victimCsr,
    });
    expectFailed(r, n);
    expect(errorBodyOf(r).message).toBe(
      'the signature does not verify with the provisioning certificate key',
    );
    expect((await nonceRow(n)).used_at).toBeNull();
  });

  it('fail/signature by a key other than the provisioning certificate key', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-wrong-key' });
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    });
    expectFailed((await attestPop({ chain: leaf.certPem, signer: other as string })).r);
  });

  it('fail/the provisioning CA certificate itself, signed with the CA key: a CA is not a node', async () => {
    const { r } = await attestPop({ chain: provisioning.certPem, signer: provisioning.keyPem });
    expectFailed(r);
    expect(errorBodyOf(r).message).toBe('the provisioning certificate must not be a CA certificate');
  });

  it('fail/a provisioning certificate whose keyUsage lacks digitalSignature', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-ku', ext: 'leaf_no_digital_signature' });
    expectFailed((await attestPop({ chain: leaf.certPem, signer: leaf.keyPem })).r);
  });

  it('fail/an intermediate below a pathlen:0 CA in the chain is too long', async () => {
    const sub = pki.issue(intermediate, { cn: 'Sub-intermediate', ext: 'ca_pathlen0' });
    const leaf = pki.issue(sub, { cn: 'node-deep' });
    const { r } = await attestPop({
      chain: leaf.certPem + sub.certPem + intermediate.certPem,
      signer: leaf.keyPem,
    });
    expectFailed(r);
    expect(errorBodyOf(r).message).toBe('the certificate chain is too long');
  });

  it('fail/a revoked node cannot re-attest, and the refusal spends nothing', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-revoked' });
    const first = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    const nodeId = first.r.json<IssuanceBody>().node_id!;
    await t.db.knex('nodes').where({ id: nodeId }).update({ status: 'revoked', revoked_at: t.clock.now() });
    const again = await attestPop({ chain: leaf.certPem, signer: leaf.keyPem });
    expect(again.r.status).toBe(403);
    expect(errorBodyOf(again.r).code).toBe('ERR_NODE_REVOKED');
    expect((await nonceRow(again.nonce)).used_at).toBeNull();
  });

  it.each([
    ['fail/no certificate_chain', { certificate_chain: undefined }, 'certificate_chain'],
    ['fail/certificate_chain not PEM', { certificate_chain: 'hello' }, 'certificate_chain'],
    [
      'fail/certificate_chain with a broken certificate',
      { certificate_chain: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' },
      'certificate_chain',
    ],
    ['fail/no nonce', { nonce: undefined }, 'nonce'],
    ['fail/nonce too short', { nonce: 'abc' }, 'nonce'],
    ['fail/nonce not base64url', { nonce: `${'a'.repeat(42)}+` }, 'nonce'],
    ['fail/no signature', { signature: undefined }, 'signature'],
    ['fail/signature not base64', { signature: 'not base64!' }, 'signature'],
    ['fail/signature a number', { signature: 42 }, 'signature'],
  ])('%s: 400 ERR_BAD_REQUEST naming the field', async (_name, override, field) => {
    const leaf = provisioning; // never reaches the chain check
    const { csrPem } = await keyAndCsr();
    const r = await attest(t, {
      method: 'x509pop',
      certificate_chain: leaf.certPem,
      nonce: randomBytes(32).toString('base64url'),
      signature: randomBytes(64).toString('base64'),
      csr: csrPem,
      ...override,
    });
    expect(r.status).toBe(400);
    expect(errorBodyOf(r).code).toBe('ERR_BAD_REQUEST');
    expect(errorBodyOf(r).message).toMatch(new RegExp(`^${field}: `));
  });

  it('fail/method name in the wrong case: X509POP is unknown, on attest and on challenge', async () => {
    const leaf = pki.issue(provisioning, { cn: 'node-case' });
    const n = await nonce();
    const { csrPem } = await keyAndCsr();
    const signature = sign('sha256', x509popSignedBytes(n, csrDer(csrPem)), leaf.keyPem).toString('base64');
    const r = await attest(t, {
      method: 'X509POP',
      certificate_chain: leaf.certPem,
      nonce: n,
      signature,
      csr: csrPem,
    });
    expect(r.status).toBe(400);
    expect(errorBodyOf(r).code).toBe('ERR_ATTESTATION_METHOD_UNKNOWN');
    expect((await nonceRow(n)).used_at).toBeNull();
    const c = await challenge(t, 'X509POP');
    expect(c.status).toBe(400);
    expect(errorBodyOf(c).code).toBe('ERR_ATTESTATION_METHOD_UNKNOWN');
  });

  it.each([
    ['fail/join_token takes no challenge', 'join_token', 'ERR_BAD_REQUEST'],
    ['fail/no method', null, 'ERR_ATTESTATION_METHOD_UNKNOWN'],
  ])('%s: challenge refused', async (_name, method, code) => {
    const r = await challenge(t, method);
    expect(r.status).toBe(400);
    expect(errorBodyOf(r).code).toBe(code);
  });

  it('fail/x509pop when not configured: 400 ERR_ATTESTATION_METHOD_UNKNOWN on challenge and attest', async () => {
    const c = await challenge(plain);
    expect(c.status).toBe(400);
    expect(errorBodyOf(c)).toEqual({
      code: 'ERR_ATTESTATION_METHOD_UNKNOWN',
      message: 'unknown attestation method; supported: join_token, tpm',
    });
    const leaf = pki.issue(provisioning, { cn: 'node-unconfigured' });
    const { csrPem } = await keyAndCsr();
    const n = randomBytes(32).toString('base64url');
    const signature = sign('sha256', x509popSignedBytes(n, csrDer(csrPem)), leaf.keyPem).toString('base64');
    const r = await attest(plain, {
      method: 'x509pop',
      certificate_chain: leaf.certPem,
      nonce: n,
      signature,
      csr: csrPem,
    });
    expect(r.status).toBe(400);
    expect(errorBodyOf(r).code).toBe('ERR_ATTESTATION_METHOD_UNKNOWN');
  });
});
