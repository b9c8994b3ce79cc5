import type { IncomingMessage } from 'node:http';
import type { AuditContext } from '../domain/audit';

/** Who did it and from where, for the audit row of a request. */
export function auditContext(req: Pick<IncomingMessage, 'socket'>, actor: string): AuditContext {
  return { actor, source: req.socket.remoteAddress ?? null };
}
