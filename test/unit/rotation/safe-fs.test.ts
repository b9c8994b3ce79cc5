import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  assertPrivateDirectory,
  createFile,
  makeDirectory,
  readOwnFile,
  removeDirectory,
} from '../../../clients/rotation/src/safe-fs';
import { itWith, rootUser, tempDir } from '../../support/tools';

/**
 * safe-fs is what stands between the root agent and a path a workload could have prepared (issue
 * 14): each case plants one of the things a workload could leave at a name, and the operation must
 * refuse it at once or act on the name alone.
 */
const root = tempDir('baton-safe-fs-');
afterAll(() => root.cleanup());
let n = 0;
const fresh = () => {
  const d = join(root.path, `c${n++}`);
  mkdirSync(d, { mode: 0o755 });
  return d;
};
const LIMITS = { maxBytes: 1024 };
const asRoot = (title: string, fn: jest.ProvidesCallback, timeout?: number) =>
  itWith(rootUser, title, fn, timeout);
/** A uid that is not ours, for files "owned by the workload" (any unused uid will do). */
const OTHER = 1000;

describe('readOwnFile', () => {
  it('ok/a regular file of this user, within the bound', () => {
    const d = fresh();
    writeFileSync(join(d, 'f'), 'hello');
    expect(readOwnFile(join(d, 'f'), LIMITS)?.toString()).toBe('hello');
    expect(readOwnFile(join(d, 'missing'), LIMITS)).toBeUndefined();
  });

  const plants: Array<[string, (path: string, d: string) => void]> = [
    [
      'a symlink to a file',
      (p, d) => {
        writeFileSync(join(d, 'target'), 'secret');
        symlinkSync(join(d, 'target'), p);
      },
    ],
    ['a FIFO (would block a plain open)', (p) => execFileSync('mkfifo', [p])],
    ['a directory', (p) => mkdirSync(p)],
    ['a file over the bound', (p) => writeFileSync(p, Buffer.alloc(1025))],
    [
      'a sparse file of 8 GiB',
      (p) => {
        writeFileSync(p, '');
        truncateSync(p, 8 * 1024 ** 3);
      },
    ],
  ];
  it.each(plants)('fail/%s: refused with ERR_UNSAFE_PATH, at once', (_what, plant) => {
    const d = fresh();
    const p = join(d, 'state.json');
    plant(p, d);
    expect(() => readOwnFile(p, LIMITS)).toThrow(expect.objectContaining({ code: 'ERR_UNSAFE_PATH' }));
  });

  asRoot('fail/a file of another user: refused (it could have been planted)', () => {
    const d = fresh();
    writeFileSync(join(d, 'f'), 'x');
    chownSync(join(d, 'f'), OTHER, OTHER);
    expect(() => readOwnFile(join(d, 'f'), LIMITS)).toThrow(
      expect.objectContaining({
        code: 'ERR_UNSAFE_PATH',
        message: expect.stringMatching(/owned by uid 1000/),
      }),
    );
    expect(readOwnFile(join(d, 'f'), { ...LIMITS, ownerUid: OTHER })?.toString()).toBe('x');
  });
});

