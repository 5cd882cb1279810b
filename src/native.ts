/**
 * The only place that loads the native addon (build/Release/densenet.node). Everything else
 * imports the typed interface from here. If loading fails, the error says why and what to do.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Options the native side understands (src/model.ts validates them first). */
export interface NativeLoadOptions {
  device: string;
  threads: number;
  /** Inference threads sharing the loaded model (each with `threads` OpenMP workers). */
  instances: number;
  precision: string;
  freeze: boolean;
  channelsLast: boolean;
  optimizeForInference: boolean;
  profilingExecutor: boolean;
  inputShape: [number, number, number];
}

export interface NativeModelInfo {
  path: string;
  device: string;
  cudaAvailable: boolean;
  torchVersion: string;
  threads: number;
  instances: number;
  precision: string;
  optimizations: string[];
  inputShape: number[];
  numClasses: number;
  loadSeconds: number;
}

export interface NativeForwardResult {
  data: Float32Array;
  shape: number[];
  /** Which instance ran it, and its compute time on that thread. */
  instance: number;
  seconds: number;
}

export interface NativeWarmupResult {
  seconds: number;
  instance: number;
}

/** Errors from the addon carry one of these codes. */
export type NativeErrorCode = 'MODEL_LOAD_FAILED' | 'INVALID_MODEL_OPTION' | 'FORWARD_FAILED' | 'MODEL_DISPOSED' | 'INTERNAL';

/** One model = `instances` native inference threads sharing one loaded engine (native/worker.h). */
export interface NativeModel {
  load(path: string, options: NativeLoadOptions): Promise<NativeModelInfo>;
  /** On the given instance, or on whichever is free. */
  warmup(batchSizes: number[], instance?: number): Promise<NativeWarmupResult>;
  forward(input: Float32Array, shape: number[]): Promise<NativeForwardResult>;
  dispose(): void;
  readonly disposed: boolean;
  /** Calls not yet answered (queued or running). */
  readonly pending: number;
}

export interface NativeAddon {
  Model: new () => NativeModel;
}

/** Repository root: src/native.ts and dist/src/native.js both sit two levels below it (or one). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..');
}

export const addonPath = process.env.DENSENET_ADDON ?? join(repoRoot(), 'build', 'Release', 'densenet.node');

export class NativeLoadError extends Error {
  readonly code = 'NATIVE_ADDON_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeLoadError';
  }
}

/** Turns dlopen's message into advice. */
export function explainLoadFailure(path: string, err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (!existsSync(path)) {
    return `The native addon ${path} does not exist. Build it with \`npm run build:native\` (or run \`npm run setup\` on a fresh machine).`;
  }
  if (/lib(torch|c10)[\w.]*\.so|cannot open shared object file/.test(msg)) {
    return (
      `The native addon ${path} could not load libtorch (${msg}). Install it with \`npm run setup\` ` +
      `(Debian: libtorch-dev), or point LD_LIBRARY_PATH at the libtorch it was built against.`
    );
  }
  if (/NODE_MODULE_VERSION|was compiled against a different Node\.js version|undefined symbol|invalid ELF header|wrong ELF class/.test(msg)) {
    return `The native addon ${path} does not match this Node.js (${process.version}, ABI ${process.versions.modules}) or libtorch: ${msg}. Rebuild it with \`npm run build:native\`.`;
  }
  return `The native addon ${path} failed to load: ${msg}. Try \`npm run build:native\`; on a fresh machine run \`npm run setup\`.`;
}

let cached: NativeAddon | undefined;

/** Loads the addon once. Throws NativeLoadError with advice. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  try {
    cached = require(addonPath) as NativeAddon;
  } catch (err) {
    throw new NativeLoadError(explainLoadFailure(addonPath, err), { cause: err });
  }
  return cached;
}
