/**
 * Building blocks shared by the route schemas (TypeBox = JSON Schema). `coded()` marks the error
 * code (src/errors.ts) and the wording a validation failure of that part gets; the validator
 * (../validation.ts) reads the marks, so a schema failure keeps the code the hand-written checks
 * gave before. The same objects feed the OpenAPI document (../openapi.ts) and the client's
 * response checks (scripts/lib/client/schema.ts).
 */
import { Type, type TSchema } from 'typebox';
import type { ErrorCode } from '../../errors.js';

/** Annotation keys (OpenAPI allows `x-` keys in a schema). */
export const CODE_KEY = 'x-error-code';
export const EXPECTED_KEY = 'x-expected';

/** `schema`, whose validation failures answer `code` with "… must be <expected>". */
export function coded<T extends TSchema>(schema: T, code: ErrorCode, expected?: string): T {
  return Object.assign(schema, { [CODE_KEY]: code }, expected ? { [EXPECTED_KEY]: expected } : {});
}

/** Every error body: {"error", "code", "message"} (under /v2, "error" is the message). */
export const ErrorBody = Type.Object(
  {
    error: Type.String({ minLength: 1, description: 'HTTP status phrase; under /v2 the message itself (KServe)' }),
    code: Type.String({ pattern: '^[A-Z][A-Z0-9_]*$', description: 'stable error code (README, "Response format")' }),
    message: Type.String({ minLength: 1 }),
  },
  { additionalProperties: false, description: 'an error' },
);

/** Error responses by status, for a route's `response` map. */
export function errors(...statuses: number[]): Record<number, typeof ErrorBody> {
  return Object.fromEntries(statuses.map((s) => [s, ErrorBody]));
}

export const LifecycleState = Type.Union([Type.Literal('starting'), Type.Literal('ready'), Type.Literal('draining')]);
