import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  bootstrap,
  type NewWorkload,
  realWorkloadFileOps,
  type WorkloadFileOps,
  WorkloadStore,
} from '../../../clients/rotation/src';
import { isKeyForCertificate } from '../../../clients/rotation/src/pem';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { itWith, rootUser, tempDir } from '../../support/tools';
import { FakeCa } from './fake-ca';

const root = tempDir('baton-workloads-');
afterAll(() => root.cleanup());
let dirs = 0;
const newDir = () => join(root.path, `d${dirs++}`);

const clock = new FakeClock();
const fake = new FakeCa(clock);
/** Three successive pairs (real certificates and keys) for the workload "web". */
const pairs: NewWorkload[] = [];

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    const id = await bootstrap(fake, fake.token());
    pairs.push({
      name: 'web',
      spiffeId: 'spiffe://test.example.org/web',
      serial: id.serial,
      certificateChainPem: id.certificateChainPem,
      keyPem: id.keyPem,
      bundlePem: id.bundlePem,
      dnsNames: ['web.internal'],
      expiresAt: id.expiresAt,
      refreshAt: id.refreshAt,
    });
    clock.advance(60_000);
  }
});

class Crash extends Error {}

/** Real file operations that perform the first `budget` steps, then crash; `lost` renames are dropped. */
function crashingOps(
  budget: number,
  opts: { loseRename?: boolean } = {},
): WorkloadFileOps & { steps: string[] } {
  const steps: string[] = [];
  const step = <T>(name: string, act: () => T): T => {
    if (steps.length >= budget) throw new Crash(`crash before ${name}`);
    steps.push(name);
    return act();
  };
  const r = realWorkloadFileOps;
  const base = (p: string) => p.split('/').slice(-2).join('/');
  return {
    steps,
    mkdir: (p, m, g) => step(`mkdir ${base(p)}`, () => r.mkdir(p, m, g)),
    writeFile: (p, d, m, o) => step(`write ${base(p)}`, () => r.writeFile(p, d, m, o)),
    fsyncDir: (p) => step(`fsync ${base(p)}`, () => r.fsyncDir(p)),
    symlink: (t, p) => step(`symlink ${base(p)}`, () => r.symlink(t, p)),
    // A power loss before the directory's fsync may forget the rename.
    rename: (f, t) => step(`rename ${base(f)}`, () => (opts.loseRename ? undefined : r.rename(f, t))),
    unlink: (p) => step(`unlink ${base(p)}`, () => r.unlink(p)),
    removeDir: (p, n, q) => step(`removeDir ${base(p)}`, () => r.removeDir(p, n, q)),
  };
}

/** What a reader that resolves the link once sees: a matching pair, or nothing. */
function readPair(dir: string): { serial: string; cert: string; key: string } | undefined {
  let gen: string;
  try {
    gen = realpathSync(join(dir, 'workloads', 'web'));
  } catch {
    return undefined;
  }
  const cert = readFileSync(join(gen, 'cert.pem'), 'utf8');
  const key = readFileSync(join(gen, 'key.pem'), 'utf8');
  const state = JSON.parse(readFileSync(join(gen, 'state.json'), 'utf8')) as { serial: string };
  expect(isKeyForCertificate(cert, key)).toBe(true);
  return { serial: state.serial, cert, key };
}

const listing = (dir: string) => readdirSync(join(dir, 'workloads')).sort();

