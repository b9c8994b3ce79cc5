import { validateDnsName } from '../../../services/ca/src/domain/dns-name';

describe('DNS SAN validation', () => {
  it.each([
    ['ok/simple', 'web.internal', false],
    ['ok/deep', 'a.b.c.example.org', false],
    ['ok/digits and hyphens', 'web-1.x2.example.org', false],
    ['ok/A-label', 'xn--bcher-kva.example', false],
    ['ok/wildcard when allowed', '*.web.example.org', true],
    ['ok/63-character label', `${'a'.repeat(63)}.example.org`, false],
  ])('%s', (_name, name, allowWildcard) => {
    expect(validateDnsName(name, { allowWildcard })).toBe(name);
  });

  it.each([
    ['fail/wildcard not allowed', '*.web.example.org', false, /wildcards need an entry/],
    ['fail/wildcard not leftmost', 'web.*.example.org', true, /leftmost/],
    ['fail/partial wildcard', 'w*.example.org', true, /partial-label/],
    ['fail/wildcard over a TLD', '*.org', true, /at least two labels after/],
    ['fail/IPv4 literal', '10.0.0.1', false, /IP addresses/],
    ['fail/IPv6 literal', '::1', false, /IP addresses/],
    ['fail/bracketed IPv6', '[::1]', false, /IP addresses/],
    ['fail/U-label', 'bücher.example', false, /A-labels/],
    ['fail/invalid A-label', 'xn--zz9-.example', false, /labels are|invalid A-label/],
    ['fail/reserved hyphens', 'ab--cd.example', false, /reserved label/],
    ['fail/uppercase', 'Web.example.org', false, /lowercase/],
    ['fail/trailing dot', 'web.example.org.', false, /trailing dot/],
    ['fail/single label', 'localhost', false, /two labels/],
    ['fail/leading hyphen', '-web.example.org', false, /labels are/],
    ['fail/empty label', 'web..example.org', false, /labels are/],
    ['fail/64-character label', `${'a'.repeat(64)}.example.org`, false, /labels are/],
    ['fail/too long', `${'a.'.repeat(127)}org`, false, /253/],
    ['fail/numeric TLD', 'web.123', false, /all-numeric/],
    ['fail/underscore', 'we_b.example.org', false, /labels are/],
  ])('%s', (_name, name, allowWildcard, why) => {
    expect(() => validateDnsName(name, { allowWildcard })).toThrow(why);
  });
});
