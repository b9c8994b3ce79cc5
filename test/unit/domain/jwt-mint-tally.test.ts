import { FakeClock } from '../../../services/ca/src/domain/clock';
import { MintTally } from '../../../services/ca/src/domain/jwt-mint-tally';
import type { AuditEvent } from '../../../services/ca/src/domain/ports';

/** MintTally (domain/jwt-mint-tally.ts): JWT-SVID mints audited per node, SPIFFE ID and minute. */

const N1 = { actor: 'spiffe://td/node/n1', source: '192.0.2.1' };
const N2 = { actor: 'spiffe://td/node/n2', source: '192.0.2.2' };
const WEB = 'spiffe://td/web';
const API = 'spiffe://td/api';

function setup(start = '2026-12-01T10:00:00.000Z') {
  const clock = new FakeClock(start);
  const rows: AuditEvent[] = [];
  let failing = false;
  const audit = {
    append: async (e: AuditEvent) => {
      if (failing) throw new Error('database down');
      rows.push(e);
    },
  };
  const tally = new MintTally(audit, clock);
  const mint = (who: typeof N1, node: string, spiffeId: string) =>
    tally.record(who, node, spiffeId, clock.now());
  return {
    clock,
    rows,
    tally,
    mint,
    fail: (on: boolean) => {
      failing = on;
    },
  };
}

const summary = (rows: AuditEvent[]) =>
  rows
    .map((r) => [r.event, r.actor, r.subject, r.details.node, r.details.count] as const)
    .sort((a, b) => String(a).localeCompare(String(b)));

describe('MintTally', () => {
  it('ok/one row per node, SPIFFE ID and minute once the minute has ended, with count, first and last', async () => {
    const t = setup();
    t.mint(N1, 'n1', WEB);
    t.clock.advance(10_000);
    t.mint(N1, 'n1', WEB);
    t.mint(N1, 'n1', API);
    t.clock.advance(20_000);
    t.mint(N1, 'n1', WEB);
    t.mint(N2, 'n2', WEB);
    // The minute is still open: nothing is written.
    expect(await t.tally.flush()).toBe(0);
    expect(t.rows).toEqual([]);
    expect(t.tally.pending).toBe(3);

    t.clock.set('2026-12-01T10:01:00.000Z');
    expect(await t.tally.flush()).toBe(3);
    expect(summary(t.rows)).toEqual([
      ['jwt_svid.minted', N1.actor, API, 'n1', 1],
      ['jwt_svid.minted', N1.actor, WEB, 'n1', 3],
      ['jwt_svid.minted', N2.actor, WEB, 'n2', 1],
    ]);
    const web = t.rows.find((r) => r.subject === WEB && r.details.node === 'n1')!;
    expect(web).toMatchObject({
      outcome: 'success',
      source: null,
      at: new Date('2026-12-01T10:00:30.000Z'),
      details: {
        count: 3,
        node: 'n1',
        spiffe_id: WEB,
        first: '2026-12-01T10:00:00.000Z',
        last: '2026-12-01T10:00:30.000Z',
      },
    });
    expect(Object.keys(web.details).sort()).toEqual(['count', 'first', 'last', 'node', 'spiffe_id']);
    expect(t.tally.pending).toBe(0);
    expect(await t.tally.flush()).toBe(0);
  });

  it('ok/a new minute is a new row; the open minute waits, `all` writes it too (server stop)', async () => {
    const t = setup('2026-12-01T10:00:59.000Z');
    t.mint(N1, 'n1', WEB);
    t.clock.advance(2_000);
    t.mint(N1, 'n1', WEB);
    t.mint(N1, 'n1', WEB);
    expect(await t.tally.flush()).toBe(1);
    expect(t.rows.map((r) => r.details.count)).toEqual([1]);
    expect(t.tally.pending).toBe(1);
    expect(await t.tally.flush({ all: true })).toBe(1);
    expect(t.rows.map((r) => [r.details.count, r.details.first])).toEqual([
      [1, '2026-12-01T10:00:59.000Z'],
      [2, '2026-12-01T10:01:01.000Z'],
    ]);
  });

  it('fail/a row that cannot be written is kept and merged with later mints of its minute, then written once', async () => {
    const t = setup();
    t.mint(N1, 'n1', WEB);
    t.clock.advance(60_000);
    t.fail(true);
    await expect(t.tally.flush()).rejects.toThrow('database down');
    expect(t.tally.pending).toBe(1);
    // A mint stamped in the old minute (a clock that stepped back) joins the kept bucket.
    t.tally.record(N1, 'n1', WEB, new Date('2026-12-01T10:00:10.000Z'));
    t.fail(false);
    expect(await t.tally.flush()).toBe(1);
    expect(t.rows.map((r) => [r.details.count, r.details.first, r.details.last])).toEqual([
      [2, '2026-12-01T10:00:00.000Z', '2026-12-01T10:00:10.000Z'],
    ]);
  });

  it('ok/many mints, one row: the log grows with pairs and minutes, not with tokens', async () => {
    const t = setup();
    for (let i = 0; i < 10_000; i++) t.mint(N1, 'n1', WEB);
    t.clock.advance(60_000);
    expect(await t.tally.flush()).toBe(1);
    expect(t.rows[0]!.details.count).toBe(10_000);
  });
});
