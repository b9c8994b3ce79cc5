/** Issue 16: JWT-SVID minting on the Baton of the issuance figures, by the same nodes. */
import type { BatonServer } from '../lib/baton';
import { type Context, log, set } from '../lib/context';
import { figureOf } from '../lib/results';
import type { fleet } from './baton-setup';
import { measureIssue, recordIssue } from './issue';

export const JWT_FIGURES = ['jwt_mint_c16_per_s', 'jwt_mint_c16_p99_ms'];

/**
 * `jwt_mint_c16_per_s` and `jwt_mint_c16_p99_ms`: POST /v1/jwt-svids closed-loop at c16 over
 * keep-alive mutual TLS, connection k speaking for node k and asking for its entry, exactly as
 * `issuance_c16_per_s` is measured (and against the same server, just after it). The target:
 * at least twice `issuance_c16_per_s`, p99 under 10 ms.
 */
export async function jwtSection(c: Context, server: BatonServer, nodes: Awaited<ReturnType<typeof fleet>>) {
  const s = await measureIssue(
    c,
    { target: nodes.target, api: 'baton-jwt', identities: nodes.identities.slice(0, 16), concurrency: 16 },
    server.pid,
  );
  recordIssue(c, 'jwt_mint', 16, s);
  set(c, 'jwt_mint_cpu_ms_per_token', figureOf(s.cpuPerOk, 'ms'));
  log(`   jwt mint server CPU: ${c.figures.jwt_mint_cpu_ms_per_token!.median} ms per token`);
}
