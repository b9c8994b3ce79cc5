/**
 * A refusal decided on the node itself (a token that does not parse, a server that fails the pin,
 * an identity that needs a new token). `code` is a stable `ERR_…` string like the server's codes;
 * messages never contain the token.
 */
export class AgentError extends Error {
  override readonly name = 'AgentError';
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
