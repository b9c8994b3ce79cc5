import {
  cachedCaller,
  entryMatches,
  selectorMatches,
} from '../../../clients/rotation/src/workload-api/selectors';

/** Which entries a Workload API caller gets: all selectors must match, and there must be one. */

const caller = (uid: number, gid: number, exe?: string) => {
  let lookups = 0;
  const c = cachedCaller(uid, gid, () => {
    lookups++;
    return exe;
  });
  return { c, lookups: () => lookups };
};

describe('Workload API selectors', () => {
  it.each([
    ['unix:uid:1000', true],
    ['unix:uid:1001', false],
    ['unix:gid:2000', true],
    ['unix:gid:1000', false],
    ['unix:path:/usr/bin/app', true],
    ['unix:path:/usr/bin/other', false],
    // Malformed or unknown: never a match, so a selector the agent does not know withholds.
    ['unix:uid:01000', false],
    ['unix:uid:+1000', false],
    ['unix:uid:1000 ', false],
    ['unix:uid:', false],
    ['unix:uid:99999999999', false],
    ['unix:path:usr/bin/app', false],
    ['unix:user:root', false],
    ['k8s:ns:default', false],
    ['', false],
  ])('%s → %s', (selector, expected) => {
    expect(selectorMatches(selector, caller(1000, 2000, '/usr/bin/app').c)).toBe(expected);
  });

  it('an entry matches only when every selector does, and an entry without selectors never does', () => {
    const { c } = caller(1000, 2000, '/usr/bin/app');
    expect(entryMatches(['unix:uid:1000', 'unix:gid:2000'], c)).toBe(true);
    expect(entryMatches(['unix:uid:1000', 'unix:gid:2001'], c)).toBe(false);
    expect(entryMatches(['unix:uid:1000', 'unix:path:/usr/bin/app'], c)).toBe(true);
    expect(entryMatches([], c)).toBe(false);
  });

  it('the executable is looked up once, and only when a uid or gid selector has not already refused', () => {
    const a = caller(1000, 2000, '/usr/bin/app');
    expect(entryMatches(['unix:path:/usr/bin/app', 'unix:uid:1001'], a.c)).toBe(false);
    expect(a.lookups()).toBe(0);
    expect(entryMatches(['unix:path:/usr/bin/app', 'unix:uid:1000'], a.c)).toBe(true);
    expect(entryMatches(['unix:path:/usr/bin/app'], a.c)).toBe(true);
    expect(a.lookups()).toBe(1);
  });

  it('a caller whose executable cannot be known matches no path selector', () => {
    const { c } = caller(1000, 2000, undefined);
    expect(entryMatches(['unix:uid:1000', 'unix:path:/usr/bin/app'], c)).toBe(false);
    expect(entryMatches(['unix:uid:1000'], c)).toBe(true);
  });
});
