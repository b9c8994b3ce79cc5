import { X509Certificate } from 'node:crypto';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { baton, type ServerProcess, startServerProcess } from '../support/cli';
import { describeWithTool, run, tempDir, writeFiles } from '../support/tools';

/**
 * `--public-http-url` (issue 18, profile): CRL Distribution Points and OCSP URLs are plain http
 * (RFC 5280 §4.2.1.13; RFC 6960 Appendix A), served by a publication listener that answers only the
 * bundle, the CRLs and OCSP. Proven with openssl fetching by itself: `verify -crl_download` follows
 * the certificates' CDPs over HTTP, and `openssl ocsp -url` asks the OCSP URL.
 */

const TD = 'pub.example.org';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function httpGet(url: string, method = 'GET'): Promise<{ status: number; body: Buffer; type?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks),
          type: res.headers['content-type'],
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describeWithTool('openssl', 'the plain-HTTP publication listener (--public-http-url)', () => {
  const dir = tempDir('baton-pubhttp-');
  const dataDir = join(dir.path, 'data');
  let server: ServerProcess;
  let http: string;
  let admin: string[];

  beforeAll(async () => {
    const port = await freePort();
    http = `http://127.0.0.1:${port}`;
    const init = baton([
      'ca',
      'init',
      '--trust-domain',
      TD,
      '--data-dir',
      dataDir,
      '--public-http-url',
      http,
    ]);
    expect(init.stderr).toBe('');
    expect(init.status).toBe(0);
    server = await startServerProcess(['--data-dir', dataDir, '--listen-http', `127.0.0.1:${port}`]);
    admin = ['--server', server.url, '--admin-dir', join(dataDir, 'admin')];
  });
  afterAll(async () => {
    await server?.stop();
    dir.cleanup();
  });

  it('says where it publishes, and serves only the bundle, the CRLs, OCSP and OIDC discovery there', async () => {
    const deadline = Date.now() + 5000;
    while (!server.stdout().includes(`listening on ${http}`) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(server.stdout()).toContain(`listening on ${http}\n`);
    const bundle = await httpGet(`${http}/v1/bundle`);
    expect(bundle.status).toBe(200);
    expect(new X509Certificate(bundle.body).subject).toContain(`O=${TD}`);
    expect((await httpGet(`${http}/v1/crl`)).type).toBe('application/pkix-crl');
    expect((await httpGet(`${http}/v1/crl.pem`)).body.toString()).toMatch(/^-----BEGIN X509 CRL-----/);
    // The OIDC discovery document and the key set it names, for relying parties without TLS trust.
    const discovery = JSON.parse((await httpGet(`${http}/.well-known/openid-configuration`)).body.toString());
    // The issuer is the public https URL given at init (the default), wherever the document is read.
    expect(discovery.issuer).toBe('https://127.0.0.1:8443');
    const jwksPath = new URL(discovery.jwks_uri).pathname;
    expect(JSON.parse((await httpGet(`${http}${jwksPath}`)).body.toString()).keys.length).toBeGreaterThan(0);
    for (const [path, method] of [
      ['/v1/admin/nodes', 'GET'],
      ['/v1/attest', 'POST'],
      ['/v1/entries', 'GET'],
      ['/healthz', 'GET'],
      ['/metrics', 'GET'],
    ] as const) {
      const r = await httpGet(`${http}${path}`, method);
      expect({ path, status: r.status, code: JSON.parse(r.body.toString()).error.code }).toEqual({
        path,
        status: 404,
        code: 'ERR_NOT_FOUND',
      });
    }
  });

  it('the profile details zlint checks (RFC 5280, RFC 5480), read with openssl on leaf, signing CA and root', async () => {
    const token = baton(['token', 'create', '--role', 'worker', ...admin]).stdout.trim();
    const nodeDir = join(dir.path, 'lint-node');
    expect(
      baton(['agent', '--server', server.url, '--token', token, '--dir', nodeDir, '--once']).status,
    ).toBe(0);
    const chain = run('cat', [join(nodeDir, 'node', 'cert.pem')]).out;
    const [leafPem, interPem] = chain.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    const rootPem = (await httpGet(`${http}/v1/bundle`)).body.toString();
    const f = writeFiles(dir.path, {
      'lint-leaf.pem': leafPem!,
      'lint-inter.pem': interPem!,
      'lint-root.pem': rootPem,
    });
    const text = (file: string) => run('openssl', ['x509', '-noout', '-text', '-in', file]).out;
    const asn1 = (file: string) => run('openssl', ['asn1parse', '-in', file]).out;
    const td = `spiffe://${TD}`;
    for (const [name, file] of [
      ['leaf', f['lint-leaf.pem']!],
      ['signing CA', f['lint-inter.pem']!],
      ['root', f['lint-root.pem']!],
    ] as const) {
      const t = text(file);
      const context = { certificate: name };
      // e_serial_number_longer_than_20_octets, e_serial_number_not_positive.
      const serial = /Serial Number:\s*\n?\s*([0-9a-f:]+)/i.exec(t)![1]!.split(':').filter(Boolean);
      expect({
        ...context,
        octets: serial.length <= 20,
        positive: Number.parseInt(serial[0]!, 16) < 0x80,
      }).toEqual({
        ...context,
        octets: true,
        positive: true,
      });
      // RFC 5480 §2.1.1 / §4: a P-256 key, signed ecdsa-with-SHA256.
      expect(t).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
      expect(t).toMatch(/ASN1 OID: prime256v1/);
      // e_utc_time / e_wrong_time_format_pre2050: validity dates before 2050 are UTCTime.
      expect(asn1(file).match(/UTCTIME/g)).toHaveLength(2);
      // e_ext_san_critical_with_subject_dn: the subject is not empty, so the SAN is not critical.
      expect(t).toMatch(/X509v3 Subject Alternative Name: \n/);
      expect(t).toMatch(/X509v3 Key Usage: critical/);
      expect(t).toMatch(/X509v3 Basic Constraints: critical/);
      expect(t).toMatch(/X509v3 Subject Key Identifier:/);
      expect(t).toMatch(/X509v3 Authority Key Identifier:\s*\n\s*(keyid:)?[0-9A-F]{2}:/);
      // w_distribution_point_missing_ldap_or_uri and RFC 5280 §4.2.1.13: http, never https.
      expect(t).not.toMatch(/URI:https:\/\/[^\n]*\/v1\/(crl|ocsp)/);
    }
    const leaf = text(f['lint-leaf.pem']!);
    // RFC 5480 §3: an EC key: digitalSignature, never keyEncipherment (e_ec_key_usage…).
    expect(leaf).toMatch(/X509v3 Key Usage: critical\s*\n\s*Digital Signature\s*\n/);
    expect(leaf).toMatch(/CA:FALSE/);
    expect(leaf).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(leaf).toMatch(new RegExp(`URI:${td}/node/[a-z2-7]+`));
    expect(leaf).toMatch(new RegExp(`CRL Distribution Points:[\\s\\S]*?URI:${http}/v1/crl`));
    expect(leaf).toContain(`OCSP - URI:${http}/v1/ocsp`);
    const inter = text(f['lint-inter.pem']!);
    expect(inter).toMatch(/CA:TRUE, pathlen:0/);
    expect(inter).toMatch(/Certificate Sign, CRL Sign/);
    expect(inter).toMatch(new RegExp(`CRL Distribution Points:[\\s\\S]*?URI:${http}/v1/crl`));
    expect(inter).toMatch(new RegExp(`X509v3 Subject Alternative Name: \\n\\s*URI:${td}\\n`));
    const root = text(f['lint-root.pem']!);
    expect(root).toMatch(/CA:TRUE, pathlen:1/);
    expect(root).toMatch(/Certificate Sign, CRL Sign/);
    expect(root).not.toMatch(/CRL Distribution Points/);
    expect(root).toMatch(new RegExp(`X509v3 Subject Alternative Name: \\n\\s*URI:${td}\\n`));
  });

  it('certificates point at it, and openssl fetches the CRLs and asks OCSP there by itself', async () => {
    const token = baton(['token', 'create', '--role', 'worker', ...admin]).stdout.trim();
    const nodeDir = join(dir.path, 'node');
    const attested = baton(['agent', '--server', server.url, '--token', token, '--dir', nodeDir, '--once']);
    expect(attested.status).toBe(0);
    const chain = run('cat', [join(nodeDir, 'node', 'cert.pem')]).out;
    const [leafPem, interPem] = chain.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    const rootPem = (await httpGet(`${http}/v1/bundle`)).body.toString();
    const f = writeFiles(dir.path, { 'leaf.pem': leafPem!, 'inter.pem': interPem!, 'root.pem': rootPem });
    for (const pem of [leafPem!, interPem!]) {
      const text = run('openssl', [
        'x509',
        '-noout',
        '-text',
        '-in',
        pem === leafPem ? f['leaf.pem']! : f['inter.pem']!,
      ]).out;
      expect(text).toMatch(
        new RegExp(`CRL Distribution Points:[\\s\\S]*?URI:${http}/v1/crl\\?issuer=ca-[0-9a-f]+`),
      );
      if (pem === leafPem) expect(text).toContain(`OCSP - URI:${http}/v1/ocsp`);
      expect(text).not.toMatch(/URI:https:\/\/[^\n]*\/v1\/(crl|ocsp)/);
    }
    // -crl_check (the certificate verified, not its issuers: a root has no CDP) with -crl_download:
    // openssl fetches the CRL from the certificate's own Distribution Point.
    const verify = (cert = f['leaf.pem']!) =>
      run('openssl', [
        'verify',
        '-x509_strict',
        '-crl_check',
        '-crl_download',
        '-CAfile',
        f['root.pem']!,
        ...(cert === f['leaf.pem'] ? ['-untrusted', f['inter.pem']!] : []),
        cert,
      ]);
    const ocsp = () =>
      run('openssl', [
        'ocsp',
        '-issuer',
        f['inter.pem']!,
        '-cert',
        f['leaf.pem']!,
        '-url',
        `${http}/v1/ocsp`,
        '-CAfile',
        f['root.pem']!,
        '-VAfile',
        f['inter.pem']!,
      ]);
    expect(verify().out).toContain('leaf.pem: OK');
    // The intermediate's CDP (the root's CRL) is http too, and openssl fetches it there.
    expect(verify(f['inter.pem']!).out).toContain('inter.pem: OK');
    expect(ocsp().out).toMatch(/leaf\.pem: good/);

    const nodeId = JSON.parse(run('cat', [join(nodeDir, 'state.json')]).out).node_id as string | undefined;
    const id = nodeId ?? new X509Certificate(leafPem!).subject.match(/CN=([a-z2-7]+)/)![1]!;
    expect(baton(['node', 'revoke', id, '--reason', 'key-compromise', ...admin]).status).toBe(0);
    expect(verify().out).toMatch(/certificate revoked/);
    expect(ocsp().out).toMatch(/leaf\.pem: revoked/);
  });
});
