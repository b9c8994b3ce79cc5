import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  bootstrap,
  type NewNodeIdentity,
  NodeIdentityStore,
  type StoredNodeIdentity,
  writeFileAtomic,
} from '../../../clients/rotation/src';
import { type NodeFileOps, realNodeFileOps } from '../../../clients/rotation/src/node-identity-store';
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
/** Four successive identities of one node, a minute apart. */
const ids: NewNodeIdentity[] = [];
let first: NewNodeIdentity;
let second: NewNodeIdentity;
let third: NewNodeIdentity;

beforeAll(async () => {
  for (let i = 0; i < 4; i++) {
    ids.push(await bootstrap(fake, fake.token()));
    clock.advance(60_000);
  }
  [first, second, third] = ids as [NewNodeIdentity, NewNodeIdentity, NewNodeIdentity];
});

const gen = (id: NewNodeIdentity) => `.node.${id.serial}`;

class Crash extends Error {}

/**
 * Real file operations that perform the first `budget` steps, then crash. With `loseRename`, the
 * rename of the temporary link does nothing: a power loss before DIR's fsync forgot it.
 */
function crashingOps(budget: number, opts: { loseRename?: boolean } = {}): NodeFileOps & { steps: string[] } {
  const steps: string[] = [];
  const step = (name: string, act: () => void) => {
    if (steps.length >= budget) throw new Crash(`crash before ${name}`);
    steps.push(name);
    act();
  };
  const r = realNodeFileOps;
  // Paths relative to the agent's directory (root/d<n>), which is '.'.
  const base = (p: string) =>
    p
      .slice(root.path.length + 1)
      .split('/')
      .slice(1)
      .join('/') || '.';
  return {
    steps,
    writeFileAtomic: (p, d, m) => step(`replace ${base(p)}`, () => r.writeFileAtomic(p, d, m)),
    mkdir: (p, m, g) => step(`mkdir ${base(p)}`, () => r.mkdir(p, m, g)),
    writeFile: (p, d, m) => step(`write ${base(p)}`, () => r.writeFile(p, d, m)),
    fsyncDir: (p) => step(`fsync ${base(p)}`, () => r.fsyncDir(p)),
    symlink: (t, p) => step(`symlink ${base(p)}`, () => r.symlink(t, p)),
    rename: (f, t) =>
      step(`rename ${base(f)}`, () => (opts.loseRename && f.endsWith('.link') ? undefined : r.rename(f, t))),
    unlink: (p) => step(`unlink ${base(p)}`, () => r.unlink(p)),
    removeDir: (p, n, q) => step(`removeDir ${base(p)}`, () => r.removeDir(p, n, q)),
  };
}

/** The agent's own entries in DIR: generations, temporary links, the legacy directory. */
const agentEntries = (dir: string) =>
  readdirSync(dir)
    .filter((e) => e.startsWith('.node.'))
    .sort();

/**
 * What every reader must find: DIR/node resolves to a directory with exactly the three files, a
 * matching pair, the key 0600; nothing left of a swap but the current generation and at most the
 * one it replaced, each complete.
 */
function expectConsistent(dir: string, loaded: StoredNodeIdentity): void {
  const node = join(dir, 'node');
  const files = realpathSync(node);
  expect(statSync(files).isDirectory()).toBe(true);
  expect(readdirSync(files).sort()).toEqual(['cert.pem', 'key.pem', 'state.json']);
  const cert = readFileSync(join(files, 'cert.pem'), 'utf8');
  const key = readFileSync(join(files, 'key.pem'), 'utf8');
  expect(cert).toBe(loaded.certificateChainPem);
  expect(key).toBe(loaded.keyPem);
  expect(isKeyForCertificate(cert, key)).toBe(true);
  expect(statSync(join(files, 'key.pem')).mode & 0o777).toBe(0o600);
  const entries = agentEntries(dir);
  expect(entries.filter((e) => !/^\.node\.[0-9a-f]+$/.test(e))).toEqual([]);
  expect(entries.length).toBeLessThanOrEqual(2);
  if (lstatSync(node).isSymbolicLink()) expect(entries).toContain(readlinkSync(node));
  for (const e of entries)
    expect(
      isKeyForCertificate(
        readFileSync(join(dir, e, 'cert.pem'), 'utf8'),
        readFileSync(join(dir, e, 'key.pem'), 'utf8'),
      ),
    ).toBe(true);
}

