/**
 * One error shape for every failure: {"error", "code", "message"} with the right status.
 * AppErrors carry their own status/code/headers; Fastify's and @fastify/multipart's coded errors
 * are mapped here, in one table, so routes never translate strings.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, INTERNAL_MESSAGE, isAppError, isErrorCode, type ErrorCode } from '../errors.js';

export interface ErrorBody {
  error: string;
  code: string;
  message: string;
}

const UNSUPPORTED_MEDIA =
  'unsupported Content-Type: send multipart/form-data, application/json or image/* (KServe v2: application/json)';

/** Framework error code -> our code (and our message; default: the framework's). */
const FRAMEWORK_CODES: Record<string, [ErrorCode, string?]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: ['BODY_TOO_LARGE'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ['UNSUPPORTED_MEDIA_TYPE', UNSUPPORTED_MEDIA],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['INVALID_CONTENT_LENGTH'],
  FST_ERR_CTP_EMPTY_JSON_BODY: ['INVALID_JSON'],
  FST_ERR_CTP_INVALID_JSON_BODY: ['INVALID_JSON'],
  FST_ERR_VALIDATION: ['INVALID_REQUEST'],
  FST_REQ_FILE_TOO_LARGE: ['FILE_TOO_LARGE'],
  FST_FILES_LIMIT: ['TOO_MANY_FILES'],
  FST_PARTS_LIMIT: ['TOO_MANY_PARTS'],
  FST_FIELDS_LIMIT: ['TOO_MANY_FIELDS'],
  FST_PROTO_VIOLATION: ['INVALID_MULTIPART'],
  FST_INVALID_MULTIPART_CONTENT_TYPE: ['UNSUPPORTED_MEDIA_TYPE', UNSUPPORTED_MEDIA],
  FST_INVALID_JSON_FIELD_ERROR: ['INVALID_MULTIPART'],
  // The body ended mid-part (truncated multipart); if the client really went away, nobody reads it.
  ERR_STREAM_PREMATURE_CLOSE: ['INVALID_MULTIPART'],
};

export function toAppError(err: unknown): AppError {
  if (isAppError(err)) return err;
  const e = err as Partial<FastifyError> & { message?: string; status?: number };
  const mapped = e?.code ? FRAMEWORK_CODES[e.code] : undefined;
  if (mapped) return new AppError(mapped[0], mapped[1] ?? e.message ?? mapped[0], { cause: err });
  if (err instanceof SyntaxError) return new AppError('INVALID_JSON', `invalid JSON body: ${err.message}`, { cause: err });
  // Typed errors from outside the HTTP layer (ModelOptionError is a RangeError with our code).
  if (isErrorCode(e?.code)) return new AppError(e.code, e.message ?? e.code, { cause: err });
  const status = e?.statusCode ?? e?.status;
  if (typeof status === 'number' && status >= 400 && status < 500) return new AppError('BAD_REQUEST', e.message ?? 'bad request', { cause: err });
  // Busboy's parse errors are plain Errors thrown while reading a malformed body.
  if (err instanceof Error && /multipart|boundary|Unexpected end of form|Malformed part header/i.test(err.message)) {
    return new AppError('INVALID_MULTIPART', `malformed multipart body: ${err.message}`, { cause: err });
  }
  return new AppError('INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
}

export function errorBody(err: AppError, style: 'default' | 'v2' = 'default'): ErrorBody {
  // KServe v2 says {"error": "<message>"}; elsewhere "error" is the status phrase.
  const message = err.internal ? INTERNAL_MESSAGE : err.message;
  const error = style === 'v2' ? message : (STATUS_CODES[err.statusCode] ?? 'Error');
  return { error, code: err.code, message };
}

export function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  const appErr = toAppError(err);
  if (appErr.statusCode >= 500 && appErr.statusCode !== 503) {
    request.log.error({ err: appErr.cause ?? appErr, code: appErr.code }, `request failed: ${appErr.message}`);
  } else {
    request.log.info({ code: appErr.code, status: appErr.statusCode }, appErr.message);
  }
  const style = request.url.startsWith('/v2') ? 'v2' : 'default';
  void reply.code(appErr.statusCode).headers(appErr.headers);
  // Framework errors may have set their own headers already; ours are the ones that count.
  return reply.type('application/json; charset=utf-8').send(errorBody(appErr, style));
}
