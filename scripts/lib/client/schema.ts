/**
 * The documented response schema of POST /predict, written once as validators (no JSON-schema
 * dependency). The README's response examples are checked against these same functions by
 * test/readme.test.ts, so the documentation and the client cannot disagree.
 *
 *   single image:   {"predictions":[{"class_id","class_name","confidence"}…],"latency_ms","model_variant","batch_size"}
 *   several images: {"results":[{"predictions"} | <error shape>, …],"latency_ms","model_variant","batch_size"}
 *   error:          {"error","code","message"}
 */

export interface Prediction {
  class_id: number;
  class_name: string;
  confidence: number;
}
export interface PredictResponse {
  predictions: Prediction[];
  latency_ms: number;
  model_variant: string;
  batch_size: number;
}
export interface ErrorResponse {
  error: string;
  code: string;
  message: string;
}
export interface MultiPredictResponse {
  results: Array<{ predictions: Prediction[] } | ErrorResponse>;
  latency_ms: number;
  model_variant: string;
  batch_size: number;
}

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

function fail(path: string, expected: string, got: unknown): never {
  throw new SchemaError(`${path}: expected ${expected}, got ${show(got)}`);
}

function exactKeys(o: Obj, path: string, required: readonly string[], optional: readonly string[] = []): void {
  for (const k of required) if (!(k in o)) throw new SchemaError(`${path}: missing "${k}"`);
  const known = new Set([...required, ...optional]);
  const extra = Object.keys(o).filter((k) => !known.has(k));
  if (extra.length) throw new SchemaError(`${path}: unexpected key(s) ${extra.map((k) => `"${k}"`).join(', ')}`);
}

function nonEmptyString(v: unknown, path: string): string {
  if (typeof v !== 'string' || v.length === 0) fail(path, 'a non-empty string', v);
  return v;
}

export interface ExpectOptions {
  /** Requested top-k: the response must hold exactly min(topk, classes) predictions. */
  topk?: number;
  /** Expected batch_size (1 unless a JSON batch_size probe was sent). */
  batchSize?: number;
  /** Number of classes of the model (1000 for ImageNet). */
  numClasses?: number;
}

export function validatePredictions(v: unknown, path: string, opts: ExpectOptions = {}): Prediction[] {
  if (!Array.isArray(v) || v.length === 0) fail(path, 'a non-empty array', v);
  const numClasses = opts.numClasses ?? 1000;
  if (opts.topk !== undefined && v.length !== Math.min(opts.topk, numClasses)) {
    throw new SchemaError(`${path}: expected ${Math.min(opts.topk, numClasses)} predictions (topk), got ${v.length}`);
  }
  const seen = new Set<number>();
  let prev = Infinity;
  let sum = 0;
  v.forEach((p, i) => {
    const pp = `${path}[${i}]`;
    if (!isObj(p)) fail(pp, 'an object', p);
    exactKeys(p, pp, ['class_id', 'class_name', 'confidence']);
    if (!Number.isInteger(p.class_id) || (p.class_id as number) < 0 || (p.class_id as number) >= numClasses) {
      fail(`${pp}.class_id`, `an integer in [0, ${numClasses - 1}]`, p.class_id);
    }
    if (seen.has(p.class_id as number)) throw new SchemaError(`${pp}.class_id: ${String(p.class_id)} appears twice`);
    seen.add(p.class_id as number);
    nonEmptyString(p.class_name, `${pp}.class_name`);
    const c = p.confidence;
    if (typeof c !== 'number' || !Number.isFinite(c) || c < 0 || c > 1) fail(`${pp}.confidence`, 'a probability in [0, 1]', c);
    if (c > prev) throw new SchemaError(`${pp}.confidence: not sorted (${c} after ${prev})`);
    prev = c;
    sum += c;
  });
  // Softmax probabilities: the top-k can never add up to more than 1 (4-decimal rounding aside).
  if (sum > 1 + 1e-3 * v.length) throw new SchemaError(`${path}: confidences add up to ${sum.toFixed(4)} > 1 (not softmax probabilities)`);
  return v as Prediction[];
}

