import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { openDatabase } from '../../services/ca/src/storage/knex/database';
import { baton, type Env, type ServerProcess, startServerProcess } from '../support/cli';
import { type Backend, createPostgresDatabase, describeEachBackend } from '../support/database';
import { https } from '../support/https';
import { keyAndCsr } from '../support/node-client';
import { softHsm, type SoftHsmToken, softHsmToken } from '../support/softhsm';
import { describeWith, run, tempDir, tool, writeFiles } from '../support/tools';

/**
 * Issue 18, PKCS#11 (CONTRACT "CA custody and rotation"): `baton ca init --kms URI` and
 * `baton server --kms URI` with the keys in a SoftHSM2 token made for this test: init, attestation,
 * renewal, workload issuance through an entry, a JWT-SVID, node revocation, the CRL (openssl verify
 * -crl_check) and OCSP (openssl ocsp), all signed in the token. Then the token is unplugged: the
 * signing routes answer 503 ERR_CA_UNAVAILABLE with Retry-After and write nothing (the join token
 * is not spent), and they recover once it is back. At the end the token's objects are listed
 * (sensitive, never extractable) and the whole database is searched for key material.
 */

const TD = 'hsm.example.org';
const SLOW = 120_000;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function httpGet(url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    })
      .on('error', reject)
      .end();
  });
}

const certsOf = (pem: string): string[] =>
  pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];

/** DER prefixes of a P-256 private key: PKCS#8 (RFC 5208) and SEC 1 ECPrivateKey (RFC 5915). */
const PRIVATE_KEY_MARKERS = [
  Buffer.from('020100301306072a8648ce3d020106082a8648ce3d030107', 'hex'),
  Buffer.from('30770201010420', 'hex'),
  Buffer.from('PRIVATE KEY'),
];

