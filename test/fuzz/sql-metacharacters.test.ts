import { describeEachBackend } from '../support/database';
import { keyAndCsr } from '../support/node-client';
import {
  type Answer,
  assertRefused,
  type Credential,
  rowCounts,
  TABLES,
  useFuzzServer,
} from './support/fuzz-harness';
import { SQL_METACHARACTERS } from './support/hostile';
import { inPool } from './support/pool';

/**
 * Issue 8 item 3, SQL metacharacters: every string field of every route (JSON fields, path
 * segments, query parameters) gets each hostile string while the rest of the request is valid.
 * Each is refused by validation (4xx) or stored and read back byte for byte; a pg_sleep that ran
 * would blow the latency bound. Afterwards every table exists, and exactly the accepted requests
 * created rows: none came from a refused one.
 */
const TD = 'test.example.org';

interface Case {
  route: string;
  field: string;
  send: (m: string, i: number) => Promise<Answer>;
  /** Statuses besides a 4xx refusal: 200 for reads that treat the string as data, 201 for a valid create. */
  ok: number[];
}

describeEachBackend('fuzz: SQL metacharacters in every string field', (backend) => {
  let validCsr: string;
  const created = {
    entries: [] as { name: string; spiffeId: string }[],
    deletedEntries: [] as string[],
    tokens: [] as (string | null)[],
  };

  const f = useFuzzServer(`SQL metacharacters [${backend}]`, {
    backend,
    node: true,
    admin: 'fuzzer',
    setup: async () => {
      validCsr = (await keyAndCsr()).csrPem;
    },
  });

  const json = (path: string, body: unknown, as?: Credential, method = 'POST') =>
    f.c.send({ method, path, body: JSON.stringify(body), as });
  const get = (path: string, as?: Credential, method = 'GET') => f.c.send({ method, path, as });
  const enc = encodeURIComponent;

  const entryBody = (i: number) => ({
    name: `meta-${i}`,
    spiffe_id: `spiffe://${TD}/meta/${i}`,
    parent: f.node.body.node_id!,
    selectors: ['unix:uid:1000'],
    dns_names: ['meta.example.org'],
    ttl: '1h',
  });
  const tokenBody = { role: 'worker', ttl: '15m', uses: 1 };

  const cases: Case[] = [
    ...(['name', 'parent', 'ttl', 'spiffe_id'] as const).map((field) => ({
      route: 'POST /v1/admin/entries',
      field,
      // "null" is a valid entry name, for one.
      ok: [201],
      send: (m: string, i: number) => json('/v1/admin/entries', { ...entryBody(i), [field]: m }, f.admin),
    })),
    {
      route: 'POST /v1/admin/entries',
      field: 'spiffe_id path',
      ok: [201],
      send: (m, i) =>
        json('/v1/admin/entries', { ...entryBody(i), spiffe_id: `spiffe://${TD}/meta/${m}` }, f.admin),
    },
    ...(['selectors', 'dns_names'] as const).map((field) => ({
      route: 'POST /v1/admin/entries',
      field: `${field}[]`,
      ok: [],
      send: (m: string, i: number) => json('/v1/admin/entries', { ...entryBody(i), [field]: [m] }, f.admin),
    })),
    ...(['role', 'ttl', 'node_ttl', 'uses'] as const).map((field) => ({
      route: 'POST /v1/admin/tokens',
      field,
      ok: [],
      send: (m: string) => json('/v1/admin/tokens', { ...tokenBody, [field]: m }, f.admin),
    })),
    {
      route: 'POST /v1/admin/tokens',
      field: 'node_name',
      ok: [201],
      send: (m) => json('/v1/admin/tokens', { ...tokenBody, node_name: m }, f.admin),
    },
    ...(['method', 'token', 'csr'] as const).map((field) => ({
      route: 'POST /v1/attest',
      field,
      ok: [],
      send: (m: string) => json('/v1/attest', { method: 'join_token', token: 'x', csr: 'x', [field]: m }),
    })),
    {
      route: 'POST /v1/attest/challenge',
      field: 'method',
      ok: [],
      send: (m) => json('/v1/attest/challenge', { method: m }),
    },
    { route: 'POST /v1/renew', field: 'csr', ok: [], send: (m) => json('/v1/renew', { csr: m }, f.node) },
    ...(['spiffe_id', 'csr'] as const).map((field) => ({
      route: 'POST /v1/workload-svids',
      field,
      ok: [],
      send: (m: string) =>
        json('/v1/workload-svids', { spiffe_id: `spiffe://${TD}/x`, csr: 'x', [field]: m }, f.node),
    })),
    ...(['spiffe_id', 'ttl'] as const).map((field) => ({
      route: 'POST /v1/jwt-svids',
      field,
      ok: [],
      send: (m: string) =>
        json('/v1/jwt-svids', { spiffe_id: `spiffe://${TD}/x`, audience: ['a'], [field]: m }, f.node),
    })),
    {
      route: 'POST /v1/jwt-svids',
      field: 'audience',
      ok: [],
      send: (m: string) => json('/v1/jwt-svids', { spiffe_id: `spiffe://${TD}/x`, audience: [m] }, f.node),
    },
    ...(['name', 'role', 'ttl', 'csr'] as const).map((field) => ({
      route: 'POST /v1/admin/admins',
      field,
      ok: [],
      send: (m: string) =>
        json('/v1/admin/admins', { name: 'meta', role: 'auditor', csr: 'x', [field]: m }, f.admin),
    })),
    {
      route: 'POST /v1/admin/nodes/:id/revoke',
      field: ':id',
      ok: [],
      send: (m) => json(`/v1/admin/nodes/${enc(m || 'x')}/revoke`, { reason: 'superseded' }, f.admin),
    },
    {
      route: 'POST /v1/admin/nodes/:id/revoke',
      field: 'reason',
      ok: [],
      send: (m) => json('/v1/admin/nodes/no-such-node/revoke', { reason: m }, f.admin),
    },
    {
      route: 'POST /v1/admin/certificates/:serial/revoke',
      field: ':serial',
      ok: [],
      send: (m) => json(`/v1/admin/certificates/${enc(m || 'x')}/revoke`, {}, f.admin),
    },
    {
      route: 'GET /v1/admin/nodes/:id',
      field: ':id',
      ok: [],
      send: (m) => get(`/v1/admin/nodes/${enc(m || 'x')}`, f.admin),
    },
    {
      route: 'DELETE /v1/admin/entries/:name',
      field: ':name',
      // Deletes the "null" entry when the name case created it first.
      ok: [204],
      send: (m) => get(`/v1/admin/entries/${enc(m || 'x')}`, f.admin, 'DELETE'),
    },
    {
      route: 'GET /v1/admin/certificates',
      field: '?node',
      ok: [200],
      send: (m) => get(`/v1/admin/certificates?node=${enc(m)}`, f.admin),
    },
    {
      route: 'GET /v1/admin/certificates',
      field: '?status',
      ok: [],
      send: (m) => get(`/v1/admin/certificates?status=${enc(m)}`, f.admin),
    },
    ...(['actor', 'subject', 'event'] as const).map((field) => ({
      route: 'GET /v1/admin/audit',
      field: `?${field}`,
      ok: [200],
      send: (m: string) => get(`/v1/admin/audit?${field}=${enc(m)}`, f.admin),
    })),
    ...(['since', 'until', 'limit'] as const).map((field) => ({
      route: 'GET /v1/admin/audit',
      field: `?${field}`,
      ok: [200],
      send: (m: string) => get(`/v1/admin/audit?${field}=${enc(m)}`, f.admin),
    })),
    { route: 'GET /v1/crl', field: '?issuer', ok: [], send: (m) => get(`/v1/crl?issuer=${enc(m)}`) },
    {
      route: 'GET /v1/revocations',
      field: '?since',
      ok: [200],
      send: (m) => get(`/v1/revocations?wait=0&since=${enc(m)}`, f.node),
    },
    { route: 'GET /v1/ocsp/:b64', field: ':b64', ok: [], send: (m) => get(`/v1/ocsp/${enc(m || 'x')}`) },
  ];

  it('refuses each metacharacter string in each field, or stores and returns it unchanged', async () => {
    let i = 0;
    const jobs = cases.flatMap((k) => SQL_METACHARACTERS.map((m) => ({ k, m, i: i++ })));
    await inPool(jobs, 4, async ({ k, m, i }) => {
      let a: Answer;
      try {
        a = await k.send(m, i);
      } catch (e) {
        // The client refuses to send some strings (a lone surrogate in a URL): nothing to test.
        if (e instanceof URIError) return;
        throw e;
      }
      const what = `${k.route} ${k.field}=${JSON.stringify(m.slice(0, 40))}`;
      assertRefused(a, what, k.ok);
      if (a.status === 201 && k.route === 'POST /v1/admin/entries') {
        const sent = { ...entryBody(i), ...(k.field === 'name' ? { name: m } : {}) };
        if (k.field === 'spiffe_id') sent.spiffe_id = m;
        if (k.field === 'spiffe_id path') sent.spiffe_id = `spiffe://${TD}/meta/${m}`;
        expect(a.json()).toMatchObject({ name: sent.name, spiffe_id: sent.spiffe_id });
        created.entries.push({ name: sent.name, spiffeId: sent.spiffe_id });
      }
      if (a.status === 204) created.deletedEntries.push(m);
      if (a.status === 201 && k.route === 'POST /v1/admin/tokens') {
        expect(a.json<{ node_name: string | null }>().node_name).toBe(m);
        created.tokens.push(m);
      }
      // A filter value is data: it matches nothing, it is never a wildcard (% and _ included). An
      // empty value is no filter at all.
      if (a.status === 200 && m !== '' && ['?actor', '?subject', '?event'].includes(k.field))
        expect(`${what}: ${a.json<{ events: unknown[] }>().events.length}`).toBe(`${what}: 0`);
      if (a.status === 200 && m !== '' && k.field === '?node')
        expect(`${what}: ${a.json<{ certificates: unknown[] }>().certificates.length}`).toBe(`${what}: 0`);
    });
    console.log(
      `[fuzz] SQL metacharacters [${backend}]: ${jobs.length} requests over ${cases.length} fields, ` +
        `accepted as data: ${created.entries.length} entries, ${created.tokens.length} tokens`,
    );
  });

  it('left every table in place, and created rows only for the accepted requests', async () => {
    const present = await f.t.db.knex.raw<{ rows: { name: string | null }[] }>(
      `select ${TABLES.map((_, i) => `to_regclass(?)::text as t${i}`).join(', ')}`,
      [...TABLES],
    );
    expect(Object.values(present.rows[0]!)).toEqual([...TABLES]);
    const after = await rowCounts(f.t);
    expect(after.nodes).toBe(f.before.nodes);
    expect(after.certificates).toBe(f.before.certificates);
    // Each entry created or deleted tells its parent node on the feed (an `entry` event).
    expect(after.revocation_events).toBe(
      f.before.revocation_events + created.entries.length + created.deletedEntries.length,
    );
    expect(after.entries).toBe(f.before.entries + created.entries.length - created.deletedEntries.length);
    expect(after.join_tokens).toBe(f.before.join_tokens + created.tokens.length);
    // What was stored is what was sent, byte for byte.
    const rows = (await f.t.db.knex('entries').select('name', 'spiffe_id')) as {
      name: string;
      spiffe_id: string;
    }[];
    const stored = new Map(rows.map((r) => [r.name, r.spiffe_id]));
    for (const e of created.entries)
      expect(stored.get(e.name)).toBe(created.deletedEntries.includes(e.name) ? undefined : e.spiffeId);
    const names = (await f.t.db.knex('join_tokens').whereNotNull('node_name').pluck('node_name')) as string[];
    expect(names.sort()).toEqual(created.tokens.filter((n): n is string => n !== null).sort());
  });

  it('nul-in-text-fields: a NUL in a path, query or body field is a 400, not a 500', async () => {
    const nul = '\u0000';
    const answers = [
      await json('/v1/admin/entries', { ...entryBody(99_999), parent: `a${nul}` }, f.admin),
      await get(`/v1/admin/nodes/${enc(nul)}`, f.admin),
      await get(`/v1/admin/entries/${enc(nul)}`, f.admin, 'DELETE'),
      await get(`/v1/admin/certificates?node=${enc(nul)}`, f.admin),
      await get(`/v1/admin/audit?actor=${enc(nul)}`, f.admin),
      // A valid CSR, so that the SPIFFE ID reaches the entry lookup.
      await json('/v1/workload-svids', { spiffe_id: `spiffe://${TD}/${nul}`, csr: validCsr }, f.node),
      await json('/v1/jwt-svids', { spiffe_id: `spiffe://${TD}/${nul}`, audience: ['a'] }, f.node),
    ];
    for (const a of answers) {
      expect(a.status).toBe(400);
      expect(a.json()).toEqual({
        error: { code: expect.stringMatching(/^ERR_/), message: expect.any(String) },
      });
    }
  });
});
