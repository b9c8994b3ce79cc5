/**
 * Issue 19: `attest_tpm_server_cpu_ms`, the Baton server's CPU per TPM attestation (POST
 * /v1/attest/challenge + POST /v1/attest), the TPM itself excluded. A software TPM (swtpm) does
 * the node's part through tpm2-tools, as an agent would; its time is not the server's, so the
 * server's CPU (utime + stime of its process, /proc/<pid>/stat) is read only around the requests:
 * per run, N challenges one after the other (timed), then the N activations and quotes on the TPM
 * (not timed), then the N answers one after the other (timed). The figure is the timed CPU over N,
 * on one keep-alive connection, so that it is the attestation's own work; what two fresh TLS
 * connections add (a node's challenge and answer are seconds apart) is the detail
 * `fresh_connections_ms`, and a join-token attestation measured the same way is the detail
 * `join_token_attest_server_cpu_ms`, for scale. PostgreSQL, background jobs off
 * (BATON_BACKGROUND_INTERVAL=1h) so that they add nothing; every answer re-attests the same node
 * (the agent's case after downtime: a new certificate supersedes the last).
 */
import { keyAndCsr } from '../lib/csr';
import { type BatonServer, createToken, startBaton } from '../lib/baton';
import { type Context, log, set } from '../lib/context';
import { Agent } from 'node:https';
import { json, send } from '../lib/http';
import { createDatabase, postgresReachable } from '../lib/postgres';
import { treeCpuMs } from '../lib/proc';
import { figureOf } from '../lib/results';
import { startBenchTpm, swtpmMissing } from '../lib/swtpm';
import { fromPem } from '../../services/ca/src/pki/der-reader';
import { tpmQualifyingData } from '../../services/ca/src/pki/tpm';
import { BATON_ENV } from './baton-setup';

export const TPM_FIGURES = ['attest_tpm_server_cpu_ms', 'attest_tpm_ecc_server_cpu_ms'];

interface Challenge {
  nonce: string;
  credential_blob: string;
  encrypted_secret: string;
}

export async function tpmSection(c: Context) {
  const reason = swtpmMissing();
  if (reason) throw new Error(reason);
  if (!(await postgresReachable())) throw new Error('PostgreSQL does not answer on 127.0.0.1:5432');
  const db = await createDatabase('baton_bench_tpm');
  let server: BatonServer | undefined;
  try {
    server = await startBaton({
      databaseUrl: db.url,
      workers: 1,
      logLevel: c.o.logLevel,
      env: { ...BATON_ENV, BATON_BACKGROUND_INTERVAL: '1h' },
    });
    log(`   baton on PostgreSQL: ${server.url}`);
    const joinToken = await joinTokenCpu(c, server);
    for (const [ekType, name] of [
      ['rsa', 'attest_tpm'],
      ['ecc', 'attest_tpm_ecc'],
    ] as const) {
      const kept = await measure(c, server, ekType, true);
      const fresh = await measure(c, server, ekType, false);
      set(c, `${name}_server_cpu_ms`, figureOf(kept.total, 'ms'));
      c.details[`${name}_server_cpu`] = {
        challenge_ms: figureOf(kept.challenge, 'ms'),
        attest_ms: figureOf(kept.attest, 'ms'),
        fresh_connections_ms: figureOf(fresh.total, 'ms'),
        join_token_attest_server_cpu_ms: joinToken,
        exchanges_per_run: kept.n,
        ek: ekType === 'rsa' ? 'RSA 2048 (TCG L-1)' : 'ECC NIST P-256 (TCG L-2)',
        ak: 'ECC P-256, ECDSA-SHA256',
      };
      log(
        `   ${ekType.toUpperCase()} EK: ${c.figures[`${name}_server_cpu_ms`]!.median} ms of server CPU per attestation (challenge ${figureOf(kept.challenge, 'ms').median} + attest ${figureOf(kept.attest, 'ms').median}; with two fresh TLS connections ${figureOf(fresh.total, 'ms').median}; a join token ${joinToken.median})`,
      );
    }
  } finally {
    await server?.stop();
    await db.drop().catch(() => undefined);
  }
}

