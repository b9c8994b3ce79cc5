import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';

/** What came back on a raw TLS connection: the parsed status line, headers and body, if any. */
export interface RawAnswer {
  /** null: nothing (or no complete response head) arrived before the socket closed or the wait ended. */
  status: number | null;
  headers: Record<string, string>;
  body: Buffer;
  /** The server closed (or reset) the connection. */
  closed: boolean;
  /** Milliseconds from the moment the request was complete (or the last write) to the answer. */
  ms: number;
}

export interface RawTarget {
  url: string;
  ca: string;
  cert?: string;
  key?: string;
  maxVersion?: ConnectionOptions['maxVersion'];
}

/** A TLS connection to the test server that the test writes bytes to by hand. */
export function openTls(target: RawTarget): Promise<TLSSocket> {
  const u = new URL(target.url);
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: u.hostname,
      port: Number(u.port),
      ca: target.ca,
      cert: target.cert,
      key: target.key,
      servername: undefined,
      maxVersion: target.maxVersion,
      checkServerIdentity: () => undefined,
    });
    socket.once('secureConnect', () => {
      socket.off('error', reject);
      // A write after the server closed (EPIPE, ECONNRESET) is expected here, never a crash.
      socket.on('error', () => undefined);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/**
 * Reads one HTTP/1.1 response from the socket (Content-Length or close-delimited bodies; chunked
 * answers are read whole until close). Resolves on a complete response, on close, or after
 * `timeoutMs` with whatever arrived; never rejects.
 */
export function readAnswer(
  socket: TLSSocket,
  timeoutMs: number,
  startedAt = performance.now(),
): Promise<RawAnswer> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      resolve({ ...parse(buf), closed, ms: performance.now() - startedAt });
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const p = parse(buf);
      const length = p.headers['content-length'];
      if (p.status !== null && length !== undefined && p.body.length >= Number(length)) finish(false);
      if (
        p.status !== null &&
        length === undefined &&
        p.headers.connection !== 'close' &&
        isBodyless(p.status)
      )
        finish(false);
    };
    const onClose = () => finish(true);
    const onError = () => finish(true);
    const timer = setTimeout(() => finish(socket.destroyed), timeoutMs);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onError);
  });
}

const isBodyless = (status: number) => status === 204 || status === 304 || (status >= 100 && status < 200);

function parse(buf: Buffer): Pick<RawAnswer, 'status' | 'headers' | 'body'> {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return { status: null, headers: {}, body: Buffer.alloc(0) };
  const [statusLine = '', ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: m ? Number(m[1]) : null, headers, body: buf.subarray(end + 4) };
}

/** Writes `data`, resolving once it is handed to the socket (or the socket failed). */
export function write(socket: TLSSocket, data: string | Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    if (socket.destroyed || !socket.writable) return resolve(false);
    socket.write(data, (err) => resolve(!err));
  });
}

/** One handcrafted request on a fresh connection; the connection is closed afterwards. */
export async function rawRequest(
  target: RawTarget,
  request: string | Buffer,
  timeoutMs = 3000,
): Promise<RawAnswer> {
  const socket = await openTls(target);
  try {
    await write(socket, request);
    return await readAnswer(socket, timeoutMs);
  } finally {
    socket.destroy();
  }
}
