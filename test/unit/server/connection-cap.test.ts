import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type TLSSocket } from 'node:tls';
import { capConnections } from '../../../services/ca/src/server/connection-cap';
import { selfSignedEc } from '../../support/tools';

/**
 * --max-connections (issue 14, finding 6), in both of its ways: Node's own maxConnections in a
 * single process, and the check a cluster worker makes itself (Node 20 would pass the connection
 * back to the primary, round the workers). The cluster path is taken here without a cluster.
 */
describe.each([
  ['single process', false],
  ['cluster worker', true],
])('capConnections: %s', (_name, inClusterWorker) => {
  const { key, cert } = selfSignedEc('/CN=127.0.0.1');
  let server: Server;
  let dropped = 0;
  const clients: TLSSocket[] = [];

  /** True once the server has answered on the connection, false if it closed it first. */
  const answered = (): Promise<boolean> =>
    new Promise((resolve) => {
      const port = (server.address() as AddressInfo).port;
      const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
      clients.push(s);
      s.once('data', () => resolve(true));
      s.once('close', () => resolve(false));
      s.on('error', () => undefined);
    });

  beforeEach(async () => {
    dropped = 0;
    server = createServer({ key, cert }, (s) => s.write('hello'));
    capConnections(server, 2, () => (dropped += 1), inClusterWorker);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.destroy();
    await new Promise((r) => server.close(r));
  });

  it('fail/past the cap a connection is closed unanswered and counted; a closed one frees its place', async () => {
    expect(await answered()).toBe(true);
    expect(await answered()).toBe(true);
    expect(await answered()).toBe(false);
    expect(dropped).toBe(1);
    clients[0]!.destroy();
    const until = Date.now() + 5000;
    while ((await new Promise<number>((r) => server.getConnections((_e, n) => r(n)))) > 1) {
      if (Date.now() > until) throw new Error('the closed connection is still counted');
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await answered()).toBe(true);
    expect(dropped).toBe(1);
  });

  it('ok/off: no cap', async () => {
    const open = createServer({ key, cert }, (s) => s.write('hello'));
    capConnections(open, null, () => (dropped += 1), inClusterWorker);
    expect(open.maxConnections).toBeUndefined();
    expect(open.listenerCount('connection')).toBe(1);
  });
});