function expectIdentity(loaded: StoredNodeIdentity | undefined, id: NewNodeIdentity): void {
  expect(loaded).toBeDefined();
  expect(loaded!.serial).toBe(id.serial);
  expect(loaded!.keyPem).toBe(id.keyPem);
  expect(loaded!.certificateChainPem).toBe(id.certificateChainPem);
  expect(loaded!.refreshAt).toEqual(id.refreshAt);
  expect(loaded!.spiffeId).toBe(id.spiffeId);
  expect(loaded!.nodeId).toBe(id.nodeId);
}

const stateText = (id: NewNodeIdentity) =>
  `${JSON.stringify({
    serial: id.serial,
    node_id: id.nodeId,
    spiffe_id: id.spiffeId,
    expires_at: id.expiresAt.toISOString(),
    refresh_at: id.refreshAt.toISOString(),
  })}\n`;

/** DIR/node as a plain directory, as versions before the generation directories wrote it. */
function writeLegacy(dir: string, files: Record<string, string>, bundlePem = first.bundlePem): void {
  mkdirSync(join(dir, 'node'), { recursive: true });
  writeFileSync(join(dir, 'bundle.pem'), bundlePem);
  for (const [name, text] of Object.entries(files))
    writeFileSync(join(dir, 'node', name), text, { mode: name.startsWith('key') ? 0o600 : 0o644 });
}

const legacyOf = (id: NewNodeIdentity) => ({
  'cert.pem': id.certificateChainPem,
  'key.pem': id.keyPem,
  'state.json': stateText(id),
});

/** The steps of a save over a linked generation. */
const SAVE_STEPS = (id: NewNodeIdentity) => [
  'replace bundle.pem',
  `removeDir ${gen(id)}`,
  `mkdir ${gen(id)}`,
  `write ${gen(id)}/state.json`,
  `write ${gen(id)}/key.pem`,
  `write ${gen(id)}/cert.pem`,
  `fsync ${gen(id)}`,
  'fsync .',
  `unlink ${gen(id)}.link`,
  `symlink ${gen(id)}.link`,
  `rename ${gen(id)}.link`,
  'fsync .',
];
/** The step list for any identity (the names differ, not the steps): `first` is made later, in beforeAll. */
const ANY = { serial: 'any' } as NewNodeIdentity;
const SAVE_STEP_COUNT = SAVE_STEPS(ANY).length;
/** Steps after which the new generation's pair is complete on disk (its cert.pem is written). */
const COMPLETE = SAVE_STEPS(ANY).indexOf(`write ${gen(ANY)}/cert.pem`) + 1;

