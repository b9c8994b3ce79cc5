import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError, CaClientError, NodeAgent } from '../../../clients/rotation/src';
import { FakeClock } from '../../../services/ca/src/domain/clock';
import { tempDir } from '../../support/tools';
import { entry, FakeAgentCa, spiffeIdOf } from './fake-agent-ca';

/**
 * NodeAgent.fetchJwtSvid: the JWT-SVID cache as the running agent wires it: the entries it listed
 * decide what may be asked, with the node's current credential, and what drops the cached tokens.
 */

const HOUR = 3600_000;
const WEB = spiffeIdOf('web');
const API = spiffeIdOf('api');
const DB = spiffeIdOf('db');
const root = tempDir('baton-agent-jwt-');
afterAll(() => root.cleanup());
let dirs = 0;

function setup() {
  const clock = new FakeClock(new Date(Math.floor(Date.now() / 1000) * 1000));
  const ca = new FakeAgentCa(clock);
  ca.entries = [entry('web'), entry('api'), entry('db')];
  const dir = join(root.path, `d${dirs++}`);
  const agent = new NodeAgent({
    dir,
    clock,
    client: ca,
    random: () => 0.5,
    token: ca.token(),
    getuid: () => 1000,
  });
  return { clock, ca, dir, agent };
}

describe('NodeAgent.fetchJwtSvid', () => {
  it("ok/mints with the node's credential for its entries only, once per half-life", async () => {
    const { ca, dir, agent } = setup();
    await expect(agent.fetchJwtSvid(WEB, ['a'])).rejects.toMatchObject({ code: 'ERR_NOT_READY' });
    const r = await agent.runOnce();
    expect(r.node?.action).toBe('attested');
    const t = await agent.fetchJwtSvid(WEB, ['a']);
    expect(t.spiffeId).toBe(WEB);
    expect(ca.jwt.calls).toEqual([
      {
        spiffeId: WEB,
        audience: ['a'],
        certificateChainPem: readFileSync(join(dir, 'node', 'cert.pem'), 'utf8'),
      },
    ]);
    expect((await agent.fetchJwtSvid(WEB, ['a', 'a'])).token).toBe(t.token);
    const e = await agent.fetchJwtSvid(spiffeIdOf('other'), ['a']).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AgentError);
    expect(e).toMatchObject({ code: 'ERR_NOT_AUTHORIZED' });
    expect(ca.jwt.count).toBe(1);
    // A refusal of the node certificate is worded for the operator, as the agent's other calls.
    ca.jwt.failures.push(new CaClientError('ERR_CERT_REVOKED', 'this certificate has been revoked', 403));
    await expect(agent.fetchJwtSvid(API, ['a'])).rejects.toMatchObject({
      name: 'AgentError',
      code: 'ERR_CERT_REVOKED',
      message: expect.stringContaining('the node certificate has been revoked'),
    });
  });

  it('ok/a pass that finds an entry deleted or changed drops its tokens; the others stay', async () => {
    const { ca, agent } = setup();
    await agent.runOnce();
    for (const id of [WEB, API, DB]) await agent.fetchJwtSvid(id, ['a']);
    await agent.runOnce(); // the same entries: nothing dropped
    for (const id of [WEB, API, DB]) await agent.fetchJwtSvid(id, ['a']);
    expect(ca.jwt.count).toBe(3);
    ca.entries = [entry('web', { selectors: ['unix:uid:1000'] }), entry('db')];
    await agent.runOnce();
    await expect(agent.fetchJwtSvid(API, ['a'])).rejects.toMatchObject({ code: 'ERR_NOT_AUTHORIZED' });
    expect(ca.jwt.count).toBe(3);
    await agent.fetchJwtSvid(DB, ['a']);
    expect(ca.jwt.count).toBe(3);
    await agent.fetchJwtSvid(WEB, ['a']);
    expect(ca.jwt.count).toBe(4);
    // The listing fails: the entries of the last good one still hold.
    ca.entriesError = new CaClientError('ERR_CA_UNAVAILABLE', 'busy', 503);
    const r = await agent.runOnce();
    expect(r.workloadsError).toMatchObject({ code: 'ERR_CA_UNAVAILABLE' });
    await agent.fetchJwtSvid(DB, ['a']);
    expect(ca.jwt.count).toBe(4);
  });

  it('ok/a new node certificate drops every token', async () => {
    const { clock, ca, agent } = setup();
    ca.jwt.ttlMs = 96 * HOUR; // half-life far past the node's renewal
    await agent.runOnce();
    const t = await agent.fetchJwtSvid(WEB, ['a']);
    clock.advance(HOUR);
    expect((await agent.runOnce()).node?.action).toBe('none');
    expect((await agent.fetchJwtSvid(WEB, ['a'])).token).toBe(t.token);
    clock.advance(22 * HOUR);
    expect((await agent.runOnce()).node?.action).toBe('renewed');
    expect((await agent.fetchJwtSvid(WEB, ['a'])).token).not.toBe(t.token);
    expect(ca.jwt.count).toBe(2);
  });

  it('ok/the daemon stopping on a revocation of the node drops every token', async () => {
    const { ca, agent } = setup();
    ca.jwt.ttlMs = 96 * HOUR;
    const r = await agent.runOnce();
    const t = await agent.fetchJwtSvid(WEB, ['a']);
    ca.feed = [
      {
        id: 1,
        kind: 'node',
        nodeId: r.node!.identity.nodeId,
        serials: [],
        reason: 'key-compromise',
        at: new Date(),
      },
    ];
    await expect(agent.run(new Promise(() => undefined))).rejects.toMatchObject({ code: 'ERR_NODE_REVOKED' });
    expect((await agent.fetchJwtSvid(WEB, ['a'])).token).not.toBe(t.token);
    expect(ca.jwt.count).toBe(2);
  });
});
