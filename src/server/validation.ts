/**
 * Route schemas are checked with TypeBox's compiled checker (no type coercion, nothing removed),
 * and a failure becomes an AppError whose code comes from the schema's `coded()` mark: the same
 * codes the hand-written checks gave (README, "Response format"). Echoed values are cut short.
 * Responses are serialised with JSON.stringify: the response schemas document the contract and
 * the tests check responses against them (docs/api-contract.md says why).
 */
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { AppError, quote, type ErrorCode } from '../errors.js';
import { CODE_KEY, EXPECTED_KEY } from './schemas/common.js';

interface MarkedError extends FastifySchemaValidationError {
  errorCode?: ErrorCode;
  expected?: string;
  value?: unknown;
}

type Json = Record<string, unknown>;

const pointer = (p: string): string[] => (p === '' || p === '#' ? [] : p.replace(/^#?\//, '').split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~')));

/** The deepest code/expected marks on the way from the root schema to the failing keyword. */
function marks(schema: unknown, schemaPath: string): { code?: ErrorCode; expected?: string } {
  const out: { code?: ErrorCode; expected?: string } = {};
  let node = schema as Json | undefined;
  const take = (): void => {
    if (node?.[CODE_KEY]) out.code = node[CODE_KEY] as ErrorCode;
    if (node?.[EXPECTED_KEY]) out.expected = node[EXPECTED_KEY] as string;
  };
  take();
  for (const seg of pointer(schemaPath)) {
    node = node?.[seg] as Json | undefined;
    if (node === undefined || typeof node !== 'object') break;
    take();
  }
  return out;
}

function valueAt(data: unknown, instancePath: string): unknown {
  let v = data;
  for (const seg of pointer(instancePath)) v = v !== null && typeof v === 'object' ? (v as Json)[seg] : undefined;
  return v;
}

/**
 * The error to report: an unknown key as such (not as "schema is false" at the key), else among
 * the errors at the first failing place the outermost one (an anyOf, not each of its branches).
 */
export function primaryError<E extends Pick<FastifySchemaValidationError, 'keyword' | 'schemaPath' | 'instancePath'>>(errors: readonly E[]): E {
  const first = errors[0]!;
  if (first.keyword === 'boolean' && first.schemaPath?.endsWith('/additionalProperties')) {
    const extra = errors.find((e) => e.keyword === 'additionalProperties');
    if (extra) return extra;
  }
  const here = errors.filter((e) => e.instancePath === first.instancePath);
  return here.reduce((a, b) => ((b.schemaPath ?? '').length < (a.schemaPath ?? '').length ? b : a));
}

export const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema }) => {
  const check = Compile(schema);
  return (value: unknown) => {
    if (check.Check(value)) return true;
    const e: MarkedError = { ...primaryError(check.Errors(value)) };
    const m = marks(schema, e.schemaPath ?? '');
    if (m.code) e.errorCode = m.code;
    if (m.expected) e.expected = m.expected;
    e.value = valueAt(value, e.instancePath);
    return { error: [e] };
  };
};

/** A value as the client sent it, cut short (quote); `nothing` for a missing one. */
const show = (v: unknown): string => (v === undefined ? 'nothing' : quote(v));

function where(dataVar: string, instancePath: string): string {
  const segs = pointer(instancePath);
  const path = segs.map((s, i) => (/^\d+$/.test(s) ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
  if (dataVar === 'querystring') return path ? `query parameter "${path}"` : 'the query string';
  if (dataVar === 'params') return path ? `path parameter "${path}"` : 'the path';
  if (dataVar === 'headers') return path ? `header "${path}"` : 'the headers';
  return path ? `"${path}"` : 'the JSON body';
}

/** Fastify's schemaErrorFormatter: the (marked) first error -> AppError with its code. */
export function schemaErrorFormatter(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const e = (errors[0] ?? { instancePath: '', schemaPath: '', keyword: '', params: {}, message: 'is invalid' }) as MarkedError;
  const at = where(dataVar, e.instancePath);
  const params = e.params as { requiredProperties?: string[]; additionalProperties?: string[] };
  let message: string;
  if (e.keyword === 'required' && params.requiredProperties) {
    message = `${at} is missing ${params.requiredProperties.map((p) => show(p)).join(', ')}`;
  } else if (e.keyword === 'additionalProperties' && Array.isArray(params.additionalProperties)) {
    message = `${at} has unknown key(s) ${params.additionalProperties.slice(0, 5).map((p) => show(p)).join(', ')}`;
  } else {
    message = `${at} ${e.expected ? `must be ${e.expected}` : (e.message ?? 'is invalid')}, got ${show(e.value)}`;
  }
  return new AppError(e.errorCode ?? 'INVALID_REQUEST', message);
}
