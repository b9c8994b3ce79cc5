/** Nodes, entries and tokens on a Baton under test, and its issuance figures. */
import { join } from 'node:path';
import { type BatonServer, createEntry, createToken } from '../lib/baton';
import { keyAndCsr } from '../lib/csr';
import { Generator } from '../lib/generator';
import { json, send } from '../lib/http';
import type { RunResult } from '../lib/load-protocol';
import { figureOf } from '../lib/results';
import { type Context, set } from '../lib/context';
import { measureIssue, recordIssue } from './issue';

export interface Issuance {
  node_id: string;
  certificate_chain: string;
}

/** Attests one node from the orchestrator (setup) and gives it an entry to mint. */
async function nodeWithEntry(server: BatonServer, token: string, name: string) {
  const kc = keyAndCsr(name);
  const r = json<Issuance>(
    await send(
      { url: server.url, ca: server.bundle },
      {
        method: 'POST',
        path: '/v1/attest',
        body: JSON.stringify({ method: 'join_token', token, csr: kc.csrPem }),
        agent: false,
      },
    ),
    'attest',
  );
  const spiffeId = await createEntry(server, name, r.node_id);
  return {
    target: { url: server.url, ca: server.bundle, cert: r.certificate_chain, key: kc.keyPem },
    spiffeId,
  };
}

export const BATON_ENV = { BATON_RATE_LIMITS: 'off' };

/**
 * `n` nodes attested from the orchestrator, each with an entry to mint: the identities of a fleet's
 * connections (connection k speaks for node k), and a target for the generator.
 */
export async function fleet(server: BatonServer, n: number, label: string) {
  const token = await createToken(server, n);
  const made: Awaited<ReturnType<typeof nodeWithEntry>>[] = [];
  for (let i = 0; i < n; i++) made.push(await nodeWithEntry(server, token, `${label}-web${i}`));
  return {
    target: made[0]!.target,
    identities: made.map((m) => ({ cert: m.target.cert!, key: m.target.key!, spiffeId: m.spiffeId })),
  };
}

/**
 * Workload SVID issuance at each concurrency. Connection k speaks for node k (its own client
 * certificate and entry), as a fleet of agents does; with `oneNode`, c16 is measured again with
 * all sixteen connections speaking for one node, which serializes on that node's row lock.
 */
export async function batonIssuance(
  c: Context,
  server: BatonServer,
  prefix: string,
  concurrencies: number[],
  oneNode = false,
): Promise<Awaited<ReturnType<typeof fleet>>> {
  const made = await fleet(server, Math.max(...concurrencies), prefix.replace(/_/g, '-'));
  const { target, identities } = made;
  for (const conc of concurrencies) {
    const s = await measureIssue(
      c,
      {
        target,
        api: 'baton-workload',
        identities: identities.slice(0, conc),
        concurrency: conc,
      },
      server.pid,
    );
    recordIssue(c, prefix, conc, s);
    if (conc === 16) {
      set(c, `${prefix}_cpu_ms_per_certificate`, figureOf(s.cpuPerOk, 'ms'));
      set(c, `${prefix}_kernel_cpu_ms_per_certificate`, figureOf(s.systemCpuPerOk, 'ms'));
    }
  }
  if (oneNode) {
    const s = await measureIssue(
      c,
      { target, api: 'baton-workload', spiffeId: identities[0]!.spiffeId, concurrency: 16 },
      server.pid,
    );
    recordIssue(c, `${prefix}_one_node`, 16, s);
  }
  return made;
}

/** Attests `n` nodes with up to `generators` processes; returns the credentials files. */
export async function attestMany(
  c: Context,
  server: BatonServer,
  n: number,
  generators: number,
  label: string,
  runs = 1,
) {
  const per = Math.ceil(n / generators);
  const files: string[] = [];
  const gens: Generator[] = [];
  try {
    for (let i = 0; i < generators; i++) {
      const file = join(c.work, `${label}-${i}.jsonl`);
      files.push(file);
      const token = await createToken(server, per * runs);
      gens.push(
        await Generator.start({
          kind: 'attest',
          target: { url: server.url, ca: server.bundle },
          token,
          concurrency: 16,
          perRun: Math.ceil(per),
          runs,
          credentialsOut: file,
          label: `${label}${i}`,
        }),
      );
    }
    const results: RunResult[][] = [];
    for (let r = 0; r < runs; r++) results.push(await Promise.all(gens.map((g) => g.run())));
    return { files, results };
  } finally {
    await Promise.all(gens.map((g) => g.close()));
  }
}