/** A keep-alive connection (one socket) or a fresh connection per request. */
function connection(server: BatonServer, keepAlive: boolean): Agent | false {
  return keepAlive ? new Agent({ keepAlive: true, maxSockets: 1, ca: server.bundle }) : false;
}

async function joinTokenCpu(c: Context, server: BatonServer) {
  const n = c.o.quick ? 20 : 50;
  const agent = connection(server, true);
  const token = await createToken(server, n * (c.s.runs + 1));
  const target = { url: server.url, ca: server.bundle };
  const per: number[] = [];
  try {
    for (let run = 0; run <= c.s.runs; run++) {
      const csrs = Array.from({ length: n }, () => keyAndCsr('join-bench').csrPem);
      const cpu = treeCpuMs(server.pid);
      for (const csr of csrs) {
        const body = JSON.stringify({ method: 'join_token', token, csr });
        json(await send(target, { method: 'POST', path: '/v1/attest', body, agent }), 'attest');
      }
      if (run > 0) per.push((treeCpuMs(server.pid) - cpu) / n);
    }
  } finally {
    if (agent) agent.destroy();
  }
  return figureOf(per, 'ms');
}

async function measure(c: Context, server: BatonServer, ekType: 'rsa' | 'ecc', keepAlive: boolean) {
  const n = c.o.quick ? 20 : 50;
  const tpm = await startBenchTpm(c.work, ekType);
  const target = { url: server.url, ca: server.bundle };
  const agent = connection(server, keepAlive);
  const post = async <T>(path: string, body: unknown) =>
    json<T>(await send(target, { method: 'POST', path, body: JSON.stringify(body), agent }), path);
  const out = { challenge: [] as number[], attest: [] as number[], total: [] as number[], n };
  try {
    await json(
      await send(server.admin, {
        method: 'POST',
        path: '/v1/admin/tpm/enrollments',
        body: JSON.stringify({ ek_id: tpm.ekId, role: 'worker' }),
        agent: false,
      }),
      'enroll',
    );
    const request = {
      method: 'tpm',
      ek_public: tpm.ekPublic.toString('base64'),
      ak_public: tpm.akPublic.toString('base64'),
    };
    // One untimed exchange first: the connection, JIT, the node's first row.
    for (let run = 0; run <= c.s.runs; run++) {
      const count = run === 0 ? 1 : n;
      let cpu = treeCpuMs(server.pid);
      const challenges: Challenge[] = [];
      for (let i = 0; i < count; i++) challenges.push(await post<Challenge>('/v1/attest/challenge', request));
      const challengeCpu = treeCpuMs(server.pid) - cpu;
      const answers = [];
      for (const ch of challenges) {
        const secret = await tpm.activate(ch.credential_blob, ch.encrypted_secret);
        const { csrPem } = keyAndCsr('tpm-bench');
        const q = await tpm.quote(tpmQualifyingData(ch.nonce, fromPem(csrPem, 'CERTIFICATE REQUEST')));
        answers.push({
          method: 'tpm',
          nonce: ch.nonce,
          secret: secret.toString('base64'),
          quote: q.quote.toString('base64'),
          quote_signature: q.signature.toString('base64'),
          csr: csrPem,
        });
      }
      cpu = treeCpuMs(server.pid);
      for (const a of answers) await post('/v1/attest', a);
      const attestCpu = treeCpuMs(server.pid) - cpu;
      if (run === 0) continue;
      out.challenge.push(challengeCpu / count);
      out.attest.push(attestCpu / count);
      out.total.push((challengeCpu + attestCpu) / count);
    }
  } finally {
    if (agent) agent.destroy();
    await tpm.stop();
  }
  return out;
}
