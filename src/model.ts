/**
 * The model as the rest of the app sees it: validates inputs once, at the edge (TypeScript
 * validates, C++ trusts), and turns native failures into typed errors.
 * All libtorch work runs on the addon's own inference threads, one per instance (native/worker.h).
 */
import { availableParallelism } from 'node:os';
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { cardPathFor } from './card.js';
import { DEVICE_SYNTAX, cpuHasAvx512Bf16, isDevice, isPrecision, type Device, type Precision } from './device.js';
import { AppError, ERRORS, type ErrorCode } from './errors.js';
import { loadNative, type NativeModel } from './native.js';
import { isPositiveInt } from './validate.js';

export interface LoadOptions {
  device?: Device;
  /** Intra-op threads of each instance; default os.availableParallelism() / instances. */
  threads?: number;
  /** Inference threads sharing the loaded model, each running whole forwards (default 1). */
  instances?: number;
  /** 'bf16' needs a CPU with avx512_bf16 or a CUDA device. Default 'fp32'. */
  precision?: Precision;
  /** Fast-path toggles (default on): channels-last weights + input; freeze if the file is not frozen. */
  channelsLast?: boolean;
  freeze?: boolean;
  /** torch::jit::optimize_for_inference at load (default off: measured slower than channels-last). */
  optimizeForInference?: boolean;
  /** Keep TorchScript's profiling executor (default off: it re-profiles every new batch size). */
  profilingExecutor?: boolean;
  /** Run a recognised DenseNet on the load-time executor (default on; docs/forward.md). */
  denseExecutor?: boolean;
  /** [C, H, W] of the probe forward at load; default: the model card's input_shape, else [3, 224, 224]. */
  inputShape?: readonly [number, number, number];
}

export interface ModelInfo {
  path: string;
  device: string;
  cudaAvailable: boolean;
  torchVersion: string;
  threads: number;
  instances: number;
  precision: Precision;
  /** Which optimisations took effect. */
  optimizations: string[];
  inputShape: [number, number, number];
  numClasses: number;
  loadSeconds: number;
}

export interface ForwardResult {
  data: Float32Array;
  shape: [number, number];
  /** The instance that ran it and its compute seconds there. */
  instance: number;
  seconds: number;
}

/** A model file that is missing, truncated, not TorchScript, or fails its probe forward. */
export class ModelLoadError extends AppError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MODEL_LOAD_FAILED', message, options);
  }
}

/** An option the machine cannot honour (bf16 without avx512_bf16, CUDA without a GPU...). */
export class ModelOptionError extends RangeError {
  readonly code = 'INVALID_MODEL_OPTION' satisfies ErrorCode;
  readonly statusCode = ERRORS.INVALID_MODEL_OPTION.status;
  constructor(message: string) {
    super(message);
    this.name = 'ModelOptionError';
  }
}

export class ModelDisposedError extends AppError {
  constructor() {
    super('MODEL_DISPOSED', 'The model has been disposed');
  }
}

/** libtorch rejected a forward (e.g. an input too small for the network). */
export class ForwardError extends AppError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FORWARD_FAILED', message, options);
  }
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'Array';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'Object';
  return typeof v;
}

