import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CaClientError,
  type Issuance,
  isTerminal,
  NodeIdentityStore,
  NodeRotator,
  NodeTpm,
  qualifyingData,
  Tpm2Tools,
  TpmAttestor,
  type TpmAttestParams,
  type TpmCaApi,
  type TpmChallenge,
  type TpmChallengeParams,
} from '../../clients/rotation/src';
import { FakeClock } from '../../services/ca/src/domain/clock';
import {
  type ManufacturerCa,
  manufacturerCa,
  type SoftwareTpm,
  startSwtpm,
  SWTPM_TOOLS,
} from '../support/swtpm';
import { describeWith, tempDir } from '../support/tools';
import { tpmName, tpmPublicToSpki } from '../support/tpm-public';
import { FakeCa } from '../unit/rotation/fake-ca';

/**
 * The TPM attestor (clients/rotation/src/tpm/tpm-attestor.ts) in the node rotator, with real
 * software TPMs and a CA double that does what docs/api.md "TPM attestation" asks of the server
 * with tpm2-tools offline: TPM2_MakeCredential by `tpm2_makecredential -T none`, the quote checked
 * by `tpm2_checkquote` against the qualifying data of the nonce and the CSR it received. The
 * same flows against a real `baton server` are in tpm-agent-e2e.test.ts.
 */

const HOUR = 3600_000;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest();
const csrDer = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');

/** The CA's side of the exchange, offline; refusals as the server words them. */
class OfflineTpmCa extends FakeCa implements TpmCaApi {
  readonly enrolled = new Set<string>();
  readonly revoked = new Set<string>();
  /** The manufacturer CA whose EK certificates are trusted, when set. */
  manufacturerPem?: string;
  /** Issue to this node instead of the EK's (a CA that gets it wrong). */
  nodeIdOverride?: string;
  readonly tpmCalls: { op: 'challenge' | 'attest'; trustBundlePem: string; ekCertificate?: Buffer }[] = [];
  readonly #nonces = new Map<
    string,
    { secretHash: Buffer; akPublic: Buffer; ekId: string; spent: boolean }
  >();

  constructor(
    clock: FakeClock,
    readonly work: string,
  ) {
    super(clock);
  }

