import { join } from 'node:path';
import type { OpenCa } from '../../services/ca/src/ca-service';
import { loadServerConfig } from '../../services/ca/src/config';
import { createLogger } from '../../services/ca/src/logger';
import { fromPem } from '../../services/ca/src/pki/der-reader';
import { tpmQualifyingData } from '../../services/ca/src/pki/tpm';
import { type RunningServer, startServer } from '../../services/ca/src/server/start-server';
import { describeEachBackend } from '../support/database';
import { issueEkCertificate } from '../support/ek-certificates';
import { errorBodyOf } from '../support/errors';
import { callAs, type HttpsResult, https } from '../support/https';
import { type IssuanceBody, keyAndCsr } from '../support/node-client';
import {
  type ManufacturerCa,
  manufacturerCa,
  type SoftwareTpm,
  startSwtpm,
  SWTPM_TOOLS,
} from '../support/swtpm';
import { startTestServer, type TestServer } from '../support/test-server';
import {
  type TpmChallengeBody as ChallengeBody,
  type TpmExchange,
  type TpmNode,
  tpmAnswerBody,
  tpmExchange,
  tpmIsClean,
  tpmNode,
} from '../support/tpm-node';
import { describeWith, opensslText, run, tempDir, writeFiles } from '../support/tools';

/**
 * Issue 19: TPM node attestation over HTTPS, the node's side driven by tpm2-tools on software TPMs
 * (swtpm) exactly as docs/api.md "TPM attestation" describes it: enrolled EKs, EK certificates
 * from swtpm_setup's manufacturer CA, the refusals, the revocation ban, and malformed input.
 */

const b64 = (b: Buffer) => b.toString('base64');

