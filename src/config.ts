/**
 * Environment -> typed, validated configuration. The only place that reads process.env for the
 * server. A bad value throws ConfigError naming the variable; main.ts prints it and exits 2.
 */
import { constants as bufferConstants } from 'node:buffer';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { DEVICE_SYNTAX, PRECISIONS, isDevice, type Device, type Precision } from './device.js';
import { AppError } from './errors.js';
import { DEFAULT_IMAGE_FORMATS, SUPPORTED_FORMATS, type ImageFormat } from './preprocess.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/**
 * The malloc settings the server is meant to run with (stable forward timings, lower RSS:
 * docs/design.md#allocator-settings). glibc reads them only at process start, so not from here:
 * `npm start` and the Dockerfile put the same value in the environment; the benchmarks and
 * tests that start servers use this constant.
 */
export const GLIBC_TUNABLES = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483648:glibc.malloc.arena_max=1';

/**
 * V8 flags the server is meant to run with: a 2 MB young generation semi-space (V8's default grows
 * to 16 MB), which lowers RSS under load at no measured cost in throughput
 * (docs/design.md#memory). V8 sizes its heap when the isolate starts, so, like
 * GLIBC_TUNABLES, `npm start` and the Dockerfile's CMD pass them on node's command line.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

export interface Config {
  port: number;
  host: string;
  modelPath: string;
  device: Device;
  precision: Precision;
  /** CPUs this process may use: the machine's, capped by a cgroup CPU quota (containers). */
  cpus: number;
  /** Model instances: inference threads sharing the loaded model, each running whole forwards. */
  instances: number;
  /** libtorch intra-op threads of each instance (its OpenMP team). instances x threads <= cpus. */
  threads: number;
  /** Most images coalesced into one forward. 1 turns batching off. */
  maxBatch: number;
  /** How long an idle batcher waits for more images before running a partial batch. */
  batchWindowMs: number;
  /** Images allowed to wait in the queue; beyond it requests get 503 + Retry-After. */
  queueLimit: number;
  /** Largest request body in bytes (raw image, JSON, whole multipart request). */
  bodyLimit: number;
  /** Largest decoded image, in pixels (decompression-bomb guard). */
  maxPixels: number;
  /** Pixels of all of one request's images together, read from their headers before decoding. */
  maxRequestPixels: number;
  /** Longest libvips may spend decoding one image, ms (a whole number of seconds). */
  decodeTimeoutMs: number;
  /** Inference requests being received or processed at once; beyond it 503 before the body is read. */
  maxConcurrentRequests: number;
  /** Per-request inference deadline (queue wait + compute); past it: 503 REQUEST_TIMEOUT. */
  requestTimeoutMs: number;
  /** When set, Bearer token required on /predict and /v2/.../infer. */
  apiToken: string | undefined;
  logLevel: LogLevel;
  /** SIGTERM/SIGINT: how long in-flight work may take before the process gives up (exit 1). */
  drainTimeoutMs: number;
  /** Images preprocessed at once, each on one libuv pool thread (and one libvips thread while decoding). */
  preprocessConcurrency: number;
  /** Images decoded at once while a forward runs; 'auto': CPUs - THREADS on CPU, all on CUDA. */
  preprocessDuringForward: number | 'auto';
  /** Files accepted in one multipart request; more -> 413. */
  maxFiles: number;
  /** Whole-request receive deadline (slow-body / slowloris guard), ms. */
  httpRequestTimeoutMs: number;
  /** Image formats accepted; others -> 415 UNSUPPORTED_IMAGE. */
  imageFormats: readonly ImageFormat[];
}

export class ConfigError extends AppError {
  constructor(readonly variable: string, message: string) {
    super('CONFIG_INVALID', `${variable}: ${message}`);
  }
}

type Env = Record<string, string | undefined>;

/** What the host offers; detected by default, given by tests. */
export interface Host {
  cpus: number;
}

