/**
 * Coded errors that carry their HTTP status (the @fastify/error idea, without the factory).
 * Errors are typed where they arise; routes never translate message strings.
 */
export class AppError extends Error {
  readonly code: string;
  readonly statusCode: number;
  /** Extra headers the HTTP layer should send with this error (e.g. Retry-After). */
  readonly headers: Record<string, string>;

  constructor(code: string, statusCode: number, message: string, options?: { cause?: unknown; headers?: Record<string, string> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.statusCode = statusCode;
    this.headers = options?.headers ?? {};
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}