describe('createFile', () => {
  it('ok/a new file with the exact mode, whatever the umask', () => {
    const d = fresh();
    createFile(join(d, 'key.pem'), 'k', 0o600);
    expect(lstatSync(join(d, 'key.pem')).mode & 0o777).toBe(0o600);
  });

  it.each([
    ['an existing file', (p: string) => writeFileSync(p, 'old')],
    ['a symlink to elsewhere', (p: string, d: string) => symlinkSync(join(d, 'elsewhere'), p)],
  ])('fail/%s at the name: refused, nothing written through it', (_w, plant) => {
    const d = fresh();
    const p = join(d, 'key.pem');
    plant(p, d);
    expect(() => createFile(p, 'new', 0o600)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(existsSync(join(d, 'elsewhere'))).toBe(false);
  });

  asRoot('ok/as root: the owner is given through the descriptor', () => {
    const d = fresh();
    createFile(join(d, 'cert.pem'), 'c', 0o644, { uid: OTHER, gid: OTHER });
    const st = lstatSync(join(d, 'cert.pem'));
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([OTHER, OTHER, 0o644]);
  });
});

describe('removeDirectory', () => {
  const victim = () => {
    const v = fresh();
    writeFileSync(join(v, 'precious'), 'keep me');
    return v;
  };
  const intact = (v: string) => expect(readFileSync(join(v, 'precious'), 'utf8')).toBe('keep me');

  it('ok/unlinks the names given, then the directory', () => {
    const d = fresh();
    const g = join(d, '.web.01');
    mkdirSync(g);
    for (const f of ['cert.pem', 'key.pem']) writeFileSync(join(g, f), f);
    expect(removeDirectory(g, ['cert.pem', 'key.pem', 'absent.pem'], join(d, '.quarantine'))).toBe('removed');
    expect(readdirSync(d)).toEqual([]);
    expect(removeDirectory(g, [], join(d, '.quarantine'))).toBe('missing');
  });

  it('ok/a symlink at a given name is unlinked, never followed', () => {
    const d = fresh();
    const v = victim();
    const g = join(d, '.web.01');
    mkdirSync(g);
    symlinkSync(join(v, 'precious'), join(g, 'cert.pem'));
    symlinkSync(v, join(g, 'key.pem'));
    expect(removeDirectory(g, ['cert.pem', 'key.pem'], join(d, '.quarantine'))).toBe('removed');
    intact(v);
  });

  it('ok/what the agent did not write is not deleted: the directory goes whole to the quarantine', () => {
    const d = fresh();
    const v = victim();
    const g = join(d, '.web.01');
    mkdirSync(join(g, 'sub'), { recursive: true });
    writeFileSync(join(g, 'sub', 'f'), 'planted');
    symlinkSync(v, join(g, 'link-to-victim'));
    writeFileSync(join(g, 'cert.pem'), 'c');
    expect(removeDirectory(g, ['cert.pem', 'sub'], join(d, '.quarantine'))).toBe('quarantined');
    expect(readdirSync(d)).toEqual(['.quarantine']);
    const [q] = readdirSync(join(d, '.quarantine'));
    expect(q).toMatch(/^\.web\.01\.[0-9a-z]+$/);
    expect(readdirSync(join(d, '.quarantine', q!)).sort()).toEqual(['link-to-victim', 'sub']);
    expect(lstatSync(join(d, '.quarantine')).mode & 0o777).toBe(0o700);
    intact(v);
  });

  asRoot(
    'ok/as root: a directory a workload owns is taken over (root, 0700) before any name in it is touched',
    () => {
      const d = fresh();
      const g = join(d, '.web.01');
      mkdirSync(join(g, 'planted'), { recursive: true });
      chownSync(g, OTHER, OTHER);
      chmodSync(g, 0o777);
      expect(removeDirectory(g, [], join(d, '.quarantine'))).toBe('quarantined');
      const [q] = readdirSync(join(d, '.quarantine'));
      const st = lstatSync(join(d, '.quarantine', q!));
      expect([st.uid, st.mode & 0o777]).toEqual([0, 0o700]);
    },
  );
});

describe('makeDirectory and assertPrivateDirectory', () => {
  it('ok/a directory of this user under sticky /tmp is private', () => {
    const d = fresh();
    expect(() => assertPrivateDirectory(d)).not.toThrow();
    makeDirectory(join(d, 'g'), 0o750);
    expect(lstatSync(join(d, 'g')).mode & 0o7777).toBe(0o750);
  });

  it.each([
    ['fail/the directory is writable by others', (d: string) => chmodSync(d, 0o777), (d: string) => d],
    ['fail/the directory is group-writable', (d: string) => chmodSync(d, 0o775), (d: string) => d],
    [
      'fail/a parent is writable by others and not sticky',
      (d: string) => {
        chmodSync(d, 0o777);
        mkdirSync(join(d, 'agent'), { mode: 0o755 });
      },
      (d: string) => join(d, 'agent'),
    ],
  ])('%s', (_w, setup, target) => {
    const d = fresh();
    setup(d);
    expect(() => assertPrivateDirectory(target(d))).toThrow(
      expect.objectContaining({
        code: 'ERR_UNSAFE_PATH',
        message: expect.stringMatching(/writable by other users/),
      }),
    );
  });

  it('ok/a sticky world-writable parent (like /tmp) is allowed: others cannot rename what is ours', () => {
    const d = fresh();
    chmodSync(d, 0o1777);
    mkdirSync(join(d, 'agent'), { mode: 0o755 });
    expect(() => assertPrivateDirectory(join(d, 'agent'))).not.toThrow();
  });

  asRoot('fail/as root: the directory or a parent belongs to another user', () => {
    const d = fresh();
    mkdirSync(join(d, 'agent'), { mode: 0o755 });
    chownSync(join(d, 'agent'), OTHER, OTHER);
    expect(() => assertPrivateDirectory(join(d, 'agent'))).toThrow(/owned by uid 1000/);
    const p = fresh();
    mkdirSync(join(p, 'agent'), { mode: 0o755 });
    chownSync(p, OTHER, OTHER);
    expect(() => assertPrivateDirectory(join(p, 'agent'))).toThrow(
      /owned by uid 1000: only root or the agent/,
    );
  });
});
