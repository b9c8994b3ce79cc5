import {
  x509BundlesOutcome,
  x509SvidOutcome,
  jwtBundlesOutcome,
  NO_ENTRY,
} from '../../../clients/rotation/src/workload-api/responses';
import { cachedCaller } from '../../../clients/rotation/src/workload-api/selectors';
import {
  type HeldSvid,
  WorkloadApiState,
  type WorkloadApiView,
} from '../../../clients/rotation/src/workload-api/workload-api-state';

/** What one caller is owed from the agent's view, and when a stream sends again. */

const NOW = new Date('2026-12-07T12:00:00Z');
const TD = 'spiffe://wl.example.org';
const held = (name: string, serial: string, notAfter = '2026-12-07T13:00:00Z'): HeldSvid => ({
  entryName: name,
  spiffeId: `${TD}/${name}`,
  serial,
  chainDer: Buffer.from(`chain-${serial}`),
  keyDer: Buffer.from(`key-${serial}`),
  notAfter: new Date(notAfter),
});
const entry = (name: string, selectors: string[], hint = '') => ({
  name,
  spiffeId: `${TD}/${name}`,
  selectors,
  hint,
});
const uid = (n: number) => cachedCaller(n, n, () => undefined);

function view(patch: Partial<WorkloadApiView> = {}): WorkloadApiView {
  return {
    ready: true,
    trustDomainId: TD,
    bundleDer: Buffer.from('roots'),
    crls: [Buffer.from('crl1')],
    entries: [
      entry('web', ['unix:uid:1000'], 'internal'),
      entry('api', ['unix:uid:1000']),
      entry('db', ['unix:uid:2000']),
    ],
    svids: new Map([
      ['web', held('web', 'aa')],
      ['api', held('api', 'bb')],
      ['db', held('db', 'cc')],
    ]),
    version: 1,
    ...patch,
  };
}

describe('Workload API responses', () => {
  it('FetchX509SVID: the SVIDs of the entries the caller matches, with key, bundle, CRLs and hint', () => {
    const r = x509SvidOutcome(view(), uid(1000), NOW);
    expect(r.kind).toBe('send');
    if (r.kind !== 'send') return;
    expect(
      r.message.svids.map((s) => [s.spiffe_id, s.x509_svid.toString(), s.x509_svid_key.toString(), s.hint]),
    ).toEqual([
      [`${TD}/web`, 'chain-aa', 'key-aa', 'internal'],
      [`${TD}/api`, 'chain-bb', 'key-bb', ''],
    ]);
    expect(r.message.svids[0]!.bundle.toString()).toBe('roots');
    expect(r.message.crl.map(String)).toEqual(['crl1']);
    expect(r.message.federated_bundles).toEqual({});
  });

  it('refusals: no entry → deny; revoked node → deny with its reason; not ready; held SVIDs missing or expired → wait', () => {
    expect(x509SvidOutcome(view(), uid(3000), NOW)).toEqual({ kind: 'deny', details: NO_ENTRY });
    expect(x509SvidOutcome(view({ revoked: 'this node has been revoked' }), uid(1000), NOW)).toEqual({
      kind: 'deny',
      details: 'this node has been revoked',
    });
    expect(x509SvidOutcome(view({ ready: false }), uid(1000), NOW)).toEqual({ kind: 'not-ready' });
    expect(x509SvidOutcome(view({ svids: new Map() }), uid(1000), NOW)).toEqual({ kind: 'wait' });
    const expired = new Map([['db', held('db', 'cc', '2026-12-07T12:00:00Z')]]);
    expect(x509SvidOutcome(view({ svids: expired }), uid(2000), NOW)).toEqual({ kind: 'wait' });
    // An SVID held for an entry whose SPIFFE ID has since changed is not served for the new one.
    const changed = view({
      entries: [entry('db', ['unix:uid:2000'])],
      svids: new Map([['db', { ...held('db', 'cc'), spiffeId: `${TD}/old` }]]),
    });
    expect(x509SvidOutcome(changed, uid(2000), NOW)).toEqual({ kind: 'wait' });
    expect(x509BundlesOutcome(view(), uid(3000))).toEqual({ kind: 'deny', details: NO_ENTRY });
    expect(jwtBundlesOutcome(view(), uid(1000))).toEqual({ kind: 'wait' });
  });

  it('the key moves when what the caller sees does, and only then', () => {
    const state = new WorkloadApiState();
    const base = view();
    state.publish(base);
    const key = () => {
      const r = x509SvidOutcome(state.view, uid(1000), NOW);
      return r.kind === 'send' ? r.key : r.kind;
    };
    const k0 = key();
    // Someone else's SVID rotates: not a change for uid 1000.
    state.publish({ svids: new Map([...base.svids, ['db', held('db', 'dd')]]) });
    expect(key()).toBe(k0);
    // The same bundle and CRLs published again, as new buffers: no change.
    state.publish({ bundleDer: Buffer.from('roots'), crls: [Buffer.from('crl1')] });
    expect(key()).toBe(k0);
    state.publish({ crls: [Buffer.from('crl2')] });
    const k1 = key();
    expect(k1).not.toBe(k0);
    state.publish({ bundleDer: Buffer.from('roots2') });
    const k2 = key();
    expect(k2).not.toBe(k1);
    state.publish({ svids: new Map([...state.view.svids, ['web', held('web', 'ee')]]) });
    expect(key()).not.toBe(k2);
    const b = x509BundlesOutcome(state.view, uid(1000));
    expect(b.kind === 'send' && b.message.bundles).toEqual({ [TD]: Buffer.from('roots2') });
  });

  it('listeners hear once per turn of the event loop, and not at all when nothing changed', async () => {
    const state = new WorkloadApiState();
    let calls = 0;
    const off = state.subscribe(() => calls++);
    state.publish({ ready: true });
    state.publish({ trustDomainId: TD });
    state.publish({ crls: [Buffer.from('x')] });
    await new Promise((r) => setImmediate(r));
    expect(calls).toBe(1);
    expect(state.view.version).toBe(3);
    state.publish({ ready: true, trustDomainId: TD });
    await new Promise((r) => setImmediate(r));
    expect(calls).toBe(1);
    off();
    state.publish({ ready: false });
    await new Promise((r) => setImmediate(r));
    expect(calls).toBe(1);
    expect(state.subscribers).toBe(0);
  });
});
