import { createPrivateKey, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { auditHash } from '../../../services/ca/src/domain/audit';
import {
  type AuditCheckpoint,
  checkpointBytes,
  checkpointChainProblem,
  checkpointSignatureProblem,
  makeCheckpoint,
  parseCheckpoint,
} from '../../../services/ca/src/domain/audit-checkpoint';
import { issueLeaf } from '../../../services/ca/src/domain/issue';
import type { SigningCa } from '../../../services/ca/src/domain/signing-ca';
import { keyObjectSigner } from '../../../services/ca/src/pki/signer';
import { describePublicKey, generateP256, spkiOf } from '../../../services/ca/src/pki/keys';
import { memoryCertificates, TEST_TD, testCa } from '../../fixtures/test-ca';
import { errorOf } from '../../support/errors';
import { createMemoryStorage } from '../../support/memory-storage';
import { itWithTool, run, tempDir, writeFiles } from '../../support/tools';

/**
 * Issue 20, signed audit checkpoints: the chain head signed by the signing CA over the canonical
 * JSON of {at, hash, seq}; what `audit verify --checkpoint` accepts and refuses; and that the
 * signature is what `openssl dgst -verify` takes (DER ECDSA-Sig-Value over those exact bytes).
 */

const NOW = '2026-12-08T12:00:00.000Z';
const ca = testCa({ now: NOW });
const trust = { bundlePem: ca.keyring.bundlePem, trustDomain: TEST_TD };

async function sealedLog(rows: number) {
  const storage = createMemoryStorage();
  for (let i = 0; i < rows; i++)
    await storage.audit.append({
      at: new Date(NOW),
      event: 'test.event',
      actor: 'system',
      source: null,
      subject: null,
      outcome: 'success',
      details: { i },
    });
  await storage.audit.seal(100, auditHash);
  return storage;
}

async function checkpoint(signing: SigningCa = ca.keyring.signing): Promise<AuditCheckpoint> {
  const storage = await sealedLog(3);
  return makeCheckpoint({ clock: ca.clock, audit: storage.audit, signing });
}

describe('audit checkpoints (issue 20)', () => {
  it('ok/the head: seq, hash, the time, a signature and the signing CA certificate', async () => {
    const storage = await sealedLog(3);
    const head = (await storage.audit.sealedAfter(2, 1))[0]!;
    const cp = await makeCheckpoint({ clock: ca.clock, audit: storage.audit, signing: ca.keyring.signing });
    expect(cp).toEqual({
      seq: 3,
      hash: head.hash!.toString('hex'),
      at: NOW,
      signature: expect.stringMatching(/^[A-Za-z0-9+/]+={0,2}$/),
      certificate: ca.keyring.signing.certPem,
    });
    expect(checkpointSignatureProblem(cp, trust)).toBeNull();
    // A round trip through the file's JSON (pretty-printed or not) changes nothing.
    expect(parseCheckpoint(JSON.stringify(cp, null, 2))).toEqual(cp);
  });

  it('ok/the signed bytes are the canonical JSON: keys sorted, no whitespace', () => {
    const bytes = checkpointBytes({ seq: 12, hash: 'ab'.repeat(32), at: NOW });
    expect(bytes.toString('utf8')).toBe(`{"at":"${NOW}","hash":"${'ab'.repeat(32)}","seq":12}`);
  });

  it('fail/no sealed row yet: ERR_NOT_FOUND', async () => {
    const storage = createMemoryStorage();
    const e = await errorOf(
      makeCheckpoint({ clock: ca.clock, audit: storage.audit, signing: ca.keyring.signing }),
    );
    expect(e.code).toBe('ERR_NOT_FOUND');
  });

  it.each([
    [
      'hash',
      (c: AuditCheckpoint) => ({ ...c, hash: `${c.hash.slice(0, 63)}${c.hash.endsWith('0') ? '1' : '0'}` }),
    ],
    ['seq', (c: AuditCheckpoint) => ({ ...c, seq: c.seq + 1 })],
    ['at', (c: AuditCheckpoint) => ({ ...c, at: '2026-12-08T12:00:00.001Z' })],
    [
      'signature',
      (c: AuditCheckpoint) => {
        const sig = Buffer.from(c.signature, 'base64');
        sig[sig.length - 1]! ^= 1;
        return { ...c, signature: sig.toString('base64') };
      },
    ],
  ])('fail/an edited %s: the signature does not verify', async (_field, edit) => {
    expect(checkpointSignatureProblem(edit(await checkpoint()), trust)).toBe('the signature does not verify');
  });

  it('fail/signed by another Baton with the same trust domain: does not chain to the bundle', async () => {
    const other = testCa({ now: NOW });
    expect(checkpointSignatureProblem(await checkpoint(other.keyring.signing), trust)).toBe(
      'its certificate does not chain to the trust bundle',
    );
  });

  it('fail/signed by a leaf that chains to the bundle (a node key): not a CA certificate of the trust domain', async () => {
    const { privateKey, publicKey } = generateP256();
    const leaf = await issueLeaf(
      { clock: ca.clock, issuer: ca.keyring.signing, certificates: memoryCertificates() },
      {
        kind: 'node',
        spiffeId: `spiffe://${TEST_TD}/node/n1`,
        subject: { CN: 'n1' },
        key: describePublicKey(spkiOf(publicKey)),
        ttlMs: 3_600_000,
      },
    );
    const asSigner = {
      ...ca.keyring.signing,
      signer: keyObjectSigner(createPrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' }))),
      certPem: leaf.chainPem,
      chainPem: leaf.chainPem,
    };
    expect(checkpointSignatureProblem(await checkpoint(asSigner), trust)).toBe(
      `its certificate is not a CA certificate of ${TEST_TD}`,
    );
    // The same checkpoint against another trust domain's name is refused the same way.
    expect(
      checkpointSignatureProblem(await checkpoint(), { ...trust, trustDomain: 'other.example.org' }),
    ).toBe('its certificate is not a CA certificate of other.example.org');
  });

  it('fail/a time outside the signing CA certificate’s validity', async () => {
    const cp = await checkpoint();
    const after = new Date(new X509Certificate(cp.certificate).validTo).getTime() + 1000;
    // Re-signed with the right key at a time the certificate does not cover.
    const claim = { ...cp, at: new Date(after).toISOString() };
    const signed = {
      ...claim,
      signature: ca.keyring.signing.signer.sign(checkpointBytes(claim)).toString('base64'),
    };
    expect(checkpointSignatureProblem(signed, trust)).toBe(
      'it was signed outside its certificate’s validity',
    );
  });

  it.each([
    ['not JSON', '{', 'not JSON'],
    ['an array', '[]', 'not a JSON object'],
    ['seq 0', { seq: 0 }, 'seq: a positive integer'],
    ['an upper-case hash', { hash: 'AB'.repeat(32) }, 'hash: 64 lowercase hex digits'],
    ['a local time', { at: '2026-12-08 12:00' }, 'at: an ISO 8601 UTC time with milliseconds'],
    ['a signature that is not base64', { signature: 'not base64!' }, 'signature: base64'],
    ['no certificate', { certificate: 'x' }, 'certificate: PEM certificates'],
  ])('fail/parse: %s', async (_name, change, message) => {
    const cp = await checkpoint();
    const text = typeof change === 'string' ? change : JSON.stringify({ ...cp, ...change });
    let e: unknown;
    try {
      parseCheckpoint(text);
    } catch (err) {
      e = err;
    }
    expect(e).toMatchObject({ code: 'ERR_BAD_REQUEST', message });
  });

  it.each([
    ['ok/the row is there with its hash', { from: 1, last: 9, hashAtSeq: 'aa' }, null],
    ['ok/rows before it were pruned', { from: 3, last: 9, hashAtSeq: 'aa' }, null],
    [
      'fail/its row was pruned',
      { from: 6, last: 9 },
      'its row was pruned (the chain starts at seal_seq 6): check it against the export',
    ],
    ['fail/tail cut', { from: 1, last: 4 }, 'the chain ends at seal_seq 4: rows were cut off from its tail'],
    ['fail/empty chain', { from: 1, last: 0 }, 'the chain is empty: its rows were removed'],
    [
      'fail/another hash',
      { from: 1, last: 9, hashAtSeq: 'bb' },
      'its row has another hash: the chain was rewritten at or before it',
    ],
  ])('%s', (_name, seen, problem) => {
    expect(checkpointChainProblem({ seq: 5, hash: 'aa', at: NOW }, seen)).toBe(problem);
  });

  itWithTool(
    'openssl',
    'ok/openssl dgst -sha256 -verify takes the signature over the canonical bytes (DER ECDSA-Sig-Value)',
    async () => {
      const cp = await checkpoint();
      const dir = tempDir('baton-checkpoint-');
      try {
        // The public key as openssl itself reads it from the checkpoint's certificate.
        const files = writeFiles(dir.path, {
          'cert.pem': cp.certificate,
          'claim.json': checkpointBytes(cp).toString('utf8'),
        });
        const pub = run('openssl', ['x509', '-in', files['cert.pem']!, '-noout', '-pubkey']);
        expect(pub.status).toBe(0);
        files['pub.pem'] = writeFiles(dir.path, { 'pub.pem': pub.out })['pub.pem']!;
        const sig = join(dir.path, 'sig.der');
        writeFileSync(sig, Buffer.from(cp.signature, 'base64'));
        const ok = run('openssl', [
          'dgst',
          '-sha256',
          '-verify',
          files['pub.pem']!,
          '-signature',
          sig,
          files['claim.json']!,
        ]);
        expect(ok).toEqual({ status: 0, out: 'Verified OK\n' });
        // A SEQUENCE of two INTEGERs (r, s): RFC 5480 §2.2 / RFC 3279 §2.2.3 Ecdsa-Sig-Value.
        const asn1 = run('openssl', ['asn1parse', '-inform', 'DER', '-in', sig]);
        expect(asn1.status).toBe(0);
        expect(
          asn1.out
            .trim()
            .split('\n')
            .map((l) => l.replace(/^.*(cons|prim): /, '').split(/\s+/)[0]),
        ).toEqual(['SEQUENCE', 'INTEGER', 'INTEGER']);
        // The same file with a byte of the claim changed does not verify.
        writeFiles(dir.path, { 'claim.json': checkpointBytes({ ...cp, seq: cp.seq + 1 }).toString('utf8') });
        const bad = run('openssl', [
          'dgst',
          '-sha256',
          '-verify',
          files['pub.pem']!,
          '-signature',
          sig,
          files['claim.json']!,
        ]);
        expect(bad.status).toBe(1);
        expect(bad.out).toContain('Verification failure');
      } finally {
        dir.cleanup();
      }
    },
  );
});