describeEachBackend('PKCS#11 key custody: baton with its keys in SoftHSM2', (backend: Backend) => {
  describeWith(
    [softHsm, tool('openssl')],
    'ca init, server, issuance, revocation, an unplugged token',
    () => {
      const dir = tempDir('baton-pkcs11-');
      const dataDir = join(dir.path, 'data');
      let token: SoftHsmToken;
      let env: Env = {};
      let drop: () => Promise<void> = async () => {};
      let server: ServerProcess | undefined;
      let http = '';
      let port = 0;
      let kms = '';
      const admin = () => ['--server', server!.url, '--admin-dir', join(dataDir, 'admin')];
      const bundle = () => readFileSync(join(dataDir, 'admin', 'bundle.pem'), 'utf8');
      const nodeDir = join(dir.path, 'node');
      const nodeCert = () => readFileSync(join(nodeDir, 'node', 'cert.pem'), 'utf8');
      const nodeKey = () => readFileSync(join(nodeDir, 'node', 'key.pem'), 'utf8');
      const start = async () => {
        server = await startServerProcess(
          ['--data-dir', dataDir, '--kms', kms, '--listen-http', `127.0.0.1:${port}`],
          env,
        );
      };
      const verify = (leafPem: string, interPem: string, crl = false) => {
        const f = writeFiles(dir.path, { 'root.pem': bundle(), 'leaf.pem': leafPem, 'inter.pem': interPem });
        return run('openssl', [
          'verify',
          '-x509_strict',
          ...(crl ? ['-crl_check', '-crl_download'] : []),
          '-CAfile',
          f['root.pem']!,
          '-untrusted',
          f['inter.pem']!,
          f['leaf.pem']!,
        ]).out;
      };

      beforeAll(async () => {
        token = softHsmToken('baton');
        env = { ...token.env };
        if (backend === 'postgres') {
          const pg = await createPostgresDatabase();
          drop = pg.drop;
          // No BATON_KEK: with --kms there is no key-encryption key at all.
          env.BATON_DATABASE_URL = pg.url;
        }
        port = await freePort();
        http = `http://127.0.0.1:${port}`;
        kms = token.uri('source');
      }, SLOW);
      afterAll(async () => {
        await server?.stop();
        await drop();
        token?.cleanup();
        dir.cleanup();
      });

      it('refuses a bad --kms URI (exit 2) and a wrong PIN (exit 1) without printing the PIN or initializing', () => {
        const init = (uri: string) =>
          baton(['ca', 'init', '--trust-domain', TD, '--data-dir', dataDir, '--kms', uri], env);
        const bad = init(
          `pkcs11:token=baton;object=x?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=${token.pin}`,
        );
        expect(bad.status).toBe(2);
        expect(bad.stderr).toBe(
          'baton: --kms: object: Baton names its own keys; the URI names only the token (ERR_CONFIG_INVALID)\n',
        );
        const wrong = init(token.uri('value', 'Wrong-pin-0000'));
        expect(wrong.status).toBe(1);
        expect(wrong.stderr).toBe('baton: the token refused the PIN (pin-value) (ERR_CA_UNAVAILABLE)\n');
        expect(`${wrong.stdout}${wrong.stderr}`).not.toContain('Wrong-pin-0000');
        const absent = init(token.uri('value').replace('token=baton', 'token=absent'));
        expect(absent.status).toBe(1);
        expect(absent.stderr).toMatch(
          /^baton: no token present matches pkcs11:token=absent\?module-path=\S+&pin-value=\*\*\* \(ERR_CA_UNAVAILABLE\)\n$/,
        );
        // Nothing was made: no key in the token, no KEK file.
        expect(token.objects()).toEqual([]);
        expect(existsSync(join(dataDir, 'kek'))).toBe(false);
      });

      it(
        'ca init --kms: the root, signing CA and JWT keys are made in the token; no KEK',
        () => {
          const r = baton(
            [
              'ca',
              'init',
              '--trust-domain',
              TD,
              '--data-dir',
              dataDir,
              '--kms',
              kms,
              '--public-http-url',
              http,
              '--json',
            ],
            env,
          );
          expect(r.stderr).toBe('');
          expect(r.status).toBe(0);
          const out = JSON.parse(r.stdout) as { root_ca_id: string; signing_ca_id: string };
          expect(existsSync(join(dataDir, 'kek'))).toBe(false);
          const labels = token
            .objects()
            .filter((o) => o.class === 'private')
            .map((o) => o.label);
          expect(labels).toEqual(expect.arrayContaining([out.root_ca_id, out.signing_ca_id]));
          expect(labels).toHaveLength(3);
        },
        SLOW,
      );

      it(
        'a wrong PIN stops the server at start (exit 1, ERR_CA_UNAVAILABLE); without --kms it says where the keys are',
        async () => {
          const wrong = baton(
            [
              'server',
              '--data-dir',
              dataDir,
              '--listen',
              '127.0.0.1:0',
              '--kms',
              token.uri('value', 'Wrong-1'),
            ],
            env,
          );
          expect(wrong.status).toBe(1);
          expect(wrong.stderr).toMatch(
            /^baton: the token refused the PIN \(pin-value\) \(ERR_CA_UNAVAILABLE\)\n$/,
          );
          const withoutKms = baton(['server', '--data-dir', dataDir, '--listen', '127.0.0.1:0'], {
            ...env,
            BATON_KEK: randomBytes(32).toString('base64'),
          });
          expect(withoutKms.status).toBe(1);
          expect(withoutKms.stderr).toMatch(
            /^baton: the CA keys are kept in a PKCS#11 token \(pkcs11:token=baton;serial=[0-9a-f]+\): start with --kms \(or BATON_KMS\) \(ERR_KEK_INVALID\)\n$/,
          );
        },
        SLOW,
      );

      it(
        'serves with --kms: attestation, renewal, a workload SVID through an entry and a JWT-SVID, all verified',
        async () => {
          await start();
          const tokenText = baton(['token', 'create', '--role', 'worker', ...admin()], env).stdout.trim();
          const attested = baton(
            ['agent', '--server', server!.url, '--token', tokenText, '--dir', nodeDir, '--once'],
            env,
          );
          expect(attested.stderr).toBe('');
          expect(attested.status).toBe(0);
          const nodeId = /^attested node ([a-z2-7]{16})/.exec(attested.stdout)![1]!;
          const [leaf, inter] = certsOf(nodeCert());
          expect(verify(leaf!, inter!)).toContain('leaf.pem: OK');

          // Renewal over mTLS with the node certificate the token-held signing CA issued.
          const k = await keyAndCsr();
          const renewed = await https(`${server!.url}/v1/renew`, {
            method: 'POST',
            body: JSON.stringify({ csr: k.csrPem }),
            ca: bundle(),
            cert: nodeCert(),
            key: nodeKey(),
          });
          expect(renewed.status).toBe(201);
          const renewedChain = renewed.json<{ certificate_chain: string }>().certificate_chain;
          expect(verify(certsOf(renewedChain)[0]!, certsOf(renewedChain)[1]!)).toContain('leaf.pem: OK');

          // A workload SVID through an entry (the agent's --once, with the renewed credential).
          writeFiles(join(nodeDir, 'node'), { 'cert.pem': renewedChain, 'key.pem': k.keyPem });
          expect(
            baton(
              [
                'entry',
                'create',
                '--name',
                'web',
                '--spiffe-id',
                `spiffe://${TD}/web`,
                '--parent',
                nodeId,
                ...admin(),
              ],
              env,
            ).status,
          ).toBe(0);
          const workloads = baton(['agent', '--server', server!.url, '--dir', nodeDir, '--once'], env);
          expect(workloads.stderr).toBe('');
          expect(workloads.stdout).toMatch(
            /issued workload web \(spiffe:\/\/hsm\.example\.org\/web, serial [0-9a-f]+/,
          );
          const wchain = certsOf(readFileSync(join(nodeDir, 'workloads', 'web', 'cert.pem'), 'utf8'));
          expect(verify(wchain[0]!, wchain[1]!)).toContain('leaf.pem: OK');
          expect(new X509Certificate(wchain[0]!).subjectAltName).toContain(`URI:spiffe://${TD}/web`);

          // A JWT-SVID: its ES256 signature (r || s from CKM_ECDSA) verifies with the published JWKS.
          const jwt = await https(`${server!.url}/v1/jwt-svids`, {
            method: 'POST',
            body: JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, audience: ['db'] }),
            ca: bundle(),
            cert: renewedChain,
            key: k.keyPem,
          });
          expect(jwt.status).toBe(201);
          const jwks = (await https(`${server!.url}/v1/bundle.jwks`, { ca: bundle() })).json<{
            keys: Array<{ use: string }>;
          }>();
          // SPIFFE's `use: jwt-svid` is not JOSE's `sig`, which jose looks for: the keys without it.
          const keySet = createLocalJWKSet({
            keys: jwks.keys.filter((x) => x.use === 'jwt-svid').map(({ use: _, ...key }) => key),
          } as never);
          const verified = await jwtVerify(jwt.json<{ token: string }>().token, keySet, { audience: 'db' });
          expect(verified.payload.sub).toBe(`spiffe://${TD}/web`);
        },
        SLOW,
      );

      it(
        'an unplugged token: 503 ERR_CA_UNAVAILABLE with Retry-After, nothing written; recovery once it is back',
        async () => {
          const certificates = () =>
            (
              JSON.parse(baton(['cert', 'list', '--json', ...admin()], env).stdout) as {
                certificates: unknown[];
              }
            ).certificates.length;
          const before = certificates();
          const tokenText = baton(
            ['token', 'create', '--role', 'worker', '--uses', '1', ...admin()],
            env,
          ).stdout.trim();
          const attest = async () => {
            const k = await keyAndCsr();
            return https(`${server!.url}/v1/attest`, {
              method: 'POST',
              body: JSON.stringify({ method: 'join_token', token: tokenText, csr: k.csrPem }),
              ca: bundle(),
            });
          };
          const k = await keyAndCsr();
          const workload = () =>
            https(`${server!.url}/v1/workload-svids`, {
              method: 'POST',
              body: JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, csr: k.csrPem }),
              ca: bundle(),
              cert: nodeCert(),
              key: nodeKey(),
            });
          const jwt = () =>
            https(`${server!.url}/v1/jwt-svids`, {
              method: 'POST',
              body: JSON.stringify({ spiffe_id: `spiffe://${TD}/web`, audience: ['db'] }),
              ca: bundle(),
              cert: nodeCert(),
              key: nodeKey(),
            });

          const renew = async () =>
            https(`${server!.url}/v1/renew`, {
              method: 'POST',
              body: JSON.stringify({ csr: (await keyAndCsr()).csrPem }),
              ca: bundle(),
              cert: nodeCert(),
              key: nodeKey(),
            });

          token.unplug();
          try {
            for (const call of [attest, renew, workload, jwt]) {
              const r = await call();
              expect({ status: r.status, code: r.json<{ error: { code: string } }>().error.code }).toEqual({
                status: 503,
                code: 'ERR_CA_UNAVAILABLE',
              });
              expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
            }
            // Nothing half written: no certificate recorded, the single-use join token not spent, the
            // node certificate not superseded (used again below).
            expect(certificates()).toBe(before);
            // Readiness says so too, so that a load balancer can stop sending signing requests here.
            const ready = await https(`${server!.url}/readyz`, { ca: bundle() });
            expect({ status: ready.status, body: ready.json() }).toEqual({
              status: 503,
              body: { status: 'not ready', checks: { database: true, ca_keys: false } },
            });
          } finally {
            token.plug();
          }
          // Back: the same join token attests (it was not spent), within the backoff (at most 30 s).
          let answer = await attest();
          for (let i = 0; answer.status === 503 && i < 80; i++) {
            await new Promise((r) => setTimeout(r, 500));
            answer = await attest();
          }
          expect(answer.status).toBe(201);
          expect((await https(`${server!.url}/readyz`, { ca: bundle() })).status).toBe(200);
          // The node certificate was not superseded by the failed renewal: it still gets a workload SVID.
          expect((await workload()).status).toBe(201);
          expect((await jwt()).status).toBe(201);
          expect(certificates()).toBe(before + 2);
          expect(server!.stderr()).toContain('ERR_CA_UNAVAILABLE');
          // The failures were logged, the PIN never.
          expect(server!.stderr()).not.toContain(token.pin);
        },
        SLOW,
      );

      it(
        'revokes the node: the CRL (openssl verify -crl_check) and OCSP (openssl ocsp), signed in the token, say so',
        async () => {
          const [leaf, inter] = certsOf(nodeCert());
          const f = writeFiles(dir.path, {
            'ocsp-root.pem': bundle(),
            'ocsp-leaf.pem': leaf!,
            'ocsp-inter.pem': inter!,
          });
          const ocsp = () =>
            run('openssl', [
              'ocsp',
              '-issuer',
              f['ocsp-inter.pem']!,
              '-cert',
              f['ocsp-leaf.pem']!,
              '-url',
              `${http}/v1/ocsp`,
              '-CAfile',
              f['ocsp-root.pem']!,
              '-VAfile',
              f['ocsp-inter.pem']!,
            ]).out;
          expect(verify(leaf!, inter!, true)).toContain('leaf.pem: OK');
          expect(ocsp()).toMatch(/ocsp-leaf\.pem: good/);
          expect(ocsp()).toMatch(/Response verify OK/);
          const nodeId = new X509Certificate(leaf!).subjectAltName!.match(/node\/([a-z2-7]{16})/)![1]!;
          expect(
            baton(['node', 'revoke', nodeId, '--reason', 'key-compromise', ...admin()], env).status,
          ).toBe(0);
          expect(verify(leaf!, inter!, true)).toMatch(/certificate revoked/);
          expect(ocsp()).toMatch(/ocsp-leaf\.pem: revoked/);
          expect((await httpGet(`${http}/v1/crl`)).status).toBe(200);
        },
        SLOW,
      );

      it(
        'rotates the root with the keys in the token: new root, signing CA and JWT key made there',
        async () => {
          const start = baton(['ca', 'rotate', '--root', '--json', ...admin()], env);
          expect(start.stderr).toBe('');
          expect(start.status).toBe(0);
          const started = JSON.parse(start.stdout) as { root: string; signing_ca: string };
          expect(
            token
              .objects()
              .filter((o) => o.class === 'private')
              .map((o) => o.label),
          ).toEqual(expect.arrayContaining([started.root, started.signing_ca]));
          // The old root's key, in the token, signed the cross-certificate.
          const status = JSON.parse(baton(['ca', 'status', '--json', ...admin()], env).stdout);
          expect(status).toMatchObject({ phase: 'rotating', signing_ca: { id: started.signing_ca } });
          expect(status.signing_ca.cross_signed_by).toHaveLength(1);
          const done = baton(['ca', 'rotate', '--root', '--finish', '--force', ...admin()], env);
          expect(done.stderr).toBe('');
          expect(done.status).toBe(0);
        },
        SLOW,
      );

      it(
        'the token holds every key, sensitive and never extractable; the database holds only references',
        async () => {
          await server!.stop();
          server = undefined;
          // The commands with direct database access take --kms too: a rotation makes the new signing
          // CA and its JWT key in the token; a break-glass admin certificate is signed there.
          const rotated = baton(['ca', 'rotate', '--json', '--data-dir', dataDir, '--kms', kms], env);
          expect(rotated.stderr).toBe('');
          expect(rotated.status).toBe(0);
          const newCa = (JSON.parse(rotated.stdout) as { signing_ca_id: string }).signing_ca_id;
          const recovered = baton(
            ['admin', 'recover', '--name', 'breakglass', '--data-dir', dataDir, '--kms', kms],
            env,
          );
          expect(recovered.stderr).toBe('');
          expect(recovered.status).toBe(0);
          const adminChain = certsOf(readFileSync(join(dataDir, 'admin', 'cert.pem'), 'utf8'));
          expect(verify(adminChain[0]!, adminChain[1]!)).toContain('leaf.pem: OK');
          expect(new X509Certificate(adminChain[1]!).subject).toContain(newCa.slice(3));

          const objects = token.objects();
          const privateKeys = objects.filter((o) => o.class === 'private');
          expect(privateKeys.map((o) => o.label)).toContain(newCa);
          // init: root, signing CA, JWT key; the root rotation: the same three; ca rotate: two.
          expect(privateKeys).toHaveLength(8);
          for (const o of privateKeys)
            expect(o).toMatchObject({
              sensitive: true,
              extractable: false,
              alwaysSensitive: true,
              neverExtractable: true,
              value: 'CKR_ATTRIBUTE_SENSITIVE',
            });

          const knex = openDatabase({ dataDir, databaseUrl: env.BATON_DATABASE_URL });
          try {
            const rows = [
              ...(await knex('cas').select('id as name', 'key_alg', 'key_kek_id', 'key_blob')),
              ...(await knex('jwt_keys').select('kid as name', 'key_alg', 'key_kek_id', 'key_blob')),
            ] as Array<{ name: string; key_alg: string; key_kek_id: string; key_blob: Uint8Array }>;
            expect(rows).toHaveLength(8);
            for (const row of rows) {
              // The reference: the token and the CKA_ID of the private key labelled with the row's name.
              expect(row.key_alg).toBe('pkcs11');
              expect(row.key_kek_id).toMatch(/^pkcs11:token=baton;serial=[0-9a-f]+$/);
              expect(Buffer.from(row.key_blob).toString('hex')).toBe(
                privateKeys.find((o) => o.label === row.name)?.id,
              );
            }
            // Every value of every table: no private key encoding anywhere in the database.
            const tables = (
              await knex('information_schema.tables')
                .where({ table_schema: 'public', table_type: 'BASE TABLE' })
                .select('table_name')
            ).map((t: { table_name: string }) => t.table_name);
            expect(tables).toEqual(expect.arrayContaining(['cas', 'jwt_keys', 'certificates', 'audit_log']));
            let values = 0;
            for (const table of tables) {
              for (const row of await knex(table).select('*')) {
                for (const v of Object.values(row as Record<string, unknown>)) {
                  const bytes =
                    v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(JSON.stringify(v ?? null));
                  values++;
                  for (const marker of PRIVATE_KEY_MARKERS)
                    expect({ table, found: bytes.includes(marker) }).toEqual({ table, found: false });
                }
              }
            }
            expect(values).toBeGreaterThan(100);
          } finally {
            await knex.destroy();
          }
        },
        SLOW,
      );
    },
  );
});
