import fc from 'fast-check';
import { toPem } from '../../common/src/der';
import { fromPem } from '../../services/ca/src/pki/der-reader';
import { keyAndCsr } from '../support/node-client';
import {
  csrStructuralMutations,
  headerMutations,
  type Mutant,
  ocspRequest,
  nested,
  ocspStructuralMutations,
  truncations,
} from './support/der-mutations';
import { type Answer, assertRefused, OCSP_MALFORMED_REQUEST, useFuzzServer } from './support/fuzz-harness';
import { inPool } from './support/pool';

/**
 * Issue 8 item 3, DER and PEM: mutated real CSRs (truncated at every length, every header
 * rewritten, deep nesting, huge OIDs and INTEGERs, random bit flips) on every route that parses a
 * CSR, malformed PEM, and mutated OCSP requests on POST and GET /v1/ocsp. Every answer is a 4xx
 * with a stable code (or a 200 OCSP response for an OCSP request that still parses), never a 5xx.
 */
const CSR_CODES = ['ERR_CSR_INVALID', 'ERR_CSR_KEY_UNSUPPORTED', 'ERR_BODY_TOO_LARGE'];

describe('fuzz: mutated DER and PEM through the API', () => {
  let csrDer: Buffer;
  let ocspDer: Buffer;
  let unknownToken: string;

  // Nothing hostile is issued: no node, token or certificate beyond the fixtures.
  const f = useFuzzServer('mutated DER and PEM', {
    node: true,
    admin: 'admin',
    unchangedTables: ['nodes', 'certificates', 'join_tokens'],
    setup: async ({ t, node }) => {
      csrDer = fromPem((await keyAndCsr('fuzz')).csrPem, 'CERTIFICATE REQUEST');
      ocspDer = ocspRequest(t.ca.keyring.signing.record.certificateDer, node.body.serial);
      // Well formed and pinned to this CA, but unknown: a CSR that survives parsing meets a 401.
      unknownToken = `BATON1-${t.ca.keyring.pin}-${'0'.repeat(16)}.${'a'.repeat(52)}`;
    },
  });

  const expectCsrRefusal = (a: Answer, what: string, extra: string[] = []) => {
    assertRefused(a, what);
    const code = a.json<{ error: { code: string } }>().error.code;
    if (![...CSR_CODES, ...extra].includes(code)) throw new Error(`${what}: unexpected code ${code}`);
  };

  const attestWith = (csr: string) =>
    f.c.send({
      method: 'POST',
      path: '/v1/attest',
      body: JSON.stringify({ method: 'join_token', token: unknownToken, csr }),
    });

  /** `extra`: codes a route may answer besides the CSR ones (its own field checks, the token). */
  const csrRoutes: { name: string; extra: string[]; send: (csr: string) => Promise<Answer> }[] = [
    { name: 'POST /v1/attest', extra: ['ERR_TOKEN_INVALID'], send: attestWith },
    {
      name: 'POST /v1/renew',
      extra: [],
      send: (csr) =>
        f.c.send({ method: 'POST', path: '/v1/renew', body: JSON.stringify({ csr }), as: f.node }),
    },
    {
      name: 'POST /v1/workload-svids',
      extra: [],
      send: (csr) =>
        f.c.send({
          method: 'POST',
          path: '/v1/workload-svids',
          body: JSON.stringify({ spiffe_id: 'spiffe://test.example.org/fuzz', csr }),
          as: f.node,
        }),
    },
    {
      name: 'POST /v1/admin/admins',
      // The route bounds the csr field itself (16 KiB) before parsing it.
      extra: ['ERR_BAD_REQUEST'],
      send: (csr) =>
        f.c.send({
          method: 'POST',
          path: '/v1/admin/admins',
          body: JSON.stringify({ name: 'fuzz', role: 'auditor', csr }),
          as: f.admin,
        }),
    },
  ];

  it('refuses every truncation, header rewrite and structural mutation of a real CSR on POST /v1/attest', async () => {
    const mutants: Mutant[] = [
      ...truncations(csrDer),
      ...headerMutations(csrDer),
      ...csrStructuralMutations(csrDer),
    ];
    await inPool(mutants, 8, async (m) => {
      const a = await attestWith(toPem('CERTIFICATE REQUEST', m.der));
      expectCsrRefusal(a, m.name, ['ERR_TOKEN_INVALID']);
    });
    console.log(`[fuzz] CSR mutants on POST /v1/attest: ${mutants.length}`);
  });

  it.each(csrRoutes.map((r) => [r.name, r] as const))(
    'refuses random bit flips and byte edits of a real CSR on %s',
    async (_name, route) => {
      const edit = fc.oneof(
        fc.record({ kind: fc.constant('flip' as const), bit: fc.nat({ max: csrDer.length * 8 - 1 }) }),
        fc.record({
          kind: fc.constant('set' as const),
          at: fc.nat({ max: csrDer.length - 1 }),
          byte: fc.integer({ min: 0, max: 255 }),
        }),
        fc.record({ kind: fc.constant('delete' as const), at: fc.nat({ max: csrDer.length - 1 }) }),
        fc.record({
          kind: fc.constant('insert' as const),
          at: fc.nat({ max: csrDer.length }),
          bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
        }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(edit, { minLength: 1, maxLength: 4 }), async (edits) => {
          let der = Buffer.from(csrDer);
          for (const e of edits) {
            if (e.kind === 'flip') der[e.bit >> 3]! ^= 1 << (e.bit & 7);
            else if (e.kind === 'set') der[Math.min(e.at, der.length - 1)] = e.byte;
            else if (e.kind === 'delete')
              der = Buffer.concat([der.subarray(0, e.at), der.subarray(e.at + 1)]);
            else der = Buffer.concat([der.subarray(0, e.at), e.bytes, der.subarray(e.at)]);
          }
          // A set to the same value is no mutation: the request is then simply valid.
          if (der.equals(csrDer)) return;
          const a = await route.send(toPem('CERTIFICATE REQUEST', der));
          expectCsrRefusal(a, `${route.name} ${JSON.stringify(edits)}`, route.extra);
        }),
        { numRuns: route.name === 'POST /v1/attest' ? 300 : 100 },
      );
    },
  );

  it('refuses the structural CSR mutations on every route that parses a CSR', async () => {
    const mutants = csrStructuralMutations(csrDer);
    for (const route of csrRoutes.slice(1)) {
      await inPool(mutants, 4, async (m) => {
        const a = await route.send(toPem('CERTIFICATE REQUEST', m.der));
        expectCsrRefusal(a, `${route.name} ${m.name}`, route.extra);
      });
    }
  });

  it('refuses malformed PEM', async () => {
    const good = toPem('CERTIFICATE REQUEST', csrDer);
    const b64 = csrDer.toString('base64');
    const cases: [string, string][] = [
      [
        'bad base64 characters',
        `-----BEGIN CERTIFICATE REQUEST-----\n!!!${b64.slice(3)}\n-----END CERTIFICATE REQUEST-----\n`,
      ],
      [
        'base64 cut mid-quantum',
        `-----BEGIN CERTIFICATE REQUEST-----\n${b64.slice(0, -5)}\n-----END CERTIFICATE REQUEST-----\n`,
      ],
      ['missing footer', `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n`],
      ['missing header', `${b64}\n-----END CERTIFICATE REQUEST-----\n`],
      ['empty block', '-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n'],
      [
        'whitespace-only block',
        '-----BEGIN CERTIFICATE REQUEST-----\n \n\t\n-----END CERTIFICATE REQUEST-----\n',
      ],
      ['wrong label', good.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE')],
      ['mismatched labels', good.replace('END CERTIFICATE REQUEST', 'END PRIVATE KEY')],
      [
        'a private key instead',
        '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n',
      ],
      [
        'garbage block first',
        `-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n${good}`,
      ],
      [
        '1000 garbage blocks',
        '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'.repeat(1000),
      ],
      ['header repeated 400 times without a footer', '-----BEGIN CERTIFICATE REQUEST-----\n'.repeat(400)],
      ['1000 nested SEQUENCEs', toPem('CERTIFICATE REQUEST', nested(1000))],
      ['NUL bytes inside', good.replace('\n', '\n\u0000\u0000')],
      ['unicode inside', good.replace('\n', '\n\u202e\u00e9\ud83d\ude00')],
      ['CRLF line ends', good.replace(/\n/g, '\r\n')],
      ['no newlines at all', good.replace(/\n/g, '')],
      [
        '60 KB of base64',
        `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(60_000)}\n-----END CERTIFICATE REQUEST-----\n`,
      ],
      [
        '1 MB of PEM',
        `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(1 << 20)}\n-----END CERTIFICATE REQUEST-----\n`,
      ],
      ['DER bytes as a latin1 string', csrDer.toString('latin1')],
      ['base64 without armour', b64],
      ['empty string', ''],
    ];
    await inPool(cases, 4, async ([name, pem]) => {
      expectCsrRefusal(await attestWith(pem), `PEM ${name}`, ['ERR_BAD_REQUEST', 'ERR_TOKEN_INVALID']);
    });
    // A second, valid block after a valid one is ignored rather than mixed in: still one key.
    const two = await attestWith(good + toPem('CERTIFICATE REQUEST', Buffer.from([0x30, 0x00])));
    expectCsrRefusal(two, 'two blocks, valid first', ['ERR_TOKEN_INVALID']);
    console.log(`[fuzz] malformed PEM cases: ${cases.length + 1}`);
  });

  const ocspPost = (der: Buffer) =>
    f.c.send({
      method: 'POST',
      path: '/v1/ocsp',
      body: der,
      headers: { 'content-type': 'application/ocsp-request' },
    });
  const ocspGet = (der: Buffer) =>
    f.c.send({ path: `/v1/ocsp/${encodeURIComponent(der.toString('base64'))}` });

  const expectOcspAnswer = (a: Answer, what: string) => {
    assertRefused(a, what, [200]);
    if (a.status === 200 && a.headers['content-type'] !== 'application/ocsp-response')
      throw new Error(`${what}: 200 that is not an OCSP response`);
  };

  it('answers the well-formed OCSP request, and refuses or answers every mutation of it, on POST and GET', async () => {
    expect((await ocspPost(ocspDer)).status).toBe(200);
    expect((await ocspGet(ocspDer)).status).toBe(200);
    const mutants = [
      ...truncations(ocspDer),
      ...headerMutations(ocspDer),
      ...ocspStructuralMutations(ocspDer),
    ];
    await inPool(mutants, 8, async (m) => {
      expectOcspAnswer(await ocspPost(m.der), `POST ${m.name}`);
      if (m.der.length > 0) expectOcspAnswer(await ocspGet(m.der), `GET ${m.name}`);
    });
    console.log(`[fuzz] OCSP mutants: ${mutants.length} (each on POST and GET)`);
  });

  it('refuses or answers random byte edits of an OCSP request', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: ocspDer.length - 1 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.boolean(),
        async (edits, viaGet) => {
          const der = Buffer.from(ocspDer);
          for (const [at, byte] of edits) der[at] = byte;
          expectOcspAnswer(viaGet ? await ocspGet(der) : await ocspPost(der), JSON.stringify(edits));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses arbitrary bytes as an OCSP request, and arbitrary text as its GET path', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
        expectOcspAnswer(await ocspPost(Buffer.from(bytes)), `POST ${Buffer.from(bytes).toString('hex')}`);
      }),
      { numRuns: 150 },
    );
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 300 }), async (text) => {
        let path: string;
        try {
          path = encodeURIComponent(text);
        } catch {
          return; // a lone surrogate has no URL form
        }
        const a = await f.c.send({ path: `/v1/ocsp/${path}` });
        expectOcspAnswer(a, `GET ${JSON.stringify(text)}`);
      }),
      { numRuns: 150 },
    );
  });

  it('ocsp-get-double-decoding: a GET path whose decoded form holds "%" is a 400, not a 500', async () => {
    for (const path of ['%25ZZ', '%25', 'MA%253D%253D', '%25E0%25A4%25A']) {
      const a = await f.c.send({ path: `/v1/ocsp/${path}` });
      expect(a.status).toBe(400);
      expect(a.headers['content-type']).toBe('application/ocsp-response');
      expect(a.body).toEqual(OCSP_MALFORMED_REQUEST);
    }
  });

  it('refuses an OCSP body over 8 KiB with 413', async () => {
    const big = await ocspPost(Buffer.alloc(9 * 1024, 0x30));
    expect(big.status).toBe(413);
    expect(big.json()).toEqual({ error: { code: 'ERR_BODY_TOO_LARGE', message: expect.any(String) } });
  });
});
