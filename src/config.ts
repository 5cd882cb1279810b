/**
 * Environment -> typed, validated configuration. The only place that reads process.env for the
 * server. A bad value throws ConfigError naming the variable; main.ts prints it and exits 2.
 */
import os from 'node:os';
import { DEVICE_SYNTAX, PRECISIONS, isDevice, type Device, type Precision } from './device.js';
import { AppError } from './errors.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/**
 * The malloc settings the server is meant to run with (stable forward timings, lower RSS:
 * docs/design.md#allocator-settings). glibc reads them only at process start, so not from here:
 * `npm start` and the Dockerfile put the same value in the environment; the benchmarks and
 * tests that start servers use this constant.
 */
export const GLIBC_TUNABLES = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483648:glibc.malloc.arena_max=1';

export interface Config {
  port: number;
  host: string;
  modelPath: string;
  device: Device;
  precision: Precision;
  /** libtorch intra-op threads (the addon's own inference thread uses this many OpenMP workers). */
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
  /** Per-request inference deadline (queue wait + compute); past it: 503 REQUEST_TIMEOUT. */
  requestTimeoutMs: number;
  /** When set, Bearer token required on /predict and /v2/.../infer. */
  apiToken: string | undefined;
  logLevel: LogLevel;
  /** SIGTERM/SIGINT: how long in-flight work may take before the process gives up (exit 1). */
  drainTimeoutMs: number;
  /** Images preprocessed at once: as many worker threads, each decode also on one libuv pool thread and one libvips thread. */
  preprocessConcurrency: number;
  /** Images decoded at once while a forward runs; 'auto': CPUs - THREADS on CPU, all on CUDA. */
  preprocessDuringForward: number | 'auto';
  /** Files accepted in one multipart request; more -> 413. */
  maxFiles: number;
  /** Whole-request receive deadline (slow-body / slowloris guard), ms. */
  httpRequestTimeoutMs: number;
}

export class ConfigError extends AppError {
  constructor(readonly variable: string, message: string) {
    super('CONFIG_INVALID', 500, `${variable}: ${message}`);
  }
}

type Env = Record<string, string | undefined>;

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
function bytes(env: Env, name: string, def: number, min: number, max: number): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  const m = /^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(v);
  if (!m) throw new ConfigError(name, `expected a size in bytes (e.g. 16777216 or 16MiB), got ${JSON.stringify(v)}`);
  const unit = (m[2] ?? 'b').toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `expected a size in ${min}..${max} bytes, got ${v}`);
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
 * - THREADS = all CPUs: one OpenMP team over every core is fastest on a machine of its own.
 * - QUEUE_LIMIT 64 (or 4 x MAX_BATCH): ~2 s of work at b8 on CPU; deeper queues only time out.
 */
export function loadConfig(env: Env = process.env): Config {
  const cores = os.availableParallelism();
  const maxBatch = int(env, 'MAX_BATCH', 8, 1, 256);
  const logLevel = oneOf<LogLevel>(env, 'LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
  const apiToken = raw(env, 'API_TOKEN');
  if (apiToken !== undefined && apiToken.length < 8) {
    throw new ConfigError('API_TOKEN', 'must be at least 8 characters when set');
  }
  const host = raw(env, 'HOST') ?? '0.0.0.0';
  if (/\s/.test(host)) throw new ConfigError('HOST', `invalid host ${JSON.stringify(host)}`);
  const cfg: Config = {
    port: int(env, 'PORT', 8080, 0, 65535),
    host,
    modelPath: raw(env, 'MODEL_PATH') ?? 'models/densenet121.pt',
    device: device(env),
    precision: oneOf<Precision>(env, 'PRECISION', 'fp32', PRECISIONS),
    threads: int(env, 'THREADS', cores, 1, 1024),
    maxBatch,
    batchWindowMs: int(env, 'BATCH_WINDOW_MS', 50, 0, 10_000),
    queueLimit: int(env, 'QUEUE_LIMIT', Math.max(64, maxBatch * 4), 1, 1_000_000),
    bodyLimit: bytes(env, 'BODY_LIMIT', 16 * 1024 * 1024, 1024, 1024 ** 3),
    maxPixels: int(env, 'MAX_PIXELS', 40_000_000, 1, 1_000_000_000),
    requestTimeoutMs: int(env, 'REQUEST_TIMEOUT_MS', 30_000, 1, 3_600_000),
    apiToken,
    logLevel,
    drainTimeoutMs: int(env, 'DRAIN_TIMEOUT_MS', 25_000, 0, 3_600_000),
    preprocessConcurrency: int(env, 'PREPROCESS_CONCURRENCY', cores, 1, 256),
    preprocessDuringForward: intOrAuto(env, 'PREPROCESS_DURING_FORWARD', 0, 256),
    maxFiles: int(env, 'MAX_FILES', 16, 1, 1024),
    httpRequestTimeoutMs: int(env, 'HTTP_REQUEST_TIMEOUT_MS', 30_000, 100, 3_600_000),
  };
  return cfg;
}

/** The environment variable behind each field (configFrom writes overrides back through it). */
const ENV_NAMES: Record<keyof Config, string> = {
  port: 'PORT',
  host: 'HOST',
  modelPath: 'MODEL_PATH',
  device: 'DEVICE',
  precision: 'PRECISION',
  threads: 'THREADS',
  maxBatch: 'MAX_BATCH',
  batchWindowMs: 'BATCH_WINDOW_MS',
  queueLimit: 'QUEUE_LIMIT',
  bodyLimit: 'BODY_LIMIT',
  maxPixels: 'MAX_PIXELS',
  requestTimeoutMs: 'REQUEST_TIMEOUT_MS',
  apiToken: 'API_TOKEN',
  logLevel: 'LOG_LEVEL',
  drainTimeoutMs: 'DRAIN_TIMEOUT_MS',
  preprocessConcurrency: 'PREPROCESS_CONCURRENCY',
  preprocessDuringForward: 'PREPROCESS_DURING_FORWARD',
  maxFiles: 'MAX_FILES',
  httpRequestTimeoutMs: 'HTTP_REQUEST_TIMEOUT_MS',
};

/**
 * Config for tests and tools: `env` plus `overrides`, validated the same way as the environment
 * (each override goes through its variable's parser, so a bad one throws ConfigError naming it).
 */
export function configFrom(overrides: Partial<Config> = {}, env: Env = {}): Config {
  const merged: Env = { ...env };
  for (const [key, value] of Object.entries(overrides) as [keyof Config, Config[keyof Config]][]) {
    merged[ENV_NAMES[key]] = value === undefined ? undefined : String(value);
  }
  return loadConfig(merged);
}
