import { X509Certificate, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { responderKeyHash } from '../../services/ca/src/pki/ocsp';
import { describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { attestedNode } from '../support/node-client';
import { startTestServer, type TestServer } from '../support/test-server';
import { ocspQuery } from '../support/revocation-checks';
import { itWithTool, run, tempDir, writeFiles } from '../support/tools';

const certsOf = (chain: string) =>
  chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g)!;

/** RFC 6960 §4.2.1 KeyHash of a certificate's key, as `openssl ocsp -resp_text` prints the Responder Id. */
const keyHashOf = (pem: string): string =>
  responderKeyHash(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }))
    .toString('hex')
    .toUpperCase();

describeEachBackend('OCSP responder (RFC 6960) checked by openssl ocsp', (backend) => {
  let t: TestServer;
  const dir = tempDir();
  beforeAll(async () => {
    t = await startTestServer({ backend });
  });
  afterAll(async () => {
    await t.close();
    dir.cleanup();
  });

  /** Asks about a leaf (or a bare serial) under `issuerPem`; the answer verified with the roots only. */
  const ocsp = (issuerPem: string, target: { certPem: string } | { serial: string }) =>
    ocspQuery({ url: t.url, bundle: t.bundle, dir: dir.path, issuerPem, ...target });

  it('answers good, then revoked with time and reason after a revocation, with the nonce echoed', async () => {
    const n = await attestedNode(t);
    const [leaf, inter] = certsOf(n.cert);
    const good = await ocsp(inter!, { certPem: leaf! });
    expect(good.verified).toBe(true);
    expect(good.status).toBe('good');
    expect(good.out).toMatch(/OCSP Nonce:/);
    const admin = await t.issueAdmin();
    const r = await https(`${t.url}/v1/admin/nodes/${n.body.node_id}/revoke`, {
      method: 'POST',
      body: '{"reason":"key-compromise"}',
      ca: t.bundle,
      ...admin,
    });
    expect(r.status).toBe(200);
    const revoked = await ocsp(inter!, { certPem: leaf! });
    expect(revoked.verified).toBe(true);
    expect(revoked.status).toBe('revoked');
    expect(revoked.out).toMatch(/Reason: keyCompromise/);
    expect(revoked.out).toMatch(/Revocation Time: /);
  });

  it('answers unknown, signed by the CA named in the request, for a serial that CA never issued', async () => {
    const n = await attestedNode(t);
    const [, inter] = certsOf(n.cert);
    // RFC 6960 §2.2: "unknown" is for a CertID naming our CA (issuer name and key hashes) whose
    // serial it never issued. 20 random octets: not a serial Baton wrote.
    const serial = `7f${randomBytes(19).toString('hex')}`;
    const out = await ocsp(inter!, { serial });
    expect(out.verified).toBe(true);
    expect(out.status).toBe('unknown');
    // Signed by that CA, whose certificate travels in `certs` (§4.2.1): the roots alone verify it.
    expect(out.out).toContain(`Responder Id: ${keyHashOf(inter!)}`);
  });

  it('answers unauthorized (RFC 6960 §2.3), unsigned, about a certificate of another CA', async () => {
    const other = await startTestServer({ backend: 'pglite' });
    try {
      const foreign = await attestedNode(other);
      const [fleaf, finter] = certsOf(foreign.cert);
      const out = await ocsp(finter!, { certPem: fleaf! });
      expect(out.status).toBe('unauthorized');
      expect(out.der).toEqual(Buffer.from('30030a0106', 'hex'));
      // An answer (HTTP 200), never cached: a later CA of ours might be asked the same.
      const f = writeFiles(dir.path, { 'f-leaf.pem': fleaf!, 'f-inter.pem': finter! });
      const reqFile = `${dir.path}/foreign-req.der`;
      run('openssl', ['ocsp', '-issuer', f['f-inter.pem']!, '-cert', f['f-leaf.pem']!, '-reqout', reqFile]);
      const r = await https(`${t.url}/v1/ocsp`, {
        method: 'POST',
        body: readFileSync(reqFile),
        ca: t.bundle,
      });
      expect([r.status, r.headers['content-type'], r.headers['cache-control']]).toEqual([
        200,
        'application/ocsp-response',
        'no-store',
      ]);
      expect(r.body).toEqual(out.der);
      // The same leaf named under our CA's key but its own issuer name: still not ours to answer.
      const [, inter] = certsOf((await attestedNode(t)).cert);
      const mixed = await ocsp(inter!, { certPem: fleaf! });
      expect(mixed.status).toBe('unauthorized');
    } finally {
      await other.close();
    }
  });

  // GnuTLS checks a stapled OCSP answer against the issuer of the certificate in question
  // (gnutls_ocsp_resp_verify_direct): `ocsptool --load-signer`. Its trust-list mode (--load-trust)
  // accepts only a signer that is itself an anchor or a delegated responder with id-kp-OCSPSigning,
  // which an issuing CA answering for itself (RFC 6960 §4.2.2.2) is not: see docs/revocation.md.
  itWithTool(
    'ocsptool',
    'answers verify with GnuTLS ocsptool against the issuing CA, and not against another key',
    async () => {
      const n = await attestedNode(t);
      const [leaf, inter] = certsOf(n.cert);
      const answers = {
        good: await ocsp(inter!, { certPem: leaf! }),
        unknown: await ocsp(inter!, { serial: `7f${randomBytes(19).toString('hex')}` }),
      };
      const f = writeFiles(dir.path, { 'signer.pem': inter!, 'root.pem': certsOf(t.bundle)[0]! });
      for (const [status, q] of Object.entries(answers)) {
        const respFile = `${dir.path}/gnutls-${status}.der`;
        writeFileSync(respFile, q.der);
        const verify = (signer: string) =>
          run('ocsptool', ['--verify-response', '--load-signer', signer, '--infile', respFile]);
        const ok = verify(f['signer.pem']!);
        expect({ status, out: ok.out, code: ok.status }).toMatchObject({ status, code: 0 });
        expect(ok.out).toMatch(/Verifying OCSP Response: Success/);
        const wrong = verify(f['root.pem']!);
        expect(wrong.status).not.toBe(0);
        expect(wrong.out).toMatch(/Verifying OCSP Response: Failure/);
        const info = run('ocsptool', ['--response-info', '--infile', respFile]);
        expect(info.out).toMatch(new RegExp(`Certificate Status: ${status}`));
      }
    },
  );

  it('serves GET requests with the base64 DER in the path, cacheable without a nonce', async () => {
    const n = await attestedNode(t);
    const [leaf, inter] = certsOf(n.cert);
    const f = writeFiles(dir.path, { 'leaf.pem': leaf!, 'inter.pem': inter! });
    const reqFile = `${dir.path}/req.der`;
    run('openssl', [
      'ocsp',
      '-issuer',
      f['inter.pem']!,
      '-cert',
      f['leaf.pem']!,
      '-no_nonce',
      '-reqout',
      reqFile,
    ]);
    const b64 = readFileSync(reqFile).toString('base64');
    const r = await https(`${t.url}/v1/ocsp/${encodeURIComponent(b64)}`, { ca: t.bundle });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/ocsp-response');
    expect(String(r.headers['cache-control'])).toMatch(/max-age=\d+/);
    const respFile = `${dir.path}/resp.der`;
    writeFileSync(respFile, r.body);
    // Verified with the roots alone (no -issuer: see ocspQuery).
    const fb = writeFiles(dir.path, { 'roots.pem': t.bundle });
    const v = run('openssl', ['ocsp', '-respin', respFile, '-CAfile', fb['roots.pem']!, '-resp_text']);
    expect(v.out).toMatch(/^Response verify OK$/m);
    expect(v.out).toMatch(/Cert Status: good/);
  });

  // RFC 6960 §2.3: an unsigned malformedRequest response, read here by openssl, not our parser.
  const expectMalformed = (r: Awaited<ReturnType<typeof https>>) => {
    expect(r.status).toBe(400);
    expect(r.headers['content-type']).toBe('application/ocsp-response');
    const file = `${dir.path}/malformed.der`;
    writeFileSync(file, r.body);
    const read = run('openssl', ['ocsp', '-respin', file, '-resp_text']);
    expect(read.out).toMatch(/Responder Error: malformedrequest \(1\)/);
  };

  it.each([
    ['fail/garbage body', Buffer.from('hello')],
    ['fail/empty body', Buffer.alloc(0)],
    ['fail/truncated DER', Buffer.from([0x30, 0x82, 0x01])],
    ['fail/an empty SEQUENCE', Buffer.from('3000', 'hex')],
  ])('%s: 400 with the OCSP malformedRequest response', async (_name, body) => {
    expectMalformed(
      await https(`${t.url}/v1/ocsp`, {
        method: 'POST',
        body,
        ca: t.bundle,
        headers: { 'content-type': 'application/ocsp-request' },
      }),
    );
  });

  it.each([
    ['fail/not base64', '!!!'],
    ['fail/a stray percent after decoding', '%25ZZ'],
    ['fail/base64 of garbage', Buffer.from('hello').toString('base64')],
  ])('%s on GET: 400 with the OCSP malformedRequest response', async (_name, path) => {
    expectMalformed(await https(`${t.url}/v1/ocsp/${path}`, { ca: t.bundle }));
  });
});
