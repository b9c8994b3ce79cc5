import cluster from 'node:cluster';
import type { Server } from 'node:net';

/**
 * --max-connections: past it a new connection is closed at once, before its TLS handshake costs
 * anything (an open TLS connection holds about 55 KB of RSS even idle, most of it OpenSSL's).
 *
 * A single process uses Node's own `server.maxConnections`, checked at accept. A cluster worker
 * cannot: Node 20 answers "not accepted" to the primary, which hands the connection to the next
 * worker, and with every worker full it goes round them for as long as they stay full
 * (`server.dropMaxConnection`, which closes instead, came in Node 22). A worker closes the excess
 * connection itself, as soon as it has it.
 */
export function capConnections(
  server: Server,
  max: number | null,
  onDrop: () => void,
  inClusterWorker = cluster.isWorker,
): void {
  if (max === null) return;
  if (!inClusterWorker) {
    server.maxConnections = max;
    server.on('drop', onDrop);
    return;
  }
  let open = 0;
  server.on('connection', (socket) => {
    if (open >= max) {
      onDrop();
      socket.destroy();
      return;
    }
    open += 1;
    socket.once('close', () => {
      open -= 1;
    });
  });
}
