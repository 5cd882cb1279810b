/**
 * Environment -> typed, validated configuration. The only place that reads process.env for the
 * server. A bad value throws ConfigError naming the variable; main.ts prints it and exits 1.
 */
import { constants as bufferConstants } from 'node:buffer';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { AppError } from './errors.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type DeviceSetting = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;
export type PrecisionSetting = 'fp32' | 'bf16';

/**
 * The malloc settings the server is meant to run with (stable forward timings, lower RSS:
 * shared/README.md). glibc reads them only at process start, so they cannot be set from here:
 * `npm start` and the Dockerfile put the same value in the environment; the benchmarks and
 * tests that start servers use this constant.
 */
export const GLIBC_TUNABLES = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483648:glibc.malloc.arena_max=1';

export interface Config {
  port: number;
  host: string;
  modelPath: string;
  device: DeviceSetting;
  precision: PrecisionSetting;
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
    super('CONFIG_INVALID', `${variable}: ${message}`);
  }
}

type Env = Record<string, string | undefined>;

/** What the host offers; detected by default, given by tests. */
export interface Host {
  cpus: number;
}

/** CPUs of the machine, capped by the cgroup (v2 or v1) CPU quota when one is set. */
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
  return { cpus: Math.max(1, Math.min(machine, Math.ceil(quota))) };
}

/**
 * INSTANCES and THREADS ('auto' or numbers) -> numbers with instances x threads <= cpus.
 * auto on CPU: one single-threaded instance per CPU (docs/design.md, "Model instances");
 * on CUDA: one instance (the GPU runs one forward at a time) whose CPU side may use every CPU.
 */
function parallelism(env: Env, cpus: number, dev: DeviceSetting): { instances: number; threads: number } {
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

function device(env: Env): DeviceSetting {
  const v = raw(env, 'DEVICE');
  if (v === undefined) return 'auto';
  const lower = v.toLowerCase();
  if (lower === 'auto' || lower === 'cpu' || lower === 'cuda' || /^cuda:\d{1,2}$/.test(lower)) return lower as DeviceSetting;
  throw new ConfigError('DEVICE', `expected auto, cpu, cuda or cuda:<index>, got ${JSON.stringify(v)}`);
}

/**
 * Defaults, measured on the 2-vCPU dev VM (numbers in the HTTP report / README):
 * - MAX_BATCH 8: b8 costs ~0.7-0.8x per image of b1 on CPU, so batching buys ~25-30 % throughput
 *   under load; beyond 8 the per-image gain is flat while latency of a full batch keeps growing.
 * - BATCH_WINDOW_MS 50: the window only applies while the model is idle AND other images are
 *   still being decoded (Batcher `incoming`); a lone request runs at once (c=1 pays nothing) and a
 *   full batch runs at once. On CPU no decode starts during a forward (PREPROCESS_DURING_FORWARD
 *   auto), so after each forward the waiting images are decoded two at a time and the batch must
 *   wait for them: 8 photos take ~30-60 ms on 2 vCPUs. With 5 ms the batches at c=16 averaged
 *   2 images; with 40 ms 5.5-6.4; with 50-60 ms 7-7.9 (and the most req/s).
 * - THREADS = all CPUs. Measured on the quiet 2-vCPU VM (npm run bench, 6 s runs, one after the
 *   other): THREADS=2 -> c=1 p50 46-58 ms, c=16 25.7-27.7 req/s (batching on);
 *   THREADS=1 -> c=1 p50 67-73 ms, c=16 15.8-16.3 req/s. An earlier run that favoured 1 thread
 *   was taken while other heavy processes shared the cores: libtorch's OpenMP team waits for all
 *   its threads at every layer, so on a box shared with OTHER busy processes THREADS=1 degrades
 *   far less (the bench warns when the machine is busy). In Kubernetes the deploy script derives
 *   THREADS from the CPU limit.
 * - QUEUE_LIMIT 64 images: 8 full batches ≈ 2 s of work at b8 on this CPU; deeper queues only
 *   turn into timeouts.
 */
export function loadConfig(env: Env = process.env, machine: Host = detectHost()): Config {
  const cores = machine.cpus;
  const maxBatch = int(env, 'MAX_BATCH', 8, 1, 256);
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
    precision: oneOf<PrecisionSetting>(env, 'PRECISION', 'fp32', ['fp32', 'bf16']),
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
  };
  return cfg;
}

/** Config for tests and tools: defaults + overrides, validated the same way. */
export function configFrom(overrides: Partial<Config> = {}, env: Env = {}): Config {
  return { ...loadConfig(env, { cpus: overrides.cpus ?? detectHost().cpus }), ...overrides };
}