describe('NodeIdentityStore', () => {
  it('ok/empty directory: no identity', () => {
    expect(new NodeIdentityStore(newDir()).load()).toBeUndefined();
  });

  it('ok/save then load: DIR/node links to a generation with the files of the contract, key 0600', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    expect(lstatSync(join(dir, 'node')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, 'node'))).toBe(gen(first));
    expect(readdirSync(dir).sort()).toEqual([gen(first), 'bundle.pem', 'node']);
    const loaded = new NodeIdentityStore(dir).load()!;
    expectIdentity(loaded, first);
    expect(loaded.bundlePem).toBe(first.bundlePem);
    expect(loaded.notAfter.getTime()).toBe(Math.floor(first.expiresAt.getTime() / 1000) * 1000);
    expect(readFileSync(join(dir, 'bundle.pem'), 'utf8')).toBe(first.bundlePem);
    expect(JSON.parse(readFileSync(join(dir, 'node', 'state.json'), 'utf8'))).toEqual(
      JSON.parse(stateText(first)),
    );
    expect(statSync(join(dir, 'node', 'cert.pem')).mode & 0o777).toBe(0o644);
    expectConsistent(dir, loaded);
  });

  it('ok/the steps of a save, in order', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    const ops = crashingOps(Number.POSITIVE_INFINITY);
    new NodeIdentityStore(dir, ops).save(second);
    expect(ops.steps).toEqual(SAVE_STEPS(second));
    expect(ops.steps).toHaveLength(SAVE_STEP_COUNT);
  });

  it('ok/each save keeps the generation it replaced for readers and removes the one before', () => {
    const dir = newDir();
    const store = new NodeIdentityStore(dir);
    store.save(ids[0]!);
    const reader = realpathSync(join(dir, 'node'));
    store.save(ids[1]!);
    expect(agentEntries(dir)).toEqual([gen(ids[0]!), gen(ids[1]!)].sort());
    // A reader that resolved the link before the swap still reads its whole pair.
    expect(readFileSync(join(reader, 'key.pem'), 'utf8')).toBe(ids[0]!.keyPem);
    store.save(ids[2]!);
    expect(agentEntries(dir)).toEqual([gen(ids[1]!), gen(ids[2]!)].sort());
    store.save(ids[3]!);
    expect(agentEntries(dir)).toEqual([gen(ids[2]!), gen(ids[3]!)].sort());
    const loaded = store.load()!;
    expectIdentity(loaded, ids[3]!);
    expectConsistent(dir, loaded);
  });

  // Crash before each of SAVE_STEPS, and once after the last.
  it.each(Array.from({ length: SAVE_STEP_COUNT + 1 }, (_, n) => n))(
    'ok/crash after %i steps of a save: the old or the new identity, always a matching pair',
    (n) => {
      const dir = newDir();
      new NodeIdentityStore(dir).save(first);
      const ops = crashingOps(n);
      if (n < SAVE_STEP_COUNT) expect(() => new NodeIdentityStore(dir, ops).save(second)).toThrow(Crash);
      else new NodeIdentityStore(dir, ops).save(second);
      const loaded = new NodeIdentityStore(dir).load();
      // Once the new generation's pair is on disk, the CA has superseded the old one: it wins.
      const expected = n >= COMPLETE ? second : first;
      expectIdentity(loaded, expected);
      expect(readlinkSync(join(dir, 'node'))).toBe(gen(expected));
      expect(agentEntries(dir)).toEqual(n >= COMPLETE ? [gen(first), gen(second)].sort() : [gen(first)]);
      expectConsistent(dir, loaded!);
      // Nothing is left to repair: a second load changes nothing.
      expectIdentity(new NodeIdentityStore(dir).load(), expected);
      expect(readlinkSync(join(dir, 'node'))).toBe(gen(expected));
    },
  );

  it.each(Array.from({ length: SAVE_STEP_COUNT + 1 }, (_, n) => n))(
    'ok/crash after %i steps of the very first save: nothing or the whole pair',
    (n) => {
      const dir = newDir();
      if (n < SAVE_STEP_COUNT)
        expect(() => new NodeIdentityStore(dir, crashingOps(n)).save(first)).toThrow(Crash);
      else new NodeIdentityStore(dir, crashingOps(n)).save(first);
      const loaded = new NodeIdentityStore(dir).load();
      if (n < COMPLETE) {
        expect(loaded).toBeUndefined();
        expect(existsSync(dir) ? agentEntries(dir) : []).toEqual([]);
        expect(existsSync(join(dir, 'node'))).toBe(false);
      } else {
        expectIdentity(loaded, first);
        expectConsistent(dir, loaded!);
      }
    },
  );

  it.each([
    ['ok/the save finished', Number.POSITIVE_INFINITY],
    ['ok/crash right after the rename', SAVE_STEP_COUNT - 1],
  ])(
    '%s, but a power loss lost the link rename: the new, complete generation is adopted',
    (_name, budget) => {
      const dir = newDir();
      new NodeIdentityStore(dir).save(first);
      const ops = crashingOps(budget, { loseRename: true });
      if (Number.isFinite(budget)) expect(() => new NodeIdentityStore(dir, ops).save(second)).toThrow(Crash);
      else new NodeIdentityStore(dir, ops).save(second);
      expect(readlinkSync(join(dir, 'node'))).toBe(gen(first));
      const loaded = new NodeIdentityStore(dir).load()!;
      expectIdentity(loaded, second);
      expect(readlinkSync(join(dir, 'node'))).toBe(gen(second));
      expectConsistent(dir, loaded);
    },
  );

  it('ok/a lost link rename on a later save: the newest complete generation wins, the oldest is gone', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    new NodeIdentityStore(dir).save(second);
    new NodeIdentityStore(dir, crashingOps(Number.POSITIVE_INFINITY, { loseRename: true })).save(third);
    // The save removed the generation before the one it meant to replace; the link still names that one.
    expect(agentEntries(dir)).toEqual([gen(second), gen(third)].sort());
    const loaded = new NodeIdentityStore(dir).load()!;
    expectIdentity(loaded, third);
    expect(agentEntries(dir)).toEqual([gen(second), gen(third)].sort());
    expectConsistent(dir, loaded);
  });

  it.each([
    ['cert.pem', 'empty', () => ''],
    ['key.pem', 'empty', () => ''],
    ['cert.pem', 'cut short', () => second.certificateChainPem.slice(0, 200)],
    ['key.pem', 'of another certificate', () => ids[3]!.keyPem],
  ])(
    'ok/a power loss before the generation fsync left %s %s: the orphan is removed, the old pair stays',
    (file, _how, text) => {
      const dir = newDir();
      new NodeIdentityStore(dir).save(first);
      expect(() => new NodeIdentityStore(dir, crashingOps(COMPLETE)).save(second)).toThrow(Crash);
      writeFileSync(join(dir, gen(second), file), text());
      const loaded = new NodeIdentityStore(dir).load()!;
      expectIdentity(loaded, first);
      expect(agentEntries(dir)).toEqual([gen(first)]);
      expectConsistent(dir, loaded);
    },
  );

  it('ok/an older complete orphan is not adopted', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(second);
    // A generation of an earlier certificate that is not linked (it was replaced).
    const elsewhere = newDir();
    new NodeIdentityStore(elsewhere).save(first);
    const other = join(elsewhere, gen(first));
    mkdirSync(join(dir, gen(first)));
    for (const f of ['cert.pem', 'key.pem', 'state.json'])
      writeFileSync(join(dir, gen(first), f), readFileSync(join(other, f)));
    expectIdentity(new NodeIdentityStore(dir).load(), second);
    expect(readlinkSync(join(dir, 'node'))).toBe(gen(second));
  });

  describe('the layout of earlier versions (DIR/node a plain directory)', () => {
    it('ok/loads it, and the next save migrates it to a link', () => {
      const dir = newDir();
      writeLegacy(dir, legacyOf(first));
      const loaded = new NodeIdentityStore(dir).load()!;
      expectIdentity(loaded, first);
      expect(lstatSync(join(dir, 'node')).isDirectory()).toBe(true);
      expectConsistent(dir, loaded);
      const ops = crashingOps(Number.POSITIVE_INFINITY);
      new NodeIdentityStore(dir, ops).save(second);
      expect(ops.steps).toContain('rename node');
      expect(lstatSync(join(dir, 'node')).isSymbolicLink()).toBe(true);
      expect(readdirSync(dir).sort()).toEqual([gen(second), 'bundle.pem', 'node']);
      const after = new NodeIdentityStore(dir).load()!;
      expectIdentity(after, second);
      expectConsistent(dir, after);
    });

    it.each([
      [
        'ok/killed between its key and cert renames: the staged certificate of the new key',
        {
          'cert.pem': 'first',
          'key.pem': 'second',
          'cert.pem.new': 'second',
          'state.json.new': 'second',
          'state.json': 'first',
        },
        'second',
      ],
      [
        'ok/killed before its renames: the staged pair',
        {
          'cert.pem': 'first',
          'key.pem': 'first',
          'state.json': 'first',
          'cert.pem.new': 'second',
          'key.pem.new': 'second',
          'state.json.new': 'second',
        },
        'second',
      ],
      [
        'ok/killed while staging: the current pair',
        {
          'cert.pem': 'first',
          'key.pem': 'first',
          'state.json': 'first',
          'key.pem.new': 'second',
          'state.json.new': 'second',
        },
        'first',
      ],
    ] as const)('%s', (_name, layout, winner) => {
      const dir = newDir();
      const of = { first: () => first, second: () => second };
      const files: Record<string, string> = {};
      for (const [name, who] of Object.entries(layout)) {
        const id = of[who]();
        files[name] = name.startsWith('cert')
          ? id.certificateChainPem
          : name.startsWith('key')
            ? id.keyPem
            : stateText(id);
      }
      writeLegacy(dir, files);
      const expected = of[winner]();
      expectIdentity(new NodeIdentityStore(dir).load(), expected);
      // The next save migrates whatever was staged.
      new NodeIdentityStore(dir).save(third);
      expect(readdirSync(dir).sort()).toEqual([gen(third), 'bundle.pem', 'node']);
      const after = new NodeIdentityStore(dir).load()!;
      expectIdentity(after, third);
      expectConsistent(dir, after);
    });

    // A migrating save: SAVE_STEPS plus remove .node.legacy, rename node aside before the link,
    // and remove .node.legacy after the fsync: 15 steps.
    const MIGRATION_STEPS = 15;
    it('ok/a migrating save takes MIGRATION_STEPS steps (the crash cases below cover each)', () => {
      const dir = newDir();
      writeLegacy(dir, legacyOf(first));
      const ops = crashingOps(Number.POSITIVE_INFINITY);
      new NodeIdentityStore(dir, ops).save(second);
      expect(ops.steps).toHaveLength(MIGRATION_STEPS);
    });
    it.each(Array.from({ length: MIGRATION_STEPS + 1 }, (_, n) => n))(
      'ok/crash after %i steps of a migrating save: the old or the new identity, and the next save finishes',
      (n) => {
        const dir = newDir();
        writeLegacy(dir, legacyOf(first));
        const ops = crashingOps(n);
        if (n < MIGRATION_STEPS) expect(() => new NodeIdentityStore(dir, ops).save(second)).toThrow(Crash);
        else new NodeIdentityStore(dir, ops).save(second);
        const loaded = new NodeIdentityStore(dir).load();
        const expected = n >= COMPLETE ? second : first;
        expectIdentity(loaded, expected);
        // Either migrated (a link to the new generation) or still the old directory, never neither.
        if (n >= COMPLETE) expect(readlinkSync(join(dir, 'node'))).toBe(gen(second));
        else expect(lstatSync(join(dir, 'node')).isDirectory()).toBe(true);
        expect(existsSync(join(dir, '.node.legacy'))).toBe(false);
        expectConsistent(dir, loaded!);
        new NodeIdentityStore(dir).save(third);
        const after = new NodeIdentityStore(dir).load()!;
        expectIdentity(after, third);
        expect(readlinkSync(join(dir, 'node'))).toBe(gen(third));
        expectConsistent(dir, after);
      },
    );

    it('ok/the migrating save stops after moving the directory aside, and the new generation is garbled: the directory comes back', () => {
      const dir = newDir();
      writeLegacy(dir, legacyOf(first));
      const ops = crashingOps(12);
      expect(() => new NodeIdentityStore(dir, ops).save(second)).toThrow(Crash);
      expect(ops.steps.at(-1)).toBe('rename node');
      expect(existsSync(join(dir, 'node'))).toBe(false);
      writeFileSync(join(dir, gen(second), 'cert.pem'), '');
      const loaded = new NodeIdentityStore(dir).load()!;
      expectIdentity(loaded, first);
      expect(lstatSync(join(dir, 'node')).isDirectory()).toBe(true);
      expect(agentEntries(dir)).toEqual([]);
      expectConsistent(dir, loaded);
    });
  });

  it('fail/a certificate without its key is reported, and nothing is deleted', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    unlinkSync(join(dir, 'node', 'key.pem'));
    const before = readdirSync(dir).sort();
    expect(() => new NodeIdentityStore(dir).load()).toThrow(
      expect.objectContaining({
        code: 'ERR_IDENTITY_CORRUPT',
        message: expect.stringContaining(join(dir, 'node')),
      }),
    );
    expect(existsSync(join(dir, 'node', 'cert.pem'))).toBe(true);
    expect(readdirSync(dir).sort()).toEqual(before);
  });

  it('fail/a key that belongs to another certificate is never paired with it, even with a newer orphan beside it', () => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    writeFileAtomic(join(dir, 'node', 'key.pem'), second.keyPem, 0o600);
    expect(() => new NodeIdentityStore(dir, crashingOps(COMPLETE + 1)).save(second)).toThrow(Crash);
    const before = readdirSync(dir).sort();
    expect(() => new NodeIdentityStore(dir).load()).toThrow(/no certificate matching its key/);
    expect(readlinkSync(join(dir, 'node'))).toBe(gen(first));
    expect(readdirSync(dir).sort()).toEqual(before);
  });

  it.each([
    ['fail/a serial that is not hex', { serial: '../x' }, /bad serial/],
    ['fail/the serial of the current certificate', {}, /serial of the current certificate/],
  ])('%s is refused before anything is written', (_name, change, message) => {
    const dir = newDir();
    new NodeIdentityStore(dir).save(first);
    const before = readdirSync(dir).sort();
    expect(() => new NodeIdentityStore(dir).save({ ...first, bundlePem: 'not written', ...change })).toThrow(
      expect.objectContaining({ code: 'ERR_BAD_RESPONSE', message: expect.stringMatching(message) }),
    );
    expect(readdirSync(dir).sort()).toEqual(before);
    expect(readFileSync(join(dir, 'bundle.pem'), 'utf8')).toBe(first.bundlePem);
    expectIdentity(new NodeIdentityStore(dir).load(), first);
  });
});
