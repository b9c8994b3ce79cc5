/**
 * A trivial HTTPS server for measuring the load generator's own ceiling: it asks for a client
 * certificate like Baton does, reads the JSON body, and answers with a body the size of an issuance
 * response, doing no other work. Usage: node dist/bench/echo-server.js CERT KEY CA (prints the URL).
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

const [certFile, keyFile, caFile] = process.argv.slice(2);
if (!certFile || !keyFile || !caFile) {
  process.stderr.write('usage: echo-server CERT KEY CA\n');
  process.exit(2);
}
const reply = JSON.stringify({
  certificate_chain: 'x'.repeat(1900),
  bundle: 'y'.repeat(700),
  serial: '0'.repeat(32),
});
const server = createServer(
  {
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    ca: readFileSync(caFile),
    requestCert: true,
    rejectUnauthorized: false,
    keepAliveTimeout: 65_000,
  },
  (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(reply);
    });
  },
);
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`listening on https://127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('disconnect', () => process.exit(0));
