import { authorizePrefix, Identity, mtlsAgent, mtlsRequest, parseSpiffeId } from '../../clients/identity/src';

/**
 * The worker side of the two-services example: calls the manager every second over mutual TLS,
 * talking only to a server whose SPIFFE ID is a manager's (under spiffe://<td>/manager), whatever
 * host name it is reached at.
 *
 *   node dist/examples/two-services/worker.js DIR [URL]
 */

async function main(argv: string[]): Promise<void> {
  const [dir, url = 'https://127.0.0.1:9443/'] = argv;
  if (!dir) throw new Error('usage: worker.js DIR [URL]');

  const identity = (await Identity.fromDirectory(dir)).watch();
  const td = parseSpiffeId(identity.current().spiffeId)!.trustDomain;
  identity.on('rotated', (now) => log(`rotated to serial ${now.serial}`));
  identity.on('error', (e) => log(`kept the current identity: ${e.message}`));

  // Keep-alive: calls share a connection; after a rotation, new connections use the new certificate.
  const agent = mtlsAgent(identity, { authorize: authorizePrefix(`spiffe://${td}/manager`) });
  const timer = setInterval(async () => {
    try {
      const res = await mtlsRequest(identity, url, { agent, timeoutMs: 5000 });
      log(`${res.status} ${res.body.toString('utf8').trim()}`);
    } catch (e) {
      log(`call failed: ${(e as Error).message}`);
    }
  }, 1000);

  const stop = () => {
    clearInterval(timer);
    agent.destroy();
    identity.close();
  };
  process.once('SIGINT', stop).once('SIGTERM', stop);
}

const log = (msg: string) => process.stdout.write(`worker: ${msg}\n`);

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`worker: ${e.message}\n`);
  process.exit(1);
});