/** CPUs of the machine, capped by the whole cores of a cgroup (v2 or v1) CPU quota when one is set. */
export function detectHost(): Host {
  const machine = os.availableParallelism();
  let quota = Infinity;
  try {
    const [max, period] = readFileSync('/sys/fs/cgroup/cpu.max', 'utf8').trim().split(/\s+/);
    if (max !== 'max' && Number(period) > 0) quota = Number(max) / Number(period);
  } catch {
    try {
      const q = Number(readFileSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us', 'utf8'));
      const p = Number(readFileSync('/sys/fs/cgroup/cpu/cpu.cfs_period_us', 'utf8'));
      if (q > 0 && p > 0) quota = q / p;
    } catch {
      // No cgroup CPU controller visible: the machine's CPUs.
    }
  }
  // Whole cores: OpenMP threads beyond the quota would only be throttled.
  return { cpus: Math.max(1, Math.min(machine, Math.floor(quota + 1e-9))) };
}

/**
 * INSTANCES and THREADS ('auto' or numbers) -> numbers with instances x threads <= cpus.
 * auto on CPU: one single-threaded instance per CPU (docs/design.md, "Model instances");
 * on CUDA: one instance (the GPU runs one forward at a time) whose CPU side may use every CPU.
 */
function parallelism(env: Env, cpus: number, dev: Device): { instances: number; threads: number } {
  const inst = intOrAuto(env, 'INSTANCES', 1, 256);
  const thr = intOrAuto(env, 'THREADS', 1, 1024);
  const cuda = dev.startsWith('cuda');
  let instances: number;
  let threads: number;
  if (inst === 'auto' && thr === 'auto') {
    instances = cuda ? 1 : cpus;
    threads = cuda ? cpus : 1;
  } else if (inst === 'auto') {
    threads = thr as number;
    instances = cuda ? 1 : Math.max(1, Math.floor(cpus / threads));
  } else if (thr === 'auto') {
    instances = inst;
    threads = Math.max(1, Math.floor(cpus / instances));
  } else {
    instances = inst;
    threads = thr;
  }
  if (instances * threads > cpus) {
    const name = inst === 'auto' ? 'THREADS' : 'INSTANCES';
    throw new ConfigError(
      name,
      `INSTANCES x THREADS must not exceed the ${cpus} CPU(s) available (cgroup quota included), got ${instances} x ${threads}: ` +
        'more OpenMP threads than cores make every forward slower',
    );
  }
  return { instances, threads };
}

/**
 * The largest body any parser may accept: Fastify holds a JSON body as one string, and a string
 * longer than V8's maximum (~512 MiB) throws outside any handler and kills the process.
 */
export const MAX_BODY_LIMIT = bufferConstants.MAX_STRING_LENGTH;
const BODY_LIMIT_WHY = "V8's maximum string length: Fastify holds a JSON body as one string";

/** The /v2 infer body limit: MAX_BATCH images as JSON numbers (~24 bytes per float), clamped to MAX_BODY_LIMIT. */
export function inferBodyLimit(config: Pick<Config, 'bodyLimit' | 'maxBatch'>, floatsPerImage = 3 * 224 * 224): number {
  return Math.min(MAX_BODY_LIMIT, Math.max(config.bodyLimit, config.maxBatch * floatsPerImage * 24 + 65536));
}

/**
 * Fastify's connectionTimeout: a socket with no traffic for this long is closed. Longer than the
 * longest legitimate silence (a request being processed: its deadline plus one decode), so only a
 * client that stopped reading its response, or vanished, is cut.
 */
export function connectionTimeoutMs(config: Pick<Config, 'requestTimeoutMs' | 'decodeTimeoutMs'>): number {
  return config.requestTimeoutMs + config.decodeTimeoutMs + 5_000;
}

function raw(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function int(env: Env, name: string, def: number, min: number, max: number): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!/^-?\d+$/.test(v)) throw new ConfigError(name, `expected an integer, got ${JSON.stringify(v)}`);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `expected an integer in ${min}..${max}, got ${v}`);
  }
  return n;
}

/** An integer in min..max, or 'auto' (also when unset). */
function intOrAuto(env: Env, name: string, min: number, max: number): number | 'auto' {
  const v = raw(env, name);
  if (v === undefined || v.toLowerCase() === 'auto') return 'auto';
  if (!/^-?\d+$/.test(v)) throw new ConfigError(name, `expected auto or an integer, got ${JSON.stringify(v)}`);
  return int(env, name, 0, min, max);
}

