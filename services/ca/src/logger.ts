import pino, { type Logger } from 'pino';
import type { LogLevel } from './config';

/**
 * JSON logs on stderr, so stdout stays for what the contract prints (the listen address).
 * The redact list is a second line of defence: Baton never logs bodies, keys, tokens or CSRs.
 */
export function createLogger(level: LogLevel, destination: NodeJS.WritableStream = process.stderr): Logger {
  return pino(
    {
      level,
      base: { svc: 'baton' },
      redact: {
        paths: ['token', 'csr', 'key', 'secret', '*.token', '*.csr', '*.key', '*.secret'],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination as pino.DestinationStream,
  );
}

export type { Logger };
