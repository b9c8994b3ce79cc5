import {
  type ClientReadableStream,
  credentials,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { workloadApiService } from '../../clients/rotation/src';

/**
 * A Workload API client on @grpc/grpc-js for tests: the generic client of the service definition,
 * the metadata the specification requires, and a stream reader that waits for messages.
 */

// biome-ignore lint/suspicious/noExplicitAny: the generic client's methods are built at run time
type AnyClient = any;

export const workloadMetadata = (): Metadata => {
  const md = new Metadata();
  md.set('workload.spiffe.io', 'true');
  return md;
};

export function workloadApiClient(socketPath: string): AnyClient {
  const Client = makeGenericClientConstructor(workloadApiService(), 'SpiffeWorkloadAPI');
  return new Client(`unix://${socketPath}`, credentials.createInsecure());
}

/** The messages and the end of one server stream, with waits for either. */
export class StreamReader<T> {
  readonly messages: T[] = [];
  error?: ServiceError;
  ended = false;

  constructor(readonly call: ClientReadableStream<T>) {
    call.on('data', (m: T) => this.messages.push(m));
    call.on('error', (e: ServiceError) => {
      this.error = e;
      this.ended = true;
    });
    call.on('end', () => {
      this.ended = true;
    });
  }

  async next(count = this.messages.length + 1, ms = 10_000): Promise<T> {
    await until(() => this.messages.length >= count || this.ended, ms);
    if (this.messages.length < count)
      throw new Error(`the stream ended: ${this.error?.code} ${this.error?.details}`);
    return this.messages[count - 1]!;
  }

  async end(ms = 10_000): Promise<ServiceError | undefined> {
    await until(() => this.ended, ms);
    return this.error;
  }

  cancel(): void {
    this.call.cancel();
  }
}

export async function until(condition: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  if (!condition()) throw new Error('condition never became true');
}

/** A unary call as a promise. */
export function unary<T>(
  client: AnyClient,
  method: string,
  request: unknown,
  md = workloadMetadata(),
): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](request, md, (e: ServiceError | null, r: T) => (e ? reject(e) : resolve(r))),
  );
}
