/**
 * Every error code the service produces, with its HTTP status and header policy, in one table
 * (the fastify lib/errors.js idea). Errors are typed where they arise: `new AppError(code, message)`
 * takes its status from here, so a code behaves the same wherever it is thrown. The README's error
 * table is checked against this one (test/readme.test.ts).
 */

interface ErrorSpec {
  readonly status: number;
  /**
   * Retry-After policy: a number is the fixed hint in seconds; 'estimate' means the thrower passes
   * its own estimate (`retryAfter` option, default 1). Absent: no Retry-After.
   */
  readonly retryAfter?: number | 'estimate';
  /** 5xx only: the message goes to the log; the client gets INTERNAL_MESSAGE. */
  readonly internal?: boolean;
  /** Raised at start-up or by tools, never sent as an HTTP response (not in the README table). */
  readonly startup?: boolean;
}

export const ERRORS = {
  // 400: the request itself is wrong.
  NO_IMAGE: { status: 400 },
  INVALID_JSON: { status: 400 },
  INVALID_REQUEST: { status: 400 },
  INVALID_BASE64: { status: 400 },
  INVALID_TOPK: { status: 400 },
  INVALID_BATCH_SIZE: { status: 400 },
  INVALID_CONTENT_LENGTH: { status: 400 },
  INVALID_MULTIPART: { status: 400 },
  INVALID_INFER_REQUEST: { status: 400 },
  EMPTY_IMAGE: { status: 400 },
  CORRUPT_IMAGE: { status: 400 },
  BAD_REQUEST: { status: 400 },
  UNAUTHORIZED: { status: 401 },
  NOT_FOUND: { status: 404 },
  MODEL_NOT_FOUND: { status: 404 },
  // 413: too much of something.
  BODY_TOO_LARGE: { status: 413 },
  FILE_TOO_LARGE: { status: 413 },
  IMAGE_TOO_LARGE: { status: 413 },
  TOO_MANY_PIXELS: { status: 413 },
  DECODE_TIMEOUT: { status: 413 },
  TOO_MANY_FILES: { status: 413 },
  TOO_MANY_PARTS: { status: 413 },
  TOO_MANY_FIELDS: { status: 413 },
  UNSUPPORTED_MEDIA_TYPE: { status: 415 },
  UNSUPPORTED_IMAGE: { status: 415 },
  // 503: the server cannot take the work now; the client should retry.
  NOT_READY: { status: 503, retryAfter: 2 },
  SHUTTING_DOWN: { status: 503, retryAfter: 1 },
  QUEUE_FULL: { status: 503, retryAfter: 'estimate' },
  REQUEST_TIMEOUT: { status: 503, retryAfter: 'estimate' },
  MODEL_DISPOSED: { status: 503, retryAfter: 1 },
  // The client closed the connection: its work is dropped; logged, never delivered (nginx's 499).
  CLIENT_GONE: { status: 499 },
  // 500: our fault. Logged with the request id; the client sees the code and a generic message.
  INFERENCE_FAILED: { status: 500, internal: true },
  FORWARD_FAILED: { status: 500, internal: true },
  PREPROCESS_FAILED: { status: 500, internal: true },
  INTERNAL: { status: 500, internal: true },
  // Start-up and tooling errors (never an HTTP response, but typed the same way).
  MODEL_LOAD_FAILED: { status: 500, internal: true, startup: true },
  INVALID_MODEL_OPTION: { status: 500, internal: true, startup: true },
  MODEL_CARD_INVALID: { status: 500, internal: true, startup: true },
  CONFIG_INVALID: { status: 500, internal: true, startup: true },
  NATIVE_ADDON_UNAVAILABLE: { status: 500, internal: true, startup: true },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** What a client is told instead of an internal error's message. */
export const INTERNAL_MESSAGE = 'internal server error (logged with this request id)';

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERRORS, code);
}

export function errorSpec(code: ErrorCode): ErrorSpec {
  return ERRORS[code];
}

export interface AppErrorOptions {
  cause?: unknown;
  /** Seconds, for codes whose Retry-After policy is 'estimate'. */
  retryAfter?: number;
}

/** A coded error carrying its HTTP status and headers, both taken from ERRORS. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  /** Headers the HTTP layer sends with this error (Retry-After for 503s). */
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    const spec: ErrorSpec = ERRORS[code];
    this.statusCode = spec.status;
    this.headers = {};
    if (spec.retryAfter !== undefined) {
      const seconds = spec.retryAfter === 'estimate' ? (options.retryAfter ?? 1) : spec.retryAfter;
      this.headers['retry-after'] = String(Math.max(1, Math.ceil(seconds)));
    }
  }

  /** True when the message must not reach the client (see ERRORS `internal`). */
  get internal(): boolean {
    return (ERRORS[this.code] as ErrorSpec).internal === true;
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

/** How much of a client's value an error message or log line repeats. */
export const ECHO_CHARS = 40;

/**
 * A client's value as JSON for an error message or a log line, cut to about `max` characters: a
 * 4 MB `topk` must not come back as a 4 MB error (docs/abuse.md). Long strings and arrays are cut
 * before they are encoded, so the cost does not grow with the value either.
 */
export function quote(value: unknown, max = ECHO_CHARS): string {
  const isArray = Array.isArray(value);
  const long = (typeof value === 'string' || isArray) && (value as string | unknown[]).length > max;
  const cut = long ? (value as string | unknown[]).slice(0, max) : value;
  let s: string;
  try {
    s = JSON.stringify(cut) ?? String(cut);
  } catch {
    s = Object.prototype.toString.call(cut); // BigInt, cycles
  }
  if (s.length <= max + 2 && cut === value) return s;
  const size = isArray ? `${(value as unknown[]).length} elements` : `${typeof value === 'string' ? value.length : s.length} chars`;
  return `${s.slice(0, max + 1)}… (${size})`;
}
