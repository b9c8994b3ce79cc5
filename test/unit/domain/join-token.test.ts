import { FakeClock } from '../../../services/ca/src/domain/clock';
import {
  type CreateTokenParams,
  createJoinToken,
  parseJoinToken,
  TOKEN_PREFIX,
} from '../../../services/ca/src/domain/join-token';
import type { TokenRecord, TokenRepository } from '../../../services/ca/src/domain/ports';
import { errorOf } from '../../support/errors';

const PIN = 'a'.repeat(52);
const SECRET = 'b'.repeat(52);

describe('parseJoinToken (a string; the edge reads the JSON value)', () => {
  it('parses BATON1-<pin>-<id>.<secret>', () => {
    expect(parseJoinToken(`BATON1-${PIN}-0123456789abcdef.${SECRET}`)).toEqual({
      pin: PIN,
      id: '0123456789abcdef',
      secret: SECRET,
    });
  });

  it.each([
    ['empty', ''],
    ['another version', `BATON2-${PIN}-0123456789abcdef.${SECRET}`],
    ['an uppercase id', `BATON1-${PIN}-0123456789ABCDEF.${SECRET}`],
    ['a short secret', `BATON1-${PIN}-0123456789abcdef.${SECRET.slice(1)}`],
    ['a trailing newline', `BATON1-${PIN}-0123456789abcdef.${SECRET}\n`],
  ])('refuses %s like any bad token', (_name, token) => {
    const e = errorOf(() => parseJoinToken(token));
    expect(`${e.code} ${e.message}`).toBe('ERR_TOKEN_INVALID invalid join token');
  });
});

describe('createJoinToken checks the values it is given', () => {
  const tokens = (): TokenRepository & { all: TokenRecord[] } => {
    const all: TokenRecord[] = [];
    return { all, insert: async (r: TokenRecord) => void all.push(r) } as unknown as TokenRepository & {
      all: TokenRecord[];
    };
  };
  const params = (over: Partial<CreateTokenParams> = {}): CreateTokenParams => ({
    role: 'worker',
    ttlMs: 15 * 60_000,
    uses: 1,
    nodeName: null,
    nodeTtlMs: null,
    createdBy: 'test',
    pin: PIN,
    ...over,
  });
  const clock = new FakeClock('2026-01-01T00:00:00Z');

  it('makes a token that parses back to the record', async () => {
    const repo = tokens();
    const { token, record } = await createJoinToken({ clock, tokens: repo }, params({ nodeName: 'web-1' }));
    expect(token.startsWith(`${TOKEN_PREFIX}-${PIN}-`)).toBe(true);
    expect(parseJoinToken(token).id).toBe(record.id);
    expect(repo.all).toEqual([record]);
  });

  it.each([
    ['uses 0', { uses: 0 }, 'ERR_BAD_REQUEST a token has from 1 to 10000 uses (an integer)'],
    ['uses fractional', { uses: 1.5 }, 'ERR_BAD_REQUEST a token has from 1 to 10000 uses (an integer)'],
    [
      'a node name off the grammar',
      { nodeName: 'Bad Name' },
      'ERR_BAD_REQUEST node name: lowercase letters, digits, ".", "-", "_" (at most 63)',
    ],
    [
      'a bound token with two uses',
      { nodeName: 'web-1', uses: 2 },
      'ERR_BAD_REQUEST a token bound to a node name has exactly one use',
    ],
  ])('refuses %s', async (_name, over, expected) => {
    const e = await errorOf(createJoinToken({ clock, tokens: tokens() }, params(over)));
    expect(`${e.code} ${e.message}`).toBe(expected);
  });
});