describe('WorkloadStore', () => {
  it('ok/save: a link to a generation directory with the pair, the bundle and the state; key 0600', () => {
    const dir = newDir();
    const store = new WorkloadStore(dir);
    store.save(pairs[0]!);
    const gen = `.web.${pairs[0]!.serial}`;
    expect(lstatSync(join(dir, 'workloads', 'web')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, 'workloads', 'web'))).toBe(gen);
    expect(listing(dir)).toEqual([gen, 'web'].sort());
    const files = join(dir, 'workloads', 'web');
    expect(readFileSync(join(files, 'cert.pem'), 'utf8')).toBe(pairs[0]!.certificateChainPem);
    expect(readFileSync(join(files, 'key.pem'), 'utf8')).toBe(pairs[0]!.keyPem);
    expect(readFileSync(join(files, 'bundle.pem'), 'utf8')).toBe(pairs[0]!.bundlePem);
    expect(statSync(join(files, 'key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(join(files, 'cert.pem')).mode & 0o777).toBe(0o644);
    expect(store.load('web')).toMatchObject({
      serial: pairs[0]!.serial,
      spiffeId: 'spiffe://test.example.org/web',
      dnsNames: ['web.internal'],
      refreshAt: pairs[0]!.refreshAt,
    });
    expect(store.names()).toEqual(['web']);
  });

  it('ok/each swap keeps the generation it replaced for readers, and drops the one before', () => {
    const dir = newDir();
    const store = new WorkloadStore(dir);
    const held = pairs.map((p) => `.web.${p.serial}`);
    store.save(pairs[0]!);
    const reader = realpathSync(join(dir, 'workloads', 'web'));
    store.save(pairs[1]!);
    expect(listing(dir)).toEqual([held[0], held[1], 'web'].sort());
    // A reader that resolved the link before the swap still reads its whole pair.
    expect(readFileSync(join(reader, 'key.pem'), 'utf8')).toBe(pairs[0]!.keyPem);
    store.save(pairs[2]!);
    expect(listing(dir)).toEqual([held[1], held[2], 'web'].sort());
    expect(store.load('web')!.serial).toBe(pairs[2]!.serial);
  });

  it('ok/remove: the link goes first, then every generation', () => {
    const dir = newDir();
    const store = new WorkloadStore(dir);
    store.save(pairs[0]!);
    store.save(pairs[1]!);
    store.remove('web');
    expect(listing(dir)).toEqual([]);
    expect(store.load('web')).toBeUndefined();
  });

  it('ok/collectGarbage: orphan generations and temporary links go; foreign files stay', () => {
    const dir = newDir();
    const store = new WorkloadStore(dir);
    store.save(pairs[0]!);
    mkdirSync(join(dir, 'workloads', '.gone.00ff'));
    mkdirSync(join(dir, 'workloads', '.web.00ab'));
    writeFileSync(join(dir, 'workloads', '.web.00ab.link'), '');
    writeFileSync(join(dir, 'workloads', 'README'), 'mine');
    store.collectGarbage();
    expect(listing(dir)).toEqual([`.web.${pairs[0]!.serial}`, 'README', 'web'].sort());
  });

  it.each([
    ['fail/a path in the name', '../etc'],
    ['fail/a dot name', '.web'],
    ['fail/an upper-case name', 'Web'],
  ])('%s: refused before any file is touched', (_n, name) => {
    const dir = newDir();
    expect(() => new WorkloadStore(dir).save({ ...pairs[0]!, name })).toThrow(
      expect.objectContaining({ code: 'ERR_BAD_RESPONSE' }),
    );
    expect(() => readdirSync(join(dir, 'workloads'))).toThrow();
  });

  it('fail/a directory that is not the agent link is left alone', () => {
    const dir = newDir();
    mkdirSync(join(dir, 'workloads', 'web'), { recursive: true });
    expect(() => new WorkloadStore(dir).save(pairs[0]!)).toThrow(
      expect.objectContaining({ code: 'ERR_WORKLOAD_DIR' }),
    );
    expect(listing(dir)).toEqual(['web']);
  });

  it('ok/a link that points outside the generations is not trusted', () => {
    const dir = newDir();
    const store = new WorkloadStore(dir);
    store.save(pairs[0]!);
    realWorkloadFileOps.unlink(join(dir, 'workloads', 'web'));
    realWorkloadFileOps.symlink('/etc', join(dir, 'workloads', 'web'));
    expect(store.load('web')).toBeUndefined();
    store.save(pairs[1]!);
    expect(store.load('web')!.serial).toBe(pairs[1]!.serial);
  });
});

describe('WorkloadStore kill safety', () => {
  /** The steps of a swap that replaces a generation, from a dry run. */
  const stepsOf = () => {
    const dir = newDir();
    new WorkloadStore(dir).save(pairs[0]!);
    const ops = crashingOps(Number.POSITIVE_INFINITY);
    new WorkloadStore(dir, ops).save(pairs[1]!);
    return ops.steps;
  };

  it('ok/the swap takes the documented steps; nothing is removed after a first replacement', () => {
    const b = pairs[1]!.serial;
    expect(stepsOf()).toEqual([
      `removeDir workloads/.web.${b}`,
      `mkdir workloads/.web.${b}`,
      `write .web.${b}/key.pem`,
      `write .web.${b}/cert.pem`,
      `write .web.${b}/bundle.pem`,
      `write .web.${b}/state.json`,
      `fsync workloads/.web.${b}`,
      expect.stringMatching(/^fsync d\d+\/workloads$/),
      `unlink workloads/.web.${b}.link`,
      `symlink workloads/.web.${b}.link`,
      `rename workloads/.web.${b}.link`,
      expect.stringMatching(/^fsync d\d+\/workloads$/),
    ]);
  });

  // Every prefix of the swap, then a crash: the reader sees the old pair or the new pair, the
  // next load agrees with it, and the next swap cleans up and works.
  it.each(Array.from({ length: 13 }, (_, k) => [k]))(
    'ok/crash after %i steps of a replacing swap: old pair or new pair, then recovery',
    (k) => {
      const dir = newDir();
      new WorkloadStore(dir).save(pairs[0]!);
      const ops = crashingOps(k);
      try {
        new WorkloadStore(dir, ops).save(pairs[1]!);
      } catch (e) {
        if (!(e instanceof Crash)) throw e;
      }
      const seen = readPair(dir)!;
      const renamed = ops.steps.some((s) => s.startsWith('rename'));
      expect(seen.serial).toBe(renamed ? pairs[1]!.serial : pairs[0]!.serial);
      expect(seen.key).toBe(renamed ? pairs[1]!.keyPem : pairs[0]!.keyPem);
      const store = new WorkloadStore(dir);
      expect(store.load('web')!.serial).toBe(seen.serial);
      store.collectGarbage();
      expect(listing(dir).filter((n) => n.endsWith('.link'))).toEqual([]);
      store.save(pairs[2]!);
      expect(readPair(dir)!.serial).toBe(pairs[2]!.serial);
      expect(listing(dir)).toContain(`.web.${pairs[2]!.serial}`);
      expect(listing(dir).length).toBeLessThanOrEqual(3);
    },
  );

  it.each(Array.from({ length: 12 }, (_, k) => [k]))(
    'ok/crash after %i steps of a first issuance: no files, or the new pair',
    (k) => {
      const dir = newDir();
      const ops = crashingOps(k);
      try {
        new WorkloadStore(dir, ops).save(pairs[0]!);
      } catch (e) {
        if (!(e instanceof Crash)) throw e;
      }
      const seen = readPair(dir);
      const renamed = ops.steps.some((s) => s.startsWith('rename'));
      expect(seen?.serial).toBe(renamed ? pairs[0]!.serial : undefined);
      const store = new WorkloadStore(dir);
      store.collectGarbage();
      expect(listing(dir)).toEqual(renamed ? [`.web.${pairs[0]!.serial}`, 'web'].sort() : []);
    },
  );

  it('ok/a power loss that forgets the rename leaves the old pair, whole', () => {
    const dir = newDir();
    new WorkloadStore(dir).save(pairs[0]!);
    // Crash right after the rename, before the directory fsync, and the rename did not persist.
    const ops = crashingOps(11, { loseRename: true });
    expect(() => new WorkloadStore(dir, ops).save(pairs[1]!)).toThrow(Crash);
    expect(ops.steps.at(-1)).toMatch(/^rename /);
    expect(readPair(dir)!.serial).toBe(pairs[0]!.serial);
  });

  it('ok/crash between unlinking a removed workload and deleting its files: the next pass deletes them', () => {
    const dir = newDir();
    new WorkloadStore(dir).save(pairs[0]!);
    const ops = crashingOps(2);
    expect(() => new WorkloadStore(dir, ops).remove('web')).toThrow(Crash);
    expect(readPair(dir)).toBeUndefined();
    new WorkloadStore(dir).collectGarbage();
    expect(listing(dir)).toEqual([]);
  });
});

const asRoot = (title: string, fn: jest.ProvidesCallback, timeout?: number) =>
  itWith(rootUser, title, fn, timeout);

describe('WorkloadStore ownership', () => {
  asRoot(
    "ok/as root: the generation is the agent's (0750, the entry's group); the owner gets the files; key 0600",
    () => {
      const dir = newDir();
      new WorkloadStore(dir).save({ ...pairs[0]!, owner: { uid: 1234, gid: 4321 } });
      const gen = realpathSync(join(dir, 'workloads', 'web'));
      const dirStat = lstatSync(gen);
      expect([dirStat.uid, dirStat.gid, dirStat.mode & 0o7777]).toEqual([0, 4321, 0o750]);
      for (const f of ['key.pem', 'cert.pem', 'bundle.pem']) {
        const st = lstatSync(join(gen, f));
        expect([f, st.uid, st.gid]).toEqual([f, 1234, 4321]);
      }
      expect(lstatSync(join(gen, 'state.json')).uid).toBe(0);
      expect(statSync(join(gen, 'key.pem')).mode & 0o777).toBe(0o600);
    },
  );

  asRoot("ok/as root, an owner without a group: the generation is the agent's, 0755", () => {
    const dir = newDir();
    new WorkloadStore(dir).save({ ...pairs[0]!, owner: { uid: 1234, gid: -1 } });
    const st = lstatSync(realpathSync(join(dir, 'workloads', 'web')));
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([0, 0, 0o755]);
  });

  asRoot('ok/a new owner does not keep the previous generation (the old owner could read its key)', () => {
    const dir = newDir();
    const store = new WorkloadStore(dir);
    store.save({ ...pairs[0]!, owner: { uid: 1234, gid: -1 } });
    store.save({ ...pairs[1]!, owner: { uid: 2345, gid: -1 } });
    expect(listing(dir)).toEqual([`.web.${pairs[1]!.serial}`, 'web'].sort());
  });
});