function validateOptions(o: LoadOptions): void {
  if (o.device !== undefined && !isDevice(o.device)) {
    throw new ModelOptionError(`Expected device ${DEVICE_SYNTAX} but received ${JSON.stringify(o.device)}`);
  }
  if (o.precision !== undefined && !isPrecision(o.precision)) {
    throw new ModelOptionError(`Expected precision 'fp32' or 'bf16' but received ${JSON.stringify(o.precision)}`);
  }
  if (o.threads !== undefined && (!isPositiveInt(o.threads) || o.threads > 1024)) {
    throw new ModelOptionError(`Expected threads to be an integer between 1 and 1024 but received ${String(o.threads)}`);
  }
  if (o.instances !== undefined && (!isPositiveInt(o.instances) || o.instances > 256)) {
    throw new ModelOptionError(`Expected instances to be an integer between 1 and 256 but received ${String(o.instances)}`);
  }
  for (const k of ['channelsLast', 'freeze', 'optimizeForInference', 'profilingExecutor', 'denseExecutor'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new TypeError(`Expected boolean for ${k} but received ${typeName(o[k])}`);
  }
  if (o.inputShape !== undefined && (!Array.isArray(o.inputShape) || o.inputShape.length !== 3 || !o.inputShape.every(isPositiveInt))) {
    throw new ModelOptionError(`Expected inputShape [C, H, W] of positive integers but received ${JSON.stringify(o.inputShape)}`);
  }
  if (o.precision === 'bf16' && o.device === 'cpu' && !cpuHasAvx512Bf16()) {
    throw new ModelOptionError(
      "precision 'bf16' needs a CPU with avx512_bf16 (this CPU lacks it; bf16 would be slower than fp32 here) or a CUDA device",
    );
  }
}

/** input_shape from the model card next to the file (models/x.pt -> models/x.json), if any. */
async function cardInputShape(modelPath: string): Promise<[number, number, number] | undefined> {
  try {
    const card = JSON.parse(await readFile(cardPathFor(modelPath), 'utf8')) as { input_shape?: unknown };
    const s = card.input_shape;
    if (Array.isArray(s) && s.length === 3 && s.every(isPositiveInt)) return s as [number, number, number];
  } catch {
    // No card, or not readable: the default shape applies.
  }
  return undefined;
}

interface NativeError extends Error {
  code?: string;
}

export class Model {
  readonly info: ModelInfo;
  readonly #native: NativeModel;

  private constructor(native: NativeModel, info: ModelInfo) {
    this.#native = native;
    this.info = info;
  }

  static async load(path: string, options: LoadOptions = {}): Promise<Model> {
    if (typeof path !== 'string' || path === '') throw new TypeError(`Expected a model file path but received ${typeName(path)}`);
    validateOptions(options);
    const abs = resolve(path);
    try {
      const st = statSync(abs);
      if (!st.isFile()) throw new ModelLoadError(`Model file ${abs} is not a regular file`);
    } catch (err) {
      if (err instanceof ModelLoadError) throw err;
      throw new ModelLoadError(`Model file not found: ${abs} (run \`npm run export-model\` to create the default model)`, { cause: err });
    }
    const inputShape = options.inputShape ?? (await cardInputShape(abs)) ?? [3, 224, 224];
    const addon = loadNative();
    const native = new addon.Model();
    try {
      const raw = await native.load(abs, {
        device: options.device ?? 'auto',
        threads: options.threads ?? Math.max(1, Math.floor(availableParallelism() / (options.instances ?? 1))),
        instances: options.instances ?? 1,
        precision: options.precision ?? 'fp32',
        freeze: options.freeze ?? true,
        channelsLast: options.channelsLast ?? true,
        optimizeForInference: options.optimizeForInference ?? false,
        profilingExecutor: options.profilingExecutor ?? false,
        denseExecutor: options.denseExecutor ?? true,
        inputShape: [inputShape[0], inputShape[1], inputShape[2]],
      });
      const info: ModelInfo = {
        ...raw,
        precision: raw.precision as Precision,
        inputShape: [raw.inputShape[0] ?? 0, raw.inputShape[1] ?? 0, raw.inputShape[2] ?? 0],
      };
      return new Model(native, info);
    } catch (err) {
      void native.dispose();
      const e = err as NativeError;
      if (e.code === 'INVALID_MODEL_OPTION') throw new ModelOptionError(e.message);
      const msg = e.message.includes(abs) ? e.message : `Cannot load model ${abs}: ${e.message}`;
      throw new ModelLoadError(msg, { cause: err });
    }
  }

  get disposed(): boolean {
    return this.#native.disposed;
  }

  /**
   * Runs a forward at each batch size on EVERY instance, so that no first real call is the slow
   * one (libtorch's per-shape set-up is partly per thread). The instances warm up in parallel.
   * Resolves the seconds spent.
   */
  async warmup(batchSizes: readonly number[]): Promise<number> {
    if (this.disposed) throw new ModelDisposedError();
    if (!Array.isArray(batchSizes) || !batchSizes.every(isPositiveInt)) {
      throw new RangeError(`Expected batch sizes to be positive integers but received ${JSON.stringify(batchSizes)}`);
    }
    const t0 = performance.now();
    const sizes = [...batchSizes];
    await this.#call(() => Promise.all(Array.from({ length: this.info.instances }, (_, i) => this.#native.warmup(sizes, i))));
    return (performance.now() - t0) / 1000;
  }

  async forward(input: Float32Array, shape: readonly [number, number, number, number]): Promise<ForwardResult> {
    if (this.disposed) throw new ModelDisposedError();
    if (!(input instanceof Float32Array)) throw new TypeError(`Expected Float32Array for input but received ${typeName(input)}`);
    if (!Array.isArray(shape) || shape.length !== 4) {
      throw new RangeError(`Expected shape [N, C, H, W] (4 dimensions) but received ${JSON.stringify(shape)}`);
    }
    if (!shape.every(isPositiveInt)) throw new RangeError(`Expected shape entries to be positive integers but received ${JSON.stringify(shape)}`);
    const [n, c, h, w] = shape;
    if (c !== this.info.inputShape[0]) {
      throw new RangeError(`Expected ${this.info.inputShape[0]} channels (shape[1]) but received ${c}`);
    }
    const expected = n * c * h * w;
    if (input.length !== expected) {
      throw new RangeError(`Expected input length ${expected} (= ${n}*${c}*${h}*${w}) but received ${input.length}`);
    }
    const r = await this.#call(() => this.#native.forward(input, [n, c, h, w]));
    return { data: r.data, shape: [r.shape[0] ?? 0, r.shape[1] ?? 0], instance: r.instance, seconds: r.seconds };
  }

  /**
   * Gives the memory freed since the last forward back to the system. The allocator keeps it
   * otherwise (fast reuse, stable timings); call it when the model goes idle.
   */
  async releaseMemory(): Promise<void> {
    if (this.disposed) return;
    await this.#call(() => Promise.all(Array.from({ length: this.info.instances }, (_, i) => this.#native.releaseMemory(i))));
  }

  /**
   * Further calls fail with MODEL_DISPOSED; queued calls are rejected, running ones finish.
   * Resolves once no inference thread runs torch code any more (safe to process.exit()).
   */
  dispose(): Promise<void> {
    return this.#native.dispose();
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = err as NativeError;
      if (e.code === 'MODEL_DISPOSED') throw new ModelDisposedError();
      if (e.code === 'FORWARD_FAILED') throw new ForwardError(`Forward failed: ${e.message}`, { cause: err });
      if (e.code === 'INVALID_MODEL_OPTION') throw new RangeError(e.message, { cause: err });
      throw err;
    }
  }
}