/** Sizes like 16777216, 16MiB, 16MB, 512KiB (1024-based; MB treated as MiB, as users mean it). */
function bytes(env: Env, name: string, def: number, min: number, max: number, why?: string): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  const m = /^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(v);
  if (!m) throw new ConfigError(name, `expected a size in bytes (e.g. 16777216 or 16MiB), got ${JSON.stringify(v)}`);
  const unit = (m[2] ?? 'b').toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `expected a size in ${min}..${max} bytes${why ? ` (${why})` : ''}, got ${v}`);
  }
  return n;
}

function oneOf<T extends string>(env: Env, name: string, def: T, allowed: readonly T[]): T {
  const v = raw(env, name);
  if (v === undefined) return def;
  const lower = v.toLowerCase() as T;
  if (!allowed.includes(lower)) throw new ConfigError(name, `expected one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  return lower;
}

/** MAX_PIXELS per image and MAX_REQUEST_PIXELS per request (rationale: README, Configuration). */
function pixelLimits(env: Env): { maxPixels: number; maxRequestPixels: number } {
  const maxPixels = int(env, 'MAX_PIXELS', 25_000_000, 1, 1_000_000_000);
  const maxRequestPixels = int(env, 'MAX_REQUEST_PIXELS', Math.max(50_000_000, maxPixels), 1, 10_000_000_000);
  if (maxRequestPixels < maxPixels) {
    throw new ConfigError('MAX_REQUEST_PIXELS', `must be at least MAX_PIXELS (${maxPixels}): one image of MAX_PIXELS must fit in a request, got ${maxRequestPixels}`);
  }
  return { maxPixels, maxRequestPixels };
}

/** libvips checks its timeout once per second of decoding, so only whole seconds mean anything. */
function decodeTimeout(env: Env): number {
  const ms = int(env, 'DECODE_TIMEOUT_MS', 5_000, 1_000, 600_000);
  if (ms % 1000 !== 0) throw new ConfigError('DECODE_TIMEOUT_MS', `expected whole seconds (libvips checks its timeout once per second), e.g. 5000, got ${ms}`);
  return ms;
}

/** A comma-separated subset of SUPPORTED_FORMATS (case-insensitive, 'jpg' allowed), at least one. */
function imageFormats(env: Env): readonly ImageFormat[] {
  const v = raw(env, 'IMAGE_FORMATS');
  if (v === undefined) return DEFAULT_IMAGE_FORMATS;
  const names = v.toLowerCase().split(',').map((f) => f.trim()).filter((f) => f !== '').map((f) => (f === 'jpg' ? 'jpeg' : f));
  const unknown = names.filter((f) => !(SUPPORTED_FORMATS as readonly string[]).includes(f));
  if (names.length === 0 || unknown.length > 0) {
    throw new ConfigError('IMAGE_FORMATS', `expected a comma-separated list of ${SUPPORTED_FORMATS.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return SUPPORTED_FORMATS.filter((f) => names.includes(f));
}

function device(env: Env): Device {
  const v = raw(env, 'DEVICE');
  if (v === undefined) return 'auto';
  const lower = v.toLowerCase();
  if (isDevice(lower)) return lower;
  throw new ConfigError('DEVICE', `expected ${DEVICE_SYNTAX}, got ${JSON.stringify(v)}`);
}

/**
 * Defaults (measurements: docs/design.md#defaults):
 * - MAX_BATCH 8: past 8 the per-image gain of batching is flat and a full batch's latency grows.
 * - BATCH_WINDOW_MS 50: long enough for the images decoded after a forward to join the next batch.
 * - INSTANCES, THREADS auto: one single-threaded instance per CPU (parallelism() above).
 * - QUEUE_LIMIT 64 (or 4 x MAX_BATCH): ~2 s of work at b8 on CPU; deeper queues only time out.
 */
export function loadConfig(env: Env = process.env, machine: Host = detectHost()): Config {
  const cores = machine.cpus;
  const maxBatch = int(env, 'MAX_BATCH', 4, 1, 256);
  const logLevel = oneOf<LogLevel>(env, 'LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
  const apiToken = raw(env, 'API_TOKEN');
  if (apiToken !== undefined && apiToken.length < 8) {
    throw new ConfigError('API_TOKEN', 'must be at least 8 characters when set');
  }
  const dev = device(env);
  const host = raw(env, 'HOST') ?? '0.0.0.0';
  if (/\s/.test(host)) throw new ConfigError('HOST', `invalid host ${JSON.stringify(host)}`);
  const cfg: Config = {
    port: int(env, 'PORT', 8080, 0, 65535),
    host,
    modelPath: raw(env, 'MODEL_PATH') ?? 'models/densenet121.pt',
    device: dev,
    precision: oneOf<Precision>(env, 'PRECISION', 'fp32', PRECISIONS),
    cpus: cores,
    ...parallelism(env, cores, dev),
    maxBatch,
    batchWindowMs: int(env, 'BATCH_WINDOW_MS', 50, 0, 10_000),
    queueLimit: int(env, 'QUEUE_LIMIT', Math.max(64, maxBatch * 4), 1, 1_000_000),
    bodyLimit: bytes(env, 'BODY_LIMIT', 16 * 1024 * 1024, 1024, MAX_BODY_LIMIT, BODY_LIMIT_WHY),
    ...pixelLimits(env),
    decodeTimeoutMs: decodeTimeout(env),
    maxConcurrentRequests: int(env, 'MAX_CONCURRENT_REQUESTS', 32, 1, 100_000),
    requestTimeoutMs: int(env, 'REQUEST_TIMEOUT_MS', 30_000, 1, 3_600_000),
    apiToken,
    logLevel,
    drainTimeoutMs: int(env, 'DRAIN_TIMEOUT_MS', 25_000, 0, 3_600_000),
    preprocessConcurrency: int(env, 'PREPROCESS_CONCURRENCY', cores, 1, 256),
    preprocessDuringForward: intOrAuto(env, 'PREPROCESS_DURING_FORWARD', 0, 256),
    maxFiles: int(env, 'MAX_FILES', 16, 1, 1024),
    httpRequestTimeoutMs: int(env, 'HTTP_REQUEST_TIMEOUT_MS', 30_000, 100, 3_600_000),
    imageFormats: imageFormats(env),
  };
  return cfg;
}

/** The environment variable behind each field (configFrom writes overrides back through it). */
const ENV_NAMES: Record<Exclude<keyof Config, 'cpus'>, string> = {
  port: 'PORT',
  host: 'HOST',
  modelPath: 'MODEL_PATH',
  device: 'DEVICE',
  precision: 'PRECISION',
  instances: 'INSTANCES',
  threads: 'THREADS',
  maxBatch: 'MAX_BATCH',
  batchWindowMs: 'BATCH_WINDOW_MS',
  queueLimit: 'QUEUE_LIMIT',
  bodyLimit: 'BODY_LIMIT',
  maxPixels: 'MAX_PIXELS',
  maxRequestPixels: 'MAX_REQUEST_PIXELS',
  decodeTimeoutMs: 'DECODE_TIMEOUT_MS',
  maxConcurrentRequests: 'MAX_CONCURRENT_REQUESTS',
  requestTimeoutMs: 'REQUEST_TIMEOUT_MS',
  apiToken: 'API_TOKEN',
  logLevel: 'LOG_LEVEL',
  drainTimeoutMs: 'DRAIN_TIMEOUT_MS',
  preprocessConcurrency: 'PREPROCESS_CONCURRENCY',
  preprocessDuringForward: 'PREPROCESS_DURING_FORWARD',
  maxFiles: 'MAX_FILES',
  httpRequestTimeoutMs: 'HTTP_REQUEST_TIMEOUT_MS',
  imageFormats: 'IMAGE_FORMATS',
};

/**
 * Config for tests and tools: `env` plus `overrides`, validated the same way as the environment
 * (each override goes through its variable's parser, so a bad one throws ConfigError naming it).
 * `cpus` stands in for the host's CPU count.
 */
export function configFrom(overrides: Partial<Config> = {}, env: Env = {}): Config {
  const { cpus, ...rest } = overrides;
  const merged: Env = { ...env };
  for (const [key, value] of Object.entries(rest) as [keyof typeof ENV_NAMES, unknown][]) {
    merged[ENV_NAMES[key]] = value === undefined ? undefined : String(value);
  }
  return loadConfig(merged, { cpus: cpus ?? detectHost().cpus });
}
