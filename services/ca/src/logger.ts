import pino, { type Logger } from 'pino';
import type { LogLevel } from './config';

/**
 * JSON logs on stderr, so stdout stays for what the contract prints (the listen address).
 * The redact list is a second line of defence: Baton never logs bodies, keys, tokens or CSRs.
 *
 * By default stderr is buffered (pino's sonic-boom destination): a line per request written at once
 * was a system call on the request path (about 50 µs on the benchmark machine, a tenth of a
 * certificate). Lines are written when 4 KiB have gathered or every FLUSH_MS, whichever comes
 * first, so a quiet server's lines still appear within a quarter of a second; what is pending is
 * written synchronously when the process exits. A crash (SIGKILL) can lose the last quarter second
 * of request logs, never audit rows, which live in the database.
 */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
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
    (destination as pino.DestinationStream | undefined) ?? asyncStderr(),
  );
}

let stderrDestination: pino.DestinationStream | undefined;

const FLUSH_MS = 250;
const BUFFER_BYTES = 4096;

/** One buffered stderr destination per process, flushed on a timer and at exit. */
function asyncStderr(): pino.DestinationStream {
  if (stderrDestination) return stderrDestination;
  const dest = pino.destination({ dest: 2, sync: false, minLength: BUFFER_BYTES });
  setInterval(() => {
    try {
      dest.flush();
    } catch {
      // A flush while the destination is not ready yet: the next tick writes it.
    }
  }, FLUSH_MS).unref();
  process.once('exit', () => {
    try {
      dest.flushSync();
    } catch {
      // Nothing more can be done for a log line at exit.
    }
  });
  stderrDestination = dest;
  return dest;
}

export type { Logger };
