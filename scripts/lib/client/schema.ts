/**
 * The client's checks of POST /predict answers, derived from the server's own response schemas
 * (src/server/schemas/: the same TypeBox objects that the OpenAPI document publishes). Shapes and
 * types come from those schemas; on top, what a schema cannot say: the top-k count asked for,
 * sorted and distinct classes, probabilities that add up to at most 1, the batch size, and one
 * result per image sent. The README's examples are checked with these same functions
 * (test/readme.test.ts).
 */
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { ErrorBody } from '../../../src/server/schemas/common.js';
import { primaryError } from '../../../src/server/validation.js';
import {
  MultiPredictResponse as MultiSchema,
  PredictResponse as SingleSchema,
  Predictions as PredictionsSchema,
  type ErrorBodyT,
  type MultiPredictResponseT,
  type PredictionT,
  type PredictResponseT,
} from '../../../src/server/schemas/predict.js';

export type Prediction = PredictionT;
export type PredictResponse = PredictResponseT;
export type MultiPredictResponse = MultiPredictResponseT;
export type ErrorResponse = ErrorBodyT;

export class SchemaError extends Error {
  override name = 'SchemaError';
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 60)}…` : s;
}

/** A compiled schema check whose failure names the JSON path, what was expected and what came. */
function checker<T>(schema: TSchema): (v: unknown, path: string) => T {
  const c = Compile(schema);
  return (v, path) => {
    if (c.Check(v)) return v as T;
    const e = primaryError(c.Errors(v));
    const segs = e.instancePath.split('/').slice(1);
    let at: unknown = v;
    for (const s of segs) at = isObj(at) || Array.isArray(at) ? (at as Obj)[s] : undefined;
    const where = path + segs.map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s}`)).join('');
    const params = e.params as { requiredProperties?: string[]; additionalProperties?: string[] };
    if (e.keyword === 'required') throw new SchemaError(`${where}: missing ${params.requiredProperties?.map((k) => `"${k}"`).join(', ')}`);
    if (e.keyword === 'additionalProperties') throw new SchemaError(`${where}: unexpected key(s) ${params.additionalProperties?.map((k) => `"${k}"`).join(', ')}`);
    throw new SchemaError(`${where}: ${e.message}, got ${show(at)}`);
  };
}

const checkSingle = checker<PredictResponse>(SingleSchema);
const checkMulti = checker<MultiPredictResponse>(MultiSchema);
const checkError = checker<ErrorResponse>(ErrorBody);
const checkPredictionList = checker<Prediction[]>(PredictionsSchema);

export interface ExpectOptions {
  /** Requested top-k: the response must hold exactly min(topk, classes) predictions. */
  topk?: number;
  /** Expected batch_size (1 unless a JSON batch_size probe was sent). */
  batchSize?: number;
  /** Number of classes of the model (1000 for ImageNet). */
  numClasses?: number;
}

/** What the schema cannot say about a prediction list. */
function checkPredictions(v: readonly Prediction[], path: string, opts: ExpectOptions): void {
  const numClasses = opts.numClasses ?? 1000;
  if (opts.topk !== undefined && v.length !== Math.min(opts.topk, numClasses)) {
    throw new SchemaError(`${path}: expected ${Math.min(opts.topk, numClasses)} predictions (topk), got ${v.length}`);
  }
  const seen = new Set<number>();
  let prev = Infinity;
  let sum = 0;
  v.forEach((p, i) => {
    const pp = `${path}[${i}]`;
    if (p.class_id >= numClasses) throw new SchemaError(`${pp}.class_id: expected an integer in [0, ${numClasses - 1}], got ${p.class_id}`);
    if (seen.has(p.class_id)) throw new SchemaError(`${pp}.class_id: ${p.class_id} appears twice`);
    seen.add(p.class_id);
    if (p.confidence > prev) throw new SchemaError(`${pp}.confidence: not sorted (${p.confidence} after ${prev})`);
    prev = p.confidence;
    sum += p.confidence;
  });
  // Softmax probabilities: the top-k can never add up to more than 1 (4-decimal rounding aside).
  if (sum > 1 + 1e-3 * v.length) throw new SchemaError(`${path}: confidences add up to ${sum.toFixed(4)} > 1 (not softmax probabilities)`);
}

function checkVariant(variant: string, path: string): void {
  if (!variant.startsWith('densenet121')) throw new SchemaError(`${path}: expected a "densenet121…" variant, got ${show(variant)}`);
}

export function validatePredictions(v: unknown, path: string, opts: ExpectOptions = {}): Prediction[] {
  const predictions = checkPredictionList(v, path);
  checkPredictions(predictions, path, opts);
  return predictions;
}

export function validateError(v: unknown, path = '$'): ErrorResponse {
  return checkError(v, path);
}

export function isErrorShape(v: unknown): boolean {
  return isObj(v) && 'error' in v && !('predictions' in v);
}

/** One image's answer: `{"predictions", "latency_ms", "model_variant", "batch_size"}`, nothing else. */
export function validatePredictResponse(v: unknown, opts: ExpectOptions = {}, path = '$'): PredictResponse {
  const r = checkSingle(v, path);
  checkPredictions(r.predictions, `${path}.predictions`, opts);
  checkVariant(r.model_variant, `${path}.model_variant`);
  if (opts.batchSize !== undefined && r.batch_size !== opts.batchSize) throw new SchemaError(`${path}.batch_size: expected ${opts.batchSize}, got ${r.batch_size}`);
  return r;
}

/**
 * Several images: `{"results": [...], "latency_ms", "model_variant", "batch_size"}` with one entry
 * per image, in order: `{"predictions"}` or, for an image that failed, `{"error","code","message"}`.
 * `batch_size` counts the images that reached the model.
 */
export function validateMultiResponse(v: unknown, count: number, opts: ExpectOptions = {}, path = '$'): MultiPredictResponse {
  const r = checkMulti(v, path);
  if (r.results.length !== count) throw new SchemaError(`${path}.results: expected ${count} entries (one per image), got ${r.results.length}`);
  let ok = 0;
  r.results.forEach((res, i) => {
    if ('predictions' in res) {
      checkPredictions(res.predictions, `${path}.results[${i}].predictions`, opts);
      ok++;
    }
  });
  checkVariant(r.model_variant, `${path}.model_variant`);
  if (r.batch_size !== ok) throw new SchemaError(`${path}.batch_size: expected ${ok} (images that reached the model), got ${r.batch_size}`);
  return r;
}

/** GET /health, /healthz, /readyz: a JSON object (its fields are informational). */
export function validateHealth(v: unknown, path: string): Obj {
  if (!isObj(v)) throw new SchemaError(`${path}: expected a JSON object, got ${show(v)}`);
  return v;
}

/** GET /: service info. Only what the client relies on is checked; the rest is printed. */
export function validateInfo(v: unknown, path = 'GET /'): Obj {
  if (!isObj(v)) throw new SchemaError(`${path}: expected a JSON object, got ${show(v)}`);
  return v;
}
