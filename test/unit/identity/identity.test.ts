import { once } from 'node:events';
import { mkdirSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../../common/src/atomic-file';
import {
  Identity,
  type IdentityError,
  type IdentityOptions,
  type IdentitySnapshot,
} from '../../../clients/identity/src';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { tempDir } from '../../support/tools';
import { type TestLeaf, type TestPki, testPki, writeIdentityDir } from './svid-factory';

const TD = 'test.example.org';
const HOUR = 3600_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the next 'rotated' of `id`, or rejects after `ms`. */
function nextRotation(id: Identity, ms = 3000): Promise<[IdentitySnapshot, IdentitySnapshot]> {
  const signal = AbortSignal.timeout(ms);
  return once(id, 'rotated', { signal }) as Promise<[IdentitySnapshot, IdentitySnapshot]>;
}

describe('Identity: loading and reload validation', () => {
  let pki: TestPki;
  let other: TestPki;
  let first: TestLeaf;
  const dirs: Array<{ cleanup(): void }> = [];
  const opened: Identity[] = [];

  const quick: IdentityOptions = { startTimeoutMs: 0, fsWatch: false, pollIntervalMs: 0 };
  const freshDir = (leaf: TestLeaf, bundle = pki.bundlePem): string => {
    const d = tempDir('baton-identity-');
    dirs.push(d);
    writeIdentityDir(d.path, { cert: leaf.certPem, key: leaf.keyPem, bundle });
    return d.path;
  };
  const open = async (dir: string, opts: IdentityOptions = quick) => {
    const id = await Identity.fromDirectory(dir, opts);
    opened.push(id);
    return id;
  };

  beforeAll(async () => {
    pki = await testPki(TD);
    other = await testPki('other.example.org');
    first = await pki.leaf({ uris: [`spiffe://${TD}/web`] });
  });
  afterAll(() => {
    for (const id of opened) id.close();
    for (const d of dirs) d.cleanup();
  });

  it('ok/loads cert, key and bundle and reports the SVID', async () => {
    const id = await open(freshDir(first));
    const cur = id.current();
    expect(cur).toMatchObject({
      spiffeId: `spiffe://${TD}/web`,
      certChainPem: first.certPem,
      keyPem: first.keyPem,
      bundlePem: pki.bundlePem,
      serial: first.serial,
    });
    expect(cur.notAfter).toEqual(new Date(first.cert.validTo));
  });

  it('ok/fromAgentNode reads node/cert.pem, node/key.pem and the top-level bundle.pem', async () => {
    const d = tempDir('baton-agent-');
    dirs.push(d);
    const node = await pki.leaf({ uris: [`spiffe://${TD}/node/n1`], subject: `O=${TD}, OU=worker, CN=n1` });
    writeIdentityDir(join(d.path, 'node'), { cert: node.certPem, key: node.keyPem });
    writeIdentityDir(d.path, { bundle: pki.bundlePem });
    const id = await Identity.fromAgentNode(d.path, quick);
    expect(id.current().spiffeId).toBe(`spiffe://${TD}/node/n1`);
    expect(id.paths).toEqual({
      cert: join(d.path, 'node', 'cert.pem'),
      key: join(d.path, 'node', 'key.pem'),
      bundle: join(d.path, 'bundle.pem'),
    });
  });

  it.each<[string, () => Promise<{ dir: string; opts?: IdentityOptions }>, string]>([
    [
      'fail/key of another certificate',
      async () => {
        const dir = freshDir(first);
        writeIdentityDir(dir, { key: (await pki.leaf()).keyPem });
        return { dir };
      },
      'ERR_KEY_MISMATCH',
    ],
    ['fail/chain from another CA', async () => ({ dir: freshDir(await other.leaf()) }), 'ERR_CHAIN_INVALID'],
    [
      'fail/intermediate missing from cert.pem',
      async () => {
        const dir = freshDir(first);
        writeIdentityDir(dir, { cert: first.cert.toString() });
        return { dir };
      },
      'ERR_CHAIN_INVALID',
    ],
    [
      'fail/expired by the injected clock',
      async () => ({ dir: freshDir(first), opts: { clock: new FakeClock(new Date(Date.now() + 2 * HOUR)) } }),
      'ERR_CERT_EXPIRED',
    ],
    [
      'fail/not yet valid by the injected clock',
      async () => ({ dir: freshDir(first), opts: { clock: new FakeClock(new Date(Date.now() - HOUR)) } }),
      'ERR_CERT_EXPIRED',
    ],
    [
      'fail/two URI SANs',
      async () => ({ dir: freshDir(await pki.leaf({ uris: [`spiffe://${TD}/a`, `spiffe://${TD}/b`] })) }),
      'ERR_NOT_SVID',
    ],
    [
      'fail/no bundle.pem',
      async () => {
        const dir = freshDir(first);
        rmSync(join(dir, 'bundle.pem'));
        return { dir };
      },
      'ERR_IDENTITY_FILES',
    ],
    [
      'fail/key.pem is not a key',
      async () => {
        const dir = freshDir(first);
        writeIdentityDir(dir, { key: 'garbage' });
        return { dir };
      },
      'ERR_KEY_MISMATCH',
    ],
  ])('%s', async (_name, setup, code) => {
    const { dir, opts } = await setup();
    await expect(Identity.fromDirectory(dir, { ...quick, ...opts })).rejects.toMatchObject({ code });
  });

  it('ok/the first load retries while the agent is between cert.pem and key.pem', async () => {
    const dir = freshDir(first);
    const next = await pki.leaf();
    writeIdentityDir(dir, { cert: next.certPem });
    const loading = Identity.fromDirectory(dir, { ...quick, startTimeoutMs: 2000, retryMs: 20 });
    await sleep(60);
    writeIdentityDir(dir, { key: next.keyPem });
    const id = await loading;
    opened.push(id);
    expect(id.current().serial).toBe(next.serial);
  });

  describe('reload', () => {
    it('fail/a new cert with the old key is not swapped in; ok/the matching key later is', async () => {
      const dir = freshDir(first);
      const id = await open(dir);
      const rotations: string[] = [];
      id.on('rotated', (cur) => rotations.push(cur.serial));
      const next = await pki.leaf();

      writeIdentityDir(dir, { cert: next.certPem });
      expect(() => id.reload()).toThrow(expect.objectContaining({ code: 'ERR_KEY_MISMATCH' }));
      expect(id.current().serial).toBe(first.serial);

      writeIdentityDir(dir, { key: next.keyPem });
      expect(id.reload()).toBe(true);
      expect(id.current().serial).toBe(next.serial);
      expect(id.current().keyPem).toBe(next.keyPem);
      expect(rotations).toEqual([next.serial]);
      expect(id.reload()).toBe(false);
    });

    it('fail/an expired pair is not swapped in', async () => {
      const dir = freshDir(first);
      const id = await open(dir);
      const stale = await pki.leaf({
        notBefore: new Date(Date.now() - 2 * HOUR),
        notAfter: new Date(Date.now() - HOUR),
      });
      writeIdentityDir(dir, { cert: stale.certPem, key: stale.keyPem });
      expect(() => id.reload()).toThrow(expect.objectContaining({ code: 'ERR_CERT_EXPIRED' }));
      expect(id.current().serial).toBe(first.serial);
    });

    it('fail/a pair from another CA is not swapped in', async () => {
      const dir = freshDir(first);
      const id = await open(dir);
      const foreign = await other.leaf({ uris: [`spiffe://${TD}/web`] });
      writeIdentityDir(dir, { cert: foreign.certPem, key: foreign.keyPem });
      expect(() => id.reload()).toThrow(expect.objectContaining({ code: 'ERR_CHAIN_INVALID' }));
      expect(id.current().serial).toBe(first.serial);
    });
  });

  describe('watch', () => {
    it('poll: keeps the current identity through a half-written rotation, reports it, then swaps', async () => {
      const dir = freshDir(first);
      const id = await open(dir, { ...quick, pollIntervalMs: 20, retryMs: 10, errorAfterAttempts: 2 });
      const errors: IdentityError[] = [];
      id.on('error', (e) => errors.push(e));
      id.watch();
      const next = await pki.leaf();

      writeIdentityDir(dir, { cert: next.certPem });
      while (errors.length === 0) await sleep(10);
      expect(errors.map((e) => e.code)).toEqual(['ERR_KEY_MISMATCH']);
      expect(id.current().serial).toBe(first.serial);

      const rotated = nextRotation(id);
      writeIdentityDir(dir, { key: next.keyPem });
      const [cur, prev] = await rotated;
      expect(cur.serial).toBe(next.serial);
      expect(prev.serial).toBe(first.serial);
      expect(id.current()).toBe(cur);
      // The same refusal is reported once, not at every retry.
      expect(errors).toHaveLength(1);
    });

    it('fs.watch: notices an atomic replacement of cert.pem then key.pem without polling', async () => {
      const dir = freshDir(first);
      const id = await open(dir, { ...quick, fsWatch: true, pollIntervalMs: 0, settleMs: 20, retryMs: 20 });
      id.watch();
      const next = await pki.leaf();
      const rotated = nextRotation(id);
      writeFileAtomic(join(dir, 'cert.pem'), next.certPem);
      writeFileAtomic(join(dir, 'key.pem'), next.keyPem, 0o600);
      const [cur] = await rotated;
      expect(cur.serial).toBe(next.serial);
      expect(statSync(join(dir, 'key.pem')).mode & 0o777).toBe(0o600);
    });

    it('fs.watch: notices the directory swapped as a symlink to a new generation (the agent layout) without polling', async () => {
      const root = tempDir('baton-identity-link-');
      dirs.push(root);
      const gen = (name: string, leaf: TestLeaf) => {
        const d = join(root.path, name);
        mkdirSync(d);
        writeIdentityDir(d, { cert: leaf.certPem, key: leaf.keyPem, bundle: pki.bundlePem });
        return name;
      };
      symlinkSync(gen('.node.1', first), join(root.path, 'node'));
      const id = await open(join(root.path, 'node'), {
        ...quick,
        fsWatch: true,
        pollIntervalMs: 0,
        settleMs: 20,
        retryMs: 20,
      });
      id.watch();
      const next = await pki.leaf();
      const rotated = nextRotation(id);
      symlinkSync(gen('.node.2', next), join(root.path, 'node.link'));
      renameSync(join(root.path, 'node.link'), join(root.path, 'node'));
      const [cur] = await rotated;
      expect(cur.serial).toBe(next.serial);
    });

    it('an error without a listener is dropped, not thrown', async () => {
      const dir = freshDir(first);
      const id = await open(dir, { ...quick, pollIntervalMs: 10, retryMs: 5, errorAfterAttempts: 1 });
      id.watch();
      writeIdentityDir(dir, { key: (await pki.leaf()).keyPem });
      await sleep(80);
      expect(id.current().serial).toBe(first.serial);
    });

    it('close stops watching', async () => {
      const dir = freshDir(first);
      const id = await open(dir, { ...quick, fsWatch: true, pollIntervalMs: 10, settleMs: 5 });
      id.watch();
      id.close();
      const next = await pki.leaf();
      let rotated = false;
      id.on('rotated', () => {
        rotated = true;
      });
      writeIdentityDir(dir, { cert: next.certPem, key: next.keyPem });
      await sleep(80);
      expect(rotated).toBe(false);
      expect(id.current().serial).toBe(first.serial);
    });
  });
});
