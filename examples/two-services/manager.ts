import {
  authorizePrefix,
  createMtlsServer,
  Identity,
  parseSpiffeId,
  requestPeer,
} from '../../clients/identity/src';

/**
 * The conductor side of the two-services example: an HTTPS server on mutual TLS that answers only
 * the workers of its own trust domain (SPIFFE IDs under spiffe://<td>/worker).
 *
 *   node dist/examples/two-services/manager.js DIR PORT
 *
 * DIR holds cert.pem, key.pem and bundle.pem, as the agent writes DIR/workloads/<entry>/.
 */

async function main(argv: string[]): Promise<void> {
  const [dir, port = '9443'] = argv;
  if (!dir) throw new Error('usage: manager.js DIR [PORT]');

  // Follows the agent's renewals: each rotation becomes the certificate of new connections.
  const identity = (await Identity.fromDirectory(dir)).watch();
  const me = identity.current().spiffeId;
  const td = parseSpiffeId(me)!.trustDomain;
  identity.on('rotated', (now) =>
    log(`rotated to serial ${now.serial}, valid until ${now.notAfter.toISOString()}`),
  );
  identity.on('error', (e) => log(`kept the current identity: ${e.message}`));

  const server = createMtlsServer(
    identity,
    {
      // Trust-domain-wide would also let other managers and admin certificates in; workers only.
      authorize: authorizePrefix(`spiffe://${td}/worker`),
      onRefused: (e) => log(`refused a connection: ${e.message}`),
    },
    (req, res) => {
      const body = JSON.stringify({ conductor: me, you: requestPeer(req).spiffeId });
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${body}\n`);
    },
  );
  server.listen(Number(port), '127.0.0.1', () => log(`${me} listening on https://127.0.0.1:${port}`));

  const stop = () => {
    identity.close();
    server.close();
    server.closeIdleConnections();
  };
  process.once('SIGINT', stop).once('SIGTERM', stop);
}

const log = (msg: string) => process.stdout.write(`manager: ${msg}\n`);

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`manager: ${e.message}\n`);
  process.exit(1);
});