describeWith(SWTPM_TOOLS, 'TPM attestation over HTTPS (issue 19)', () => {
  const dir = tempDir('baton-tpm-http-');
  let maker: ManufacturerCa;
  const tpms: SoftwareTpm[] = [];
  /** A: manufactured with an RSA EK certificate. B, C, D: no certificate. */
  let withCert: TpmNode;
  let rsaNode: TpmNode;
  let eccNode: TpmNode;
  let stranger: TpmNode;
  /** A's ECC EK, whose P-256 EK certificate the test signs with the manufacturer's key. */
  let eccWithCert: TpmNode;
  let eccCertificate: Buffer;

  beforeAll(async () => {
    maker = manufacturerCa(dir.path);
    const a = await startSwtpm({ manufacturer: maker });
    tpms.push(a, await startSwtpm(), await startSwtpm(), await startSwtpm());
    withCert = await tpmNode(a);
    eccWithCert = await tpmNode(a, { ekType: 'ecc' });
    rsaNode = await tpmNode(tpms[1]!);
    eccNode = await tpmNode(tpms[2]!, { ekType: 'ecc' });
    stranger = await tpmNode(tpms[3]!);
    // swtpm_setup makes a P-384 ECC EK certificate; the default ECC EK is P-256: one for it, signed
    // with the manufacturer's EK-issuing key as swtpm_localca would.
    const state = join(maker.dir, 'state');
    eccCertificate = issueEkCertificate(
      dir.path,
      { certFile: join(state, 'issuercert.pem'), keyFile: join(state, 'signkey.pem') },
      eccWithCert.ekSpki,
    );
  }, 120_000);
  afterAll(async () => {
    for (const t of tpms) await t.stop();
    dir.cleanup();
  });

  describeEachBackend('the exchange', (backend) => {
    let t: TestServer;
    let admin: { cert: string; key: string };
    const replicas: RunningServer[] = [];

    beforeAll(async () => {
      t = await startTestServer({ backend });
      // swtpm_setup stamped the EK certificates with the real time: the server's clock follows.
      t.clock.set(new Date(Date.now() + 60_000));
      admin = await t.issueAdmin('admin');
    });
    afterAll(async () => {
      for (const r of replicas) await r.close();
      await t?.close();
    });

    const adminCall = (method: string, path: string, body?: unknown) => callAs(t, admin, method, path, body);
    const enroll = async (node: TpmNode, role = 'worker') => {
      const r = await adminCall('POST', '/v1/admin/tpm/enrollments', { ek_id: node.ekId, role });
      expect(r.status).toBe(201);
      return r.json<{ ek_id: string; node_id: string; role: string; reinstated: boolean }>();
    };
    const postChallenge = (body: Record<string, unknown>, url = t.url) =>
      https(`${url}/v1/attest/challenge`, { method: 'POST', body: JSON.stringify(body), ca: t.bundle });
    const postAttest = (body: Record<string, unknown>, url = t.url) =>
      https(`${url}/v1/attest`, { method: 'POST', body: JSON.stringify(body), ca: t.bundle });

    const exchange = (node: TpmNode, o: Parameters<typeof tpmExchange>[2] & { url?: string } = {}) =>
      tpmExchange({ url: o.url ?? t.url, bundle: t.bundle }, node, o);

    const expectIssued = (x: TpmExchange, nodeId: string) => {
      expect(x.challenge.status).toBe(201);
      expect(x.r?.status).toBe(201);
      const b = x.r!.json<IssuanceBody>();
      expect(b.node_id).toBe(nodeId);
      return b;
    };
    const nodeIdOf = (node: TpmNode) => `tpm-${node.ekId.slice(0, 20)}`;
    const expectRefused = (r: HttpsResult | undefined, status: number, code: string, message?: string) => {
      expect(r?.status).toBe(status);
      const e = errorBodyOf(r!);
      expect(e.code).toBe(code);
      if (message) expect(e.message).toBe(message);
    };
    const lastRefusal = async () =>
      (await t.ca.storage.audit.list({ event: 'node.attestation_refused', limit: 1 }))[0];

    it('ok/an enrolled RSA EK joins: 201 challenge with the credential, the full exchange, a node tpm-<20 hex>', async () => {
      const e = await enroll(rsaNode, 'manager');
      expect(e).toEqual({
        ek_id: rsaNode.ekId,
        node_id: nodeIdOf(rsaNode),
        role: 'manager',
        reinstated: false,
      });
      const x = await exchange(rsaNode);
      const c = x.c!;
      expect(c.nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(Date.parse(c.expires_at) - t.clock.now().getTime()).toBe(5 * 60_000);
      // TPM2B_ID_OBJECT (70 bytes for SHA-256) and TPM2B_ENCRYPTED_SECRET (RSA 2048: 2 + 256).
      expect(Buffer.from(c.credential_blob, 'base64')).toHaveLength(70);
      expect(Buffer.from(c.encrypted_secret, 'base64')).toHaveLength(258);
      const b = expectIssued(x, nodeIdOf(rsaNode));
      expect(b.spiffe_id).toBe(`spiffe://test.example.org/node/${b.node_id}`);
      expect(opensslText(b.certificate_chain)).toContain(
        `Subject: O = test.example.org, OU = manager, CN = ${b.node_id}`,
      );
      const [svid, inter] = b.certificate_chain.match(
        /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g,
      )!;
      const f = writeFiles(dir.path, { 'bundle.pem': t.bundle, 'svid.pem': svid!, 'inter.pem': inter! });
      expect(
        run('openssl', [
          'verify',
          '-x509_strict',
          '-CAfile',
          f['bundle.pem']!,
          '-untrusted',
          f['inter.pem']!,
          f['svid.pem']!,
        ]).out.trim(),
      ).toBe(`${f['svid.pem']}: OK`);
      // Stored: the nonce (method tpm, spent), the challenge with the secret's hash only.
      const nonce = await t.db.knex('attestation_nonces').where({ nonce: c.nonce }).first();
      expect(nonce).toMatchObject({ method: 'tpm' });
      expect(nonce.used_at).not.toBeNull();
      const [attested] = await t.ca.storage.audit.list({ event: 'node.attested', limit: 1 });
      expect(attested!.details).toMatchObject({
        method: 'tpm',
        ek_id: rsaNode.ekId,
        admitted_by: 'enrollment',
      });
      expect(await tpmIsClean(rsaNode.tpm)).toBe(true);
    }, 60_000);

    it('ok/the same TPM gets the same node id every time; two TPMs never the same', async () => {
      await enroll(rsaNode, 'manager');
      await enroll(eccNode);
      const first = expectIssued(await exchange(rsaNode), nodeIdOf(rsaNode));
      const again = expectIssued(await exchange(rsaNode), nodeIdOf(rsaNode));
      expect(again.serial).not.toBe(first.serial);
      const other = expectIssued(await exchange(eccNode), nodeIdOf(eccNode));
      expect(other.node_id).not.toBe(first.node_id);
      expect(new Set([rsaNode.ekId, eccNode.ekId, withCert.ekId, eccWithCert.ekId, stranger.ekId]).size).toBe(
        5,
      );
    }, 60_000);

    it('ok/an enrolled ECC P-256 EK joins (the credential travels as an ephemeral point)', async () => {
      await enroll(eccNode);
      const x = await exchange(eccNode);
      expect(Buffer.from(x.c!.encrypted_secret, 'base64')).toHaveLength(70);
      expectIssued(x, nodeIdOf(eccNode));
    }, 60_000);

    it('ok/EK certificates under a trusted manufacturer CA join with its role: swtpm_setup RSA, and a P-256 one', async () => {
      const before = await exchange(withCert);
      expectRefused(
        before.challenge,
        401,
        'ERR_ATTESTATION_FAILED',
        'unknown TPM: the EK certificate is not issued by a manufacturer CA',
      );
      const add = await adminCall('POST', '/v1/admin/tpm/cas', {
        pem: maker.rootPem() + maker.issuerPem(),
        role: 'manager',
      });
      expect(add.status).toBe(201);
      const cas = add.json<{ cas: { fingerprint: string; subject: string; role: string }[] }>().cas;
      expect(cas.map((c) => [c.subject, c.role])).toEqual([
        ['CN=swtpm-localca-rootca', 'manager'],
        ['CN=swtpm-localca', 'manager'],
      ]);
      const b = expectIssued(await exchange(withCert), nodeIdOf(withCert));
      expect(opensslText(b.certificate_chain)).toContain('OU = manager');
      const [attested] = await t.ca.storage.audit.list({ event: 'node.attested', limit: 1 });
      expect(attested!.details).toMatchObject({
        ek_id: withCert.ekId,
        admitted_by: `manufacturer_ca:${cas[1]!.fingerprint}`,
      });
      const ecc = await exchange(eccWithCert, { fields: { ek_certificate: b64(eccCertificate) } });
      expectIssued(ecc, nodeIdOf(eccWithCert));
      // Without its certificate, the same TPM is unknown.
      expectRefused(
        (await exchange(withCert, { withCertificate: false })).challenge,
        401,
        'ERR_ATTESTATION_FAILED',
      );
      const list = await adminCall('GET', '/v1/admin/tpm/cas');
      expect(list.json<{ cas: unknown[] }>().cas).toHaveLength(2);
    }, 60_000);

    it('fail/an unknown TPM: 401 at the challenge, an audit row naming its EK id', async () => {
      const x = await exchange(stranger);
      expectRefused(
        x.challenge,
        401,
        'ERR_ATTESTATION_FAILED',
        'unknown TPM: its EK is not enrolled and it has no EK certificate',
      );
      expect(await lastRefusal()).toMatchObject({
        outcome: 'failure',
        details: { method: 'tpm', step: 'challenge', code: 'ERR_ATTESTATION_FAILED', ek_id: stranger.ekId },
      });
    }, 60_000);

    it('fail/EK certificates with the wrong key or an unknown critical extension', async () => {
      await adminCall('POST', '/v1/admin/tpm/cas', { pem: maker.rootPem() + maker.issuerPem() });
      // stranger's EK with withCert's certificate.
      const wrongKey = await exchange(stranger, { fields: { ek_certificate: b64(withCert.ekCertificate!) } });
      expectRefused(
        wrongKey.challenge,
        401,
        'ERR_ATTESTATION_FAILED',
        'unknown TPM: the EK certificate is for another key',
      );
      const state = join(maker.dir, 'state');
      const critical = issueEkCertificate(
        dir.path,
        { certFile: join(state, 'issuercert.pem'), keyFile: join(state, 'signkey.pem') },
        stranger.ekSpki,
        { extra: ['1.3.6.1.4.1.99999.1=critical,DER:0500'] },
      );
      const x = await exchange(stranger, { fields: { ek_certificate: b64(critical) } });
      expectRefused(
        x.challenge,
        401,
        'ERR_ATTESTATION_FAILED',
        'unknown TPM: the EK certificate has an unsupported critical extension',
      );
    }, 60_000);

    describe('refusals of the answer: 401, nothing issued, the nonce not spent', () => {
      beforeAll(async () => {
        await enroll(rsaNode, 'manager');
        await enroll(eccNode);
      });

      it('fail/a replayed exchange: the nonce was spent by the issuance', async () => {
        const x = await exchange(rsaNode);
        expect(x.r!.status).toBe(201);
        const again = await postAttest(x.body!);
        expectRefused(
          again,
          401,
          'ERR_ATTESTATION_FAILED',
          'the nonce is unknown, expired or already used: request a new challenge',
        );
        expect((await lastRefusal())!.details).toMatchObject({
          method: 'tpm',
          code: 'ERR_ATTESTATION_FAILED',
        });
      }, 60_000);

      it('fail/a challenge answered twice at once: one certificate', async () => {
        const x = await exchange(rsaNode, { answer: false });
        const body = x.body!;
        const answers = await Promise.all([postAttest(body), postAttest(body), postAttest(body)]);
        expect(answers.map((a) => a.status).sort()).toEqual([201, 401, 401]);
      }, 60_000);

      it("fail/an answer to another node's challenge: its TPM cannot activate it, its own secret does not match", async () => {
        const theirs = await postChallenge({ method: 'tpm', ...rsaNode.challengeFields() });
        const c = theirs.json<ChallengeBody>();
        await expect(eccNode.activate(c)).rejects.toThrow();
        expect(await tpmIsClean(eccNode.tpm)).toBe(true);
        const own = await postChallenge({ method: 'tpm', ...eccNode.challengeFields() });
        const secret = await eccNode.activate(own.json<ChallengeBody>());
        const r = await postAttest(await tpmAnswerBody(eccNode, c.nonce, secret));
        expectRefused(
          r,
          401,
          'ERR_ATTESTATION_FAILED',
          'the activated credential does not match the challenge',
        );
        expect((await lastRefusal())!.details).toMatchObject({ ek_id: rsaNode.ekId });
        expect((await t.db.knex('attestation_nonces').where({ nonce: c.nonce }).first()).used_at).toBeNull();
      }, 60_000);

      it('fail/a quote over another CSR', async () => {
        const victim = (await keyAndCsr()).csrPem;
        const x = await exchange(rsaNode, { quotedCsrPem: victim });
        expectRefused(x.r, 401, 'ERR_ATTESTATION_FAILED', 'the quote is not over this challenge and CSR');
        expect(
          (await t.db.knex('attestation_nonces').where({ nonce: x.c!.nonce }).first()).used_at,
        ).toBeNull();
      }, 60_000);

      it("fail/a mismatched AK: the TPM will not activate for another AK, and another AK's quote is refused", async () => {
        const c = (
          await postChallenge({ method: 'tpm', ...rsaNode.challengeFields() })
        ).json<ChallengeBody>();
        const other = await rsaNode.newAk();
        await expect(rsaNode.activate(c, other.akCtx)).rejects.toThrow();
        const secret = await rsaNode.activate(c);
        const r = await postAttest(await tpmAnswerBody(rsaNode, c.nonce, secret, { akCtx: other.akCtx }));
        expectRefused(
          r,
          401,
          'ERR_ATTESTATION_FAILED',
          'the quote was not made by the attestation key of the challenge',
        );
        expect(await tpmIsClean(rsaNode.tpm)).toBe(true);
      }, 60_000);
    });

    it('ok/revoked: its TPM is refused (403) at the challenge and the answer, on every replica, until node enroll admits it again', async () => {
      await enroll(eccNode);
      const first = expectIssued(await exchange(eccNode), nodeIdOf(eccNode));
      const pending = (
        await postChallenge({ method: 'tpm', ...eccNode.challengeFields() })
      ).json<ChallengeBody>();
      const revoke = await adminCall('POST', `/v1/admin/nodes/${first.node_id}/revoke`, {});
      expect(revoke.status).toBe(200);
      // Another replica on the same database: the ban is the node row, not this process's memory.
      const replica = await startServer({
        config: loadServerConfig(
          { listen: '127.0.0.1:0', 'rate-limits': 'off' },
          { BATON_DATA_DIR: '/nonexistent', BATON_BACKGROUND_INTERVAL: '1h' },
        ),
        ca: { ...t.ca } as OpenCa,
        clock: t.clock,
        log: createLogger('silent'),
      });
      replicas.push(replica);
      for (const url of [t.url, replica.url]) {
        const x = await exchange(eccNode, { url });
        expectRefused(x.challenge, 403, 'ERR_NODE_REVOKED', 'this node has been revoked');
      }
      const secret = await eccNode.activate(pending);
      const { csrPem } = await keyAndCsr();
      const q = await eccNode.quote(tpmQualifyingData(pending.nonce, fromPem(csrPem, 'CERTIFICATE REQUEST')));
      const late = await postAttest(
        {
          method: 'tpm',
          nonce: pending.nonce,
          secret: b64(secret),
          quote: b64(q.quote),
          quote_signature: b64(q.signature),
          csr: csrPem,
        },
        replica.url,
      );
      expectRefused(late, 403, 'ERR_NODE_REVOKED');
      expect((await lastRefusal())!.details).toMatchObject({ code: 'ERR_NODE_REVOKED', ek_id: eccNode.ekId });

      const again = await enroll(eccNode);
      expect(again.reinstated).toBe(true);
      const back = expectIssued(await exchange(eccNode, { url: replica.url }), first.node_id!);
      expect(back.serial).not.toBe(first.serial);
      expect((await t.ca.storage.certificates.findBySerial(first.serial))?.status).toBe('revoked');
      expect((await t.ca.storage.nodes.findById(first.node_id!))?.status).toBe('active');
    }, 120_000);

    describe('malformed input: 400 or 401 with a stable code, never a 500', () => {
      beforeAll(() => enroll(rsaNode, 'manager'));

      it.each([
        [
          'ek_public missing',
          { ek_public: undefined },
          'ek_public: the EK TPM2B_PUBLIC, base64, is required',
        ],
        [
          'ek_public not base64',
          { ek_public: 'not base64!' },
          'ek_public: the EK TPM2B_PUBLIC, base64, is required',
        ],
        ['ek_public base64url', { ek_public: '-_-_' }, 'ek_public: the EK TPM2B_PUBLIC, base64, is required'],
        [
          'ek_public of 1025 bytes',
          { ek_public: b64(Buffer.alloc(1025)) },
          'ek_public: must be 2 to 1024 bytes',
        ],
        [
          'ek_public of 4 KiB (refused before it is decoded)',
          { ek_public: b64(Buffer.alloc(4096)) },
          'ek_public: the EK TPM2B_PUBLIC, base64, is required',
        ],
        ['ak_public a number', { ak_public: 5 }, 'ak_public: the AK TPM2B_PUBLIC, base64, is required'],
        [
          'ek_certificate not DER',
          { ek_certificate: b64(Buffer.from('hello')) },
          'ek_certificate: the EK certificate cannot be parsed (DER X.509 expected)',
        ],
        [
          'ek_certificate empty',
          { ek_certificate: '' },
          'ek_certificate: the EK certificate DER, base64, is required',
        ],
      ])('fail/challenge with %s: 400 ERR_BAD_REQUEST', async (_name, over, message) => {
        const r = await postChallenge({ method: 'tpm', ...rsaNode.challengeFields(), ...over });
        expectRefused(r, 400, 'ERR_BAD_REQUEST', message);
      });

      it('fuzz/challenge fields cut short or with a bit flipped: 400, 401 or (a still valid structure) 201; never 500', async () => {
        const fields = rsaNode.challengeFields();
        const statuses = new Set<number>();
        for (const field of ['ek_public', 'ak_public'] as const) {
          const bytes = Buffer.from(fields[field]!, 'base64');
          for (const cut of [0, 1, 2, 5, 40, bytes.length - 1]) {
            statuses.add(
              (await postChallenge({ method: 'tpm', ...fields, [field]: b64(bytes.subarray(0, cut)) }))
                .status,
            );
          }
          for (let i = 0; i < bytes.length * 8; i += 97) {
            const flipped = Buffer.from(bytes);
            flipped[i >> 3]! ^= 1 << (i & 7);
            const r = await postChallenge({ method: 'tpm', ...fields, [field]: b64(flipped) });
            statuses.add(r.status);
            expect([201, 400, 401]).toContain(r.status);
          }
          const longer = b64(Buffer.concat([bytes, Buffer.from([0])]));
          expectRefused(
            await postChallenge({ method: 'tpm', ...fields, [field]: longer }),
            400,
            'ERR_BAD_REQUEST',
          );
        }
        expect([...statuses].every((s) => [201, 400, 401].includes(s))).toBe(true);
        expect(statuses.has(400)).toBe(true);
      }, 120_000);

      it('fail/attest fields: a secret of another size, a nonce of another form, truncated quotes: 400; bit flips: 400 or 401', async () => {
        const x = await exchange(rsaNode, { answer: false });
        const body = x.body!;
        const secret = Buffer.from(body.secret as string, 'base64');
        for (const [over, message] of [
          [{ secret: b64(secret.subarray(0, 31)) }, 'secret: must be 32 bytes'],
          [{ secret: b64(Buffer.concat([secret, Buffer.alloc(1)])) }, 'secret: must be 32 bytes'],
          [{ secret: undefined }, 'secret: the activated credential, base64, is required'],
          [{ nonce: 'short' }, 'nonce: the base64url nonce from POST /v1/attest/challenge is required'],
          [
            { quote: b64(Buffer.from(body.quote as string, 'base64').subarray(0, 20)) },
            'quote: malformed TPMS_ATTEST: truncated',
          ],
          [
            { quote_signature: b64(Buffer.alloc(4)) },
            'quote_signature: malformed TPMT_SIGNATURE: unsupported signature algorithm (ECDSA or RSASSA)',
          ],
        ] as [Record<string, unknown>, string][]) {
          expectRefused(await postAttest({ ...body, ...over }), 400, 'ERR_BAD_REQUEST', message);
        }
        for (const field of ['quote', 'quote_signature', 'secret'] as const) {
          const bytes = Buffer.from(body[field] as string, 'base64');
          for (let i = 0; i < bytes.length * 8; i += 61) {
            const flipped = Buffer.from(bytes);
            flipped[i >> 3]! ^= 1 << (i & 7);
            const r = await postAttest({ ...body, [field]: b64(flipped) });
            expect([400, 401]).toContain(r.status);
          }
        }
        // None of it spent the nonce: the untouched answer still works.
        expect((await postAttest(body)).status).toBe(201);
      }, 120_000);
    });
  });
});
