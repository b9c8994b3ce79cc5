import { validateSpiffeId, validateWorkloadSpiffeId } from '../../../services/ca/src/domain/spiffe-id';

const TD = 'prod.example.org';

describe('SPIFFE ID validation (SPIFFE ID spec §2), refused rather than normalized', () => {
  it.each([
    ['ok/simple path', 'spiffe://prod.example.org/web'],
    ['ok/nested path', 'spiffe://prod.example.org/ns/default/sa/web'],
    ['ok/allowed punctuation', 'spiffe://prod.example.org/a.b-c_d/E9'],
    [
      'ok/2048 bytes exactly',
      `spiffe://prod.example.org/${'a'.repeat(2048 - 'spiffe://prod.example.org/'.length)}`,
    ],
  ])('%s', (_name, id) => {
    expect(validateSpiffeId(id, TD)).toBe(id);
  });

  it.each([
    ['fail/other trust domain', 'spiffe://other.example.org/web', /trust domain must be prod\.example\.org/],
    ['fail/uppercase trust domain', 'spiffe://Prod.example.org/web', /lowercase/],
    ['fail/uppercase scheme', 'SPIFFE://prod.example.org/web', /spiffe:\/\//],
    ['fail/other scheme', 'https://prod.example.org/web', /spiffe:\/\//],
    ['fail/empty segment', 'spiffe://prod.example.org/a//b', /empty path segment/],
    ['fail/dot segment', 'spiffe://prod.example.org/a/./b', /"\." and "\.\."/],
    ['fail/dot-dot segment', 'spiffe://prod.example.org/a/../b', /"\." and "\.\."/],
    ['fail/percent encoding', 'spiffe://prod.example.org/a%2Fb', /percent-encoding/],
    ['fail/trailing slash', 'spiffe://prod.example.org/web/', /trailing slash/],
    ['fail/query', 'spiffe://prod.example.org/web?x=1', /query/],
    ['fail/fragment', 'spiffe://prod.example.org/web#x', /fragment/],
    ['fail/userinfo', 'spiffe://user@prod.example.org/web', /userinfo/],
    ['fail/port', 'spiffe://prod.example.org:443/web', /port/],
    ['fail/no path', 'spiffe://prod.example.org', /needs a path/],
    ['fail/root path', 'spiffe://prod.example.org/', /needs a path/],
    ['fail/empty', '', /required/],
    [
      'fail/over 2048 bytes',
      `spiffe://prod.example.org/${'a'.repeat(2049 - 'spiffe://prod.example.org/'.length)}`,
      /2048/,
    ],
    ['fail/non-ASCII path', 'spiffe://prod.example.org/wéb', /letters, digits/],
    ['fail/space', 'spiffe://prod.example.org/we b', /letters, digits/],
  ])('%s', (_name, id, why) => {
    expect(() => validateSpiffeId(id, TD)).toThrow(
      expect.objectContaining({ code: 'ERR_BAD_REQUEST', message: expect.stringMatching(why) }),
    );
  });

  it.each([
    ['fail/node path', 'spiffe://prod.example.org/node/n1'],
    ['fail/admin path', 'spiffe://prod.example.org/admin/root'],
    ['fail/baton path', 'spiffe://prod.example.org/baton/server'],
    ['fail/bare reserved word', 'spiffe://prod.example.org/node'],
  ])('%s: entries may not claim identities Baton mints itself', (_name, id) => {
    expect(() => validateWorkloadSpiffeId(id, TD)).toThrow(/reserved/);
  });

  it('ok/a path that merely starts with a reserved word is allowed', () => {
    expect(validateWorkloadSpiffeId('spiffe://prod.example.org/nodejs/web', TD)).toBe(
      'spiffe://prod.example.org/nodejs/web',
    );
  });
});
