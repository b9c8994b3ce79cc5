import { existsSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  bootstrap,
  type NewNodeIdentity,
  NodeIdentityStore,
  type StoredNodeIdentity,
  writeFileAtomic,
} from '../../../clients/rotation/src';
import { fsyncDir } from '../../../clients/rotation/src/atomic-file';
import type { StoreFileOps } from '../../../clients/rotation/src/node-identity-store';
import { isKeyForCertificate } from '../../../clients/rotation/src/pem';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { tempDir } from '../../support/tools';
import { FakeCa } from './fake-ca';

const root = tempDir('baton-store-');
afterAll(() => root.cleanup());

let dirs = 0;
const newDir = () => join(root.path, `d${dirs++}`);

const clock = new FakeClock();
const fake = new FakeCa(clock);
let first: NewNodeIdentity;
let second: NewNodeIdentity;

beforeAll(async () => {
  first = await bootstrap(fake, fake.token());
  clock.advance(60_000);
  second = await bootstrap(fake, fake.token());
});

class Crash extends Error {}

/** File operations that perform the first `budget` steps, drop the renames in `lost`, then crash. */
function crashingOps(
  budget: number,
  lost: ReadonlySet<string> = new Set(),
): StoreFileOps & { steps: string[] } {
  const steps: string[] = [];
  const step = (name: string, act: () => void) => {
    if (steps.length >= budget) throw new Crash(`crash before ${name}`);
    steps.push(name);
    act();
  };
  return {
    steps,
    writeFileAtomic: (path, data, mode) =>
      step(`write ${path.split('/').pop()}`, () => writeFileAtomic(path, data, mode)),
    rename: (from, to) =>
      step(`rename ${from.split('/').pop()}`, () => {
        // A power loss may persist a later rename of the directory and not an earlier one.
        if (!lost.has(from.split('/').pop()!)) renameSync(from, to);
      }),
    fsyncDir: (dir) => step('fsync', () => fsyncDir(dir)),
  };
}

function expectConsistent(dir: string, loaded: StoredNodeIdentity): void {
  const cert = readFileSync(join(dir, 'node', 'cert.pem'), 'utf8');
  const key = readFileSync(join(dir, 'node', 'key.pem'), 'utf8');
  expect(cert).toBe(loaded.certificateChainPem);
  expect(key).toBe(loaded.keyPem);
  expect(isKeyForCertificate(cert, key)).toBe(true);
  expect(readdirSync(join(dir, 'node')).sort()).toEqual(['cert.pem', 'key.pem', 'state.json']);
  expect(statSync(join(dir, 'node', 'key.pem')).mode & 0o777).toBe(0o600);
}

describe('NodeIdentityStore', () => {
  it('ok/empty directory: no identity', () => {
    expect(new NodeIdentityStore(newDir()).load()).toBeUndefined();
  });

  it('ok/save then load: the files of the contract, key 0600, state for a restart', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    const loaded = new NodeIdentityStore(dir).load()!;
    expect(loaded).toMatchObject({
      serial: first.serial,
      nodeId: first.nodeId,
      spiffeId: first.spiffeId,
      refreshAt: first.refreshAt,
      bundlePem: first.bundlePem,
    });
    expect(loaded.notAfter.getTime()).toBe(Math.floor(first.expiresAt.getTime() / 1000) * 1000);
    expect(readFileSync(join(dir, 'bundle.pem'), 'utf8')).toBe(first.bundlePem);
    expect(JSON.parse(readFileSync(join(dir, 'node', 'state.json'), 'utf8'))).toEqual({
      serial: first.serial,
      node_id: first.nodeId,
      spiffe_id: first.spiffeId,
      expires_at: first.expiresAt.toISOString(),
      refresh_at: first.refreshAt.toISOString(),
    });
    expectConsistent(dir, loaded);
  });

  // save() makes 8 steps: bundle, state.new, key.new, cert.new, 3 renames, fsync. Crash before each.
  it.each([0, 1, 2, 3, 4, 5, 6, 7, 8])('ok/crash after %i steps of a save: a matching pair survives', (n) => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    const ops = crashingOps(n);
    if (n < 8) expect(() => new NodeIdentityStore(dir, ops).save(second)).toThrow(Crash);
    else new NodeIdentityStore(dir, ops).save(second);
    const loaded = new NodeIdentityStore(dir).load()!;
    // Once state.json.new, key.pem.new and cert.pem.new are all on disk (4 steps), the new pair wins.
    const expected = n >= 4 ? second : first;
    expect(loaded.serial).toBe(expected.serial);
    expect(loaded.keyPem).toBe(expected.keyPem);
    expect(loaded.refreshAt).toEqual(expected.refreshAt);
    expect(loaded.spiffeId).toBe(expected.spiffeId);
    expect(loaded.nodeId).toBe(expected.nodeId);
    expectConsistent(dir, loaded);
  });

  it.each([
    ['ok/only the cert rename persisted', ['key.pem.new', 'state.json.new']],
    ['ok/only the key rename persisted', ['cert.pem.new', 'state.json.new']],
    ['ok/only the state rename lost', ['state.json.new']],
    ['ok/no rename persisted', ['key.pem.new', 'cert.pem.new', 'state.json.new']],
  ])('%s: power loss after the renames, the new pair is found', (_name, lost) => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    expect(() => new NodeIdentityStore(dir, crashingOps(7, new Set(lost))).save(second)).toThrow(Crash);
    const loaded = new NodeIdentityStore(dir).load()!;
    expect(loaded.serial).toBe(second.serial);
    expect(loaded.refreshAt).toEqual(second.refreshAt);
    expectConsistent(dir, loaded);
  });

  it('ok/a crash during the very first save leaves either nothing or the whole pair', () => {
    const early = newDir();
    expect(() => new NodeIdentityStore(early, crashingOps(3)).save(first)).toThrow(Crash);
    expect(new NodeIdentityStore(early).load()).toBeUndefined();
    const late = newDir();
    expect(() => new NodeIdentityStore(late, crashingOps(4)).save(first)).toThrow(Crash);
    expectConsistent(late, new NodeIdentityStore(late).load()!);
  });

  it('fail/a certificate without its key is reported, and nothing is deleted', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    unlinkSync(join(dir, 'node', 'key.pem'));
    expect(() => new NodeIdentityStore(dir).load()).toThrow(
      expect.objectContaining({ code: 'ERR_IDENTITY_CORRUPT' }),
    );
    expect(existsSync(join(dir, 'node', 'cert.pem'))).toBe(true);
  });

  it('fail/a key that belongs to another certificate is never paired with it', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    writeFileAtomic(join(dir, 'node', 'key.pem'), second.keyPem, 0o600);
    expect(() => new NodeIdentityStore(dir).load()).toThrow(/no certificate matching its key/);
  });
});