function latency(v: unknown, path: string): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail(path, 'a non-negative number (ms)', v);
}

function batchSize(v: unknown, path: string, expected?: number): void {
  if (!Number.isInteger(v) || (v as number) < 1) fail(path, 'a positive integer', v);
  if (expected !== undefined && v !== expected) fail(path, String(expected), v);
}

export function validateError(v: unknown, path = '$'): ErrorResponse {
  if (!isObj(v)) fail(path, 'an object', v);
  exactKeys(v, path, ['error', 'code', 'message']);
  nonEmptyString(v.error, `${path}.error`);
  const code = nonEmptyString(v.code, `${path}.code`);
  if (!/^[A-Z][A-Z0-9_]*$/.test(code)) fail(`${path}.code`, 'an UPPER_SNAKE_CASE code', code);
  nonEmptyString(v.message, `${path}.message`);
  return v as unknown as ErrorResponse;
}

export function isErrorShape(v: unknown): boolean {
  return isObj(v) && 'error' in v && !('predictions' in v);
}

/** One image's answer: `{"predictions", "latency_ms", "model_variant", "batch_size"}`, nothing else. */
export function validatePredictResponse(v: unknown, opts: ExpectOptions = {}, path = '$'): PredictResponse {
  if (!isObj(v)) fail(path, 'an object', v);
  exactKeys(v, path, ['predictions', 'latency_ms', 'model_variant', 'batch_size']);
  validatePredictions(v.predictions, `${path}.predictions`, opts);
  latency(v.latency_ms, `${path}.latency_ms`);
  const variant = nonEmptyString(v.model_variant, `${path}.model_variant`);
  if (!variant.startsWith('densenet121')) fail(`${path}.model_variant`, 'a "densenet121…" variant', variant);
  batchSize(v.batch_size, `${path}.batch_size`, opts.batchSize);
  return v as unknown as PredictResponse;
}

/**
 * Several images: `{"results": [...], "latency_ms", "model_variant", "batch_size"}` with one entry
 * per image, in order: `{"predictions"}` or, for an image that failed, `{"error","code","message"}`.
 * `batch_size` counts the images that reached the model.
 */
export function validateMultiResponse(v: unknown, count: number, opts: ExpectOptions = {}, path = '$'): MultiPredictResponse {
  if (!isObj(v)) fail(path, 'an object', v);
  exactKeys(v, path, ['results', 'latency_ms', 'model_variant', 'batch_size']);
  if (!Array.isArray(v.results)) fail(`${path}.results`, 'an array', v.results);
  if (v.results.length !== count) throw new SchemaError(`${path}.results: expected ${count} entries (one per image), got ${v.results.length}`);
  let ok = 0;
  v.results.forEach((r, i) => {
    const rp = `${path}.results[${i}]`;
    if (isErrorShape(r)) {
      validateError(r, rp);
      return;
    }
    if (!isObj(r)) fail(rp, 'an object', r);
    exactKeys(r, rp, ['predictions']);
    validatePredictions(r.predictions, `${rp}.predictions`, opts);
    ok++;
  });
  latency(v.latency_ms, `${path}.latency_ms`);
  const variant = nonEmptyString(v.model_variant, `${path}.model_variant`);
  if (!variant.startsWith('densenet121')) fail(`${path}.model_variant`, 'a "densenet121…" variant', variant);
  if (ok > 0) batchSize(v.batch_size, `${path}.batch_size`, ok);
  else if (v.batch_size !== 0) fail(`${path}.batch_size`, '0 (no image reached the model)', v.batch_size);
  return v as unknown as MultiPredictResponse;
}

/** GET /health, /healthz, /readyz: a JSON object (its fields are informational). */
export function validateHealth(v: unknown, path: string): Obj {
  if (!isObj(v)) fail(path, 'a JSON object', v);
  return v;
}

/** GET /: service info. Only what the client relies on is checked; the rest is printed. */
export function validateInfo(v: unknown, path = 'GET /'): Obj {
  if (!isObj(v)) fail(path, 'a JSON object', v);
  return v;
}
