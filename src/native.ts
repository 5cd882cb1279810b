/**
 * The only place that loads native addons: build/Release/densenet.node (libtorch, the model) and
 * build/Release/densenet_image.node (image preprocessing on libuv's pool, no libtorch). Everything else imports the typed interfaces from here. If
 * loading fails, the error says why and what to do.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';

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
  /** DenseNet graphs run on the load-time executor (native/dense_block.h); false: the plain graph. */
  denseExecutor: boolean;
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
  /** On that instance's thread: frees its cached forward buffers, then malloc_trim. */
  releaseMemory(instance: number): Promise<void>;
  /** Stops the threads; resolves once none of them runs torch code any more. */
  dispose(): Promise<void>;
  readonly disposed: boolean;
  /** Calls not yet answered (queued or running). */
  readonly pending: number;
}

export interface NativeAddon {
  Model: new () => NativeModel;
  /** Stops and joins every model's inference threads (registered on process 'exit'). */
  stopAll(): void;
}

/** How resizeCropNormalize reads its pixels: RGB, or CMYK ink converted with PIL's formula. */
export type PixelLayout = 'rgb' | 'cmyk';

/** The image addon (native/image): synchronous, on the thread that calls it. */
export interface ImageAddon {
  /**
   * Pillow's bilinear resize of a width x height image to resizedWidth x resizedHeight, the
   * crop x crop window at (left, top), then ToTensor + Normalize: CHW float32, computed on
   * libuv's thread pool. Bad arguments throw at once; the caller checks the geometry
   * (src/preprocess.ts). `pixels` must not change until the promise settles.
   */
  resizeCropNormalize(
    pixels: Uint8Array, layout: PixelLayout, width: number, height: number, resizedWidth: number, resizedHeight: number,
    left: number, top: number, crop: number, mean: readonly number[], std: readonly number[],
  ): Promise<Float32Array>;
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
export const imageAddonPath = process.env.DENSENET_IMAGE_ADDON ?? join(repoRoot(), 'build', 'Release', 'densenet_image.node');

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

const loaded = new Map<string, unknown>();

function load<T>(path: string): T {
  if (loaded.has(path)) return loaded.get(path) as T;
  const require = createRequire(import.meta.url);
  let addon: T;
  try {
    addon = require(path) as T;
  } catch (err) {
    throw new NativeLoadError(explainLoadFailure(path, err), { cause: err });
  }
  loaded.set(path, addon);
  return addon;
}

/** Loads the libtorch addon once. Throws NativeLoadError with advice. */
let exitHook = false;

export function loadNative(): NativeAddon {
  const addon = load<NativeAddon>(addonPath);
  if (!exitHook && isMainThread) {
    exitHook = true;
    // Runs on every process.exit() path before C/C++ exit handlers (native/addon.cc, stopAll).
    process.on('exit', () => addon.stopAll());
  }
  return addon;
}

/** Loads the image addon once per thread. Throws NativeLoadError with advice. */
export function loadImageAddon(): ImageAddon {
  return load<ImageAddon>(imageAddonPath);
}