  async tpmChallenge(p: TpmChallengeParams): Promise<TpmChallenge> {
    this.tpmCalls.push({ op: 'challenge', trustBundlePem: p.trustBundlePem, ekCertificate: p.ekCertificate });
    const ekSpki = tpmPublicToSpki(p.ekPublic);
    const ekId = sha256(ekSpki).toString('hex');
    if (this.revoked.has(ekId))
      throw new CaClientError('ERR_NODE_REVOKED', 'this node has been revoked', 403);
    if (!this.enrolled.has(ekId) && !this.#certified(p.ekCertificate, ekSpki))
      throw new CaClientError('ERR_ATTESTATION_FAILED', 'TPM attestation failed: unknown TPM', 401);
    const dir = mkdtempSync(join(this.work, 'mc-'));
    try {
      const secret = randomBytes(32);
      writeFileSync(join(dir, 'ek.pub'), p.ekPublic);
      writeFileSync(join(dir, 'secret'), secret);
      const name = tpmName(p.akPublic).toString('hex');
      execFileSync(
        'tpm2_makecredential',
        ['-T', 'none', '-e', 'ek.pub', '-s', 'secret', '-n', name, '-o', 'cred'],
        { cwd: dir, stdio: 'pipe' },
      );
      const file = readFileSync(join(dir, 'cred'));
      const blobEnd = 10 + file.readUInt16BE(8);
      const nonce = randomBytes(32).toString('base64url');
      this.#nonces.set(nonce, { secretHash: sha256(secret), akPublic: p.akPublic, ekId, spent: false });
      return {
        nonce,
        expiresAt: new Date(this.clock.now().getTime() + 300_000),
        credentialBlob: file.subarray(8, blobEnd),
        encryptedSecret: file.subarray(blobEnd),
      };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  async attestTpm(p: TpmAttestParams): Promise<Issuance> {
    this.tpmCalls.push({ op: 'attest', trustBundlePem: p.trustBundlePem });
    const refused = () => new CaClientError('ERR_ATTESTATION_FAILED', 'TPM attestation failed', 401);
    const n = this.#nonces.get(p.nonce);
    if (!n || n.spent || p.secret.length !== 32 || !timingSafeEqual(sha256(p.secret), n.secretHash))
      throw refused();
    const dir = mkdtempSync(join(this.work, 'cq-'));
    try {
      writeFileSync(join(dir, 'ak.pub'), n.akPublic);
      writeFileSync(join(dir, 'quote.msg'), p.quote);
      writeFileSync(join(dir, 'quote.sig'), p.quoteSignature);
      const q = qualifyingData(p.nonce, csrDer(p.csrPem)).toString('hex');
      execFileSync(
        'tpm2_checkquote',
        ['-u', 'ak.pub', '-m', 'quote.msg', '-s', 'quote.sig', '-g', 'sha256', '-q', q],
        { cwd: dir, stdio: 'pipe' },
      );
    } catch {
      throw refused();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    n.spent = true;
    return this.issueFor(this.nodeIdOverride ?? `tpm-${n.ekId.slice(0, 20)}`, p.csrPem);
  }

  #certified(der: Buffer | undefined, ekSpki: Buffer): boolean {
    if (!der || !this.manufacturerPem) return false;
    const cert = new X509Certificate(der);
    return (
      cert.verify(new X509Certificate(this.manufacturerPem).publicKey) &&
      cert.publicKey.export({ type: 'spki', format: 'der' }).equals(ekSpki)
    );
  }
}

async function leftovers(tpm: SoftwareTpm): Promise<string> {
  let out = '';
  for (const what of ['handles-transient', 'handles-loaded-session', 'handles-saved-session'])
    out += (await tpm.tool('tpm2_getcap', [what])).toString('utf8');
  return out.trim();
}

describeWith(SWTPM_TOOLS, 'TpmAttestor: baton agent --tpm with software TPMs and a CA double', () => {
  const root = tempDir('baton-tpm-attestor-');
  let maker: ManufacturerCa;
  let made: SoftwareTpm;
  let plain: SoftwareTpm;
  let dirs = 0;

  beforeAll(async () => {
    maker = manufacturerCa();
    made = await startSwtpm({ manufacturer: maker });
    plain = await startSwtpm();
  }, 60_000);
  afterAll(async () => {
    await made?.stop();
    await plain?.stop();
    if (maker) rmSync(maker.dir, { recursive: true, force: true });
    root.cleanup();
  });

  function setup() {
    const clock = new FakeClock(new Date().toISOString());
    const work = join(root.path, `ca${dirs}`);
    mkdirSync(work);
    const ca = new OfflineTpmCa(clock, work);
    const dir = join(root.path, `node${dirs++}`);
    const store = new NodeIdentityStore(dir);
    const nodeTpm = (tpm: SoftwareTpm, parent = dir) =>
      new NodeTpm(new Tpm2Tools({ tcti: tpm.tcti }), 'rsa', parent);
    const rotator = (tpm: SoftwareTpm, { pin }: { pin?: string } = { pin: ca.pin }) =>
      new NodeRotator({
        clock,
        client: ca,
        store,
        random: () => 0.5,
        attestor: new TpmAttestor({
          client: ca,
          tpm: nodeTpm(tpm),
          pin,
          bundlePath: join(dir, 'bundle.pem'),
        }),
      });
    return { clock, ca, dir, store, rotator, ekId: (tpm: SoftwareTpm) => nodeTpm(tpm, work).ekIdentifier() };
  }

  it('an enrolled EK joins after the server is checked against --pin: node tpm-<20 hex>, the files of a token-joined node, nothing left in the TPM', async () => {
    const s = setup();
    const ekId = await s.ekId(plain);
    s.ca.enrolled.add(ekId);
    const r = await s.rotator(plain).runOnce();
    expect(r.action).toBe('attested');
    expect(r.identity.nodeId).toBe(`tpm-${ekId.slice(0, 20)}`);
    expect(r.identity.spiffeId).toBe(`spiffe://test.example.org/node/tpm-${ekId.slice(0, 20)}`);
    expect(statSync(join(s.dir, 'node', 'key.pem')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(s.dir, 'node', 'cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(readFileSync(join(s.dir, 'bundle.pem'), 'utf8')).toBe(s.ca.ca.keyring.bundlePem);
    expect(s.store.load()!.nodeId).toBe(r.identity.nodeId);
    // The bundle fetched unverified, then both steps over TLS verified against the pinned root only.
    expect(s.ca.calls.map((c) => c.op)).toEqual(['bundle']);
    expect(s.ca.tpmCalls.map((c) => [c.op, c.trustBundlePem])).toEqual([
      ['challenge', s.ca.ca.keyring.bundlePem],
      ['attest', s.ca.ca.keyring.bundlePem],
    ]);
    expect(s.ca.tpmCalls[0]!.ekCertificate).toBeUndefined();
    expect(await leftovers(plain)).toBe('');
    expect(statSync(s.dir).isDirectory()).toBe(true);
    expect(
      execFileSync('ls', ['-A', s.dir], { encoding: 'utf8' })
        .split('\n')
        .filter((n) => n.startsWith('.tpm-')),
    ).toEqual([]);
  });

  it('an EK certificate in NV under a trusted manufacturer CA admits a TPM no one enrolled', async () => {
    const s = setup();
    s.ca.manufacturerPem = maker.issuerPem();
    const r = await s.rotator(made).runOnce();
    expect(r.action).toBe('attested');
    expect(r.identity.nodeId).toBe(`tpm-${(await s.ekId(made)).slice(0, 20)}`);
    expect(
      s.ca.tpmCalls[0]!.ekCertificate?.equals(readFileSync(join(made.ekCertDir!, 'ek-rsa2048.crt'))),
    ).toBe(true);
    expect(await leftovers(made)).toBe('');
  });

  it('fail/an unknown TPM: ERR_ATTESTATION_FAILED naming its EK id, the daemon stops; nothing written or left loaded', async () => {
    const s = setup();
    const ekId = await s.ekId(plain);
    const e = await s
      .rotator(plain)
      .runOnce()
      .catch((x: unknown) => x);
    expect(e).toMatchObject({
      code: 'ERR_ATTESTATION_FAILED',
      message: `the CA refused this TPM (EK id ${ekId}): TPM attestation failed: unknown TPM; an admin admits it with \`baton node enroll --tpm-ek-id ${ekId}\` or \`baton tpm ca add\``,
    });
    expect(isTerminal(e)).toBe(true);
    expect(s.store.load()).toBeUndefined();
    expect(s.ca.tpmCalls.map((c) => c.op)).toEqual(['challenge']);
    expect(await leftovers(plain)).toBe('');
  });

  it('fail/a server that does not match --pin: ERR_PIN_MISMATCH before the TPM is touched or the EK sent', async () => {
    const s = setup();
    s.ca.enrolled.add(await s.ekId(plain));
    await expect(s.rotator(plain, { pin: 'a'.repeat(52) }).runOnce()).rejects.toMatchObject({
      code: 'ERR_PIN_MISMATCH',
      message: "the server's CA does not match --pin",
    });
    expect(s.ca.tpmCalls).toEqual([]);
  });

  it('fail/no --pin and no DIR/bundle.pem: ERR_PIN_REQUIRED, nothing asked of the server', async () => {
    const s = setup();
    await expect(s.rotator(plain, {}).runOnce()).rejects.toMatchObject({
      code: 'ERR_PIN_REQUIRED',
      message: 'no CA to trust yet: pass --pin with the root pin `baton ca init` printed',
    });
    expect(s.ca.calls).toEqual([]);
  });

  it('renews over mTLS like a token-joined node; after expiry the TPM attests again, trusting DIR/bundle.pem: the same node ID, a new key', async () => {
    const s = setup();
    s.ca.enrolled.add(await s.ekId(plain));
    const first = await s.rotator(plain).runOnce();
    const joined = s.store.load()!;
    s.clock.set(joined.refreshAt!);
    const renewed = await s.rotator(plain).runOnce();
    expect(renewed.action).toBe('renewed');
    expect(renewed.identity.nodeId).toBe(first.identity.nodeId);
    expect(s.ca.tpmCalls).toHaveLength(2);

    s.clock.set(new Date(s.store.load()!.notAfter.getTime() + HOUR));
    const again = await s.rotator(plain, {}).runOnce();
    expect(again.action).toBe('re-attested');
    expect(again.identity.nodeId).toBe(first.identity.nodeId);
    expect(s.store.load()!.keyPem).not.toBe(joined.keyPem);
    // No unverified bundle this time: the roots held in DIR/bundle.pem were trusted.
    expect(s.ca.calls.filter((c) => c.op === 'bundle')).toHaveLength(1);
    // Trusted: the held roots, and the CA certificates they issued (a held bundle may predate a
    // root rotation the server is in, so the agent asks for them: bootstrap.ts trustedForBootstrap).
    expect(
      s.ca.tpmCalls.slice(2).map((c) => [c.op, c.trustBundlePem.startsWith(s.ca.ca.keyring.bundlePem)]),
    ).toEqual([
      ['challenge', true],
      ['attest', true],
    ]);
    expect(await leftovers(plain)).toBe('');
  });

  it('two TPMs get two node IDs', async () => {
    const a = setup();
    const b = setup();
    for (const [s, tpm] of [
      [a, plain],
      [b, made],
    ] as const)
      s.ca.enrolled.add(await s.ekId(tpm));
    const ra = await a.rotator(plain).runOnce();
    const rb = await b.rotator(made).runOnce();
    expect(ra.identity.nodeId).toMatch(/^tpm-[0-9a-f]{20}$/);
    expect(rb.identity.nodeId).toMatch(/^tpm-[0-9a-f]{20}$/);
    expect(ra.identity.nodeId).not.toBe(rb.identity.nodeId);
  });

  it("fail/a revoked node's TPM: ERR_NODE_REVOKED, the daemon stops", async () => {
    const s = setup();
    const ekId = await s.ekId(plain);
    s.ca.enrolled.add(ekId);
    s.ca.revoked.add(ekId);
    const e = await s
      .rotator(plain)
      .runOnce()
      .catch((x: unknown) => x);
    expect(e).toMatchObject({
      code: 'ERR_NODE_REVOKED',
      message: `this node has been revoked: the CA refuses its TPM (EK id ${ekId}) until \`baton node enroll --tpm-ek-id\` admits it again`,
    });
    expect(isTerminal(e)).toBe(true);
    expect(await leftovers(plain)).toBe('');
  });

  it('fail/a CA that issues to another node than the EK names: ERR_BAD_RESPONSE, nothing stored', async () => {
    const s = setup();
    s.ca.enrolled.add(await s.ekId(plain));
    s.ca.nodeIdOverride = 'tpm-00000000000000000000';
    await expect(s.rotator(plain).runOnce()).rejects.toMatchObject({
      code: 'ERR_BAD_RESPONSE',
      message: expect.stringMatching(
        /^the CA issued the certificate to node tpm-0{20}, not to this TPM's tpm-[0-9a-f]{20}$/,
      ),
    });
    expect(s.store.load()).toBeUndefined();
  });
});
