/**
 * A tiny InferenceBackend for route/batching tests without libtorch: 3×4×4 "images", 10 classes.
 * Image bytes "IMG:<d>" decode to a tensor filled with d, whose logits peak at class d, so a
 * response proves which image it belongs to. "BAD..." -> 400 CORRUPT_IMAGE, anything else ->
 * 415 UNSUPPORTED_IMAGE (the real preprocess's codes). forward() waits `delayMs` and records
 * each batch size; with several instances, each forward runs on the lowest free instance.
 */
import { AppError } from '../../src/errors.js';
import type { ModelCard } from '../../src/card.js';
import type { InferenceBackend } from '../../src/server/backend.js';

export const FAKE_SHAPE = [3, 4, 4] as const;
export const FAKE_SIZE = 48;
export const FAKE_CLASSES = 10;

export interface FakeBackend extends InferenceBackend {
  batches: number[];
  delayMs: number;
  disposed: boolean;
  /** Throw on the next forward (a model failure, not bad input). */
  failNext: boolean;
  /** Every forward on this instance throws (a broken instance). */
  failInstance: number | undefined;
  /** Forwards running now, and the most that ever ran at once. */
  running: number;
  maxRunning: number;
  /** Instance of each batch, in order. */
  batchInstances: number[];
  /** Batch sizes of each warmup() call, in order; each call takes warmupMs. */
  warmups: number[][];
  warmupMs: number;
  /** releaseMemory() calls. */
  releases: number;
}

export function fakeImage(d: number): Buffer {
  return Buffer.from(`IMG:${d}`);
}

export function fakeBackend(delayMs = 5, instances = 1): FakeBackend {
  const busy = new Array<boolean>(instances).fill(false);
  const card: ModelCard = {
    name: 'densenet121',
    variant: 'densenet121_fake',
    weights: 'random-init (not trained)',
    sha256: '0'.repeat(64),
    input_shape: [...FAKE_SHAPE],
    resize: 4,
    crop: 4,
    mean: [0, 0, 0],
    std: [1, 1, 1],
    labels: Array.from({ length: FAKE_CLASSES }, (_, i) => `label${i}`),
    torch_version: 'fake',
    torchvision_version: 'fake',
    exported_at: '2026-01-01T00:00:00Z',
    format: 'torchscript',
  };
  const b: FakeBackend = {
    card,
    info: {
      device: 'cpu',
      torchVersion: 'fake',
      threads: 1,
      instances,
      precision: 'fp32',
      optimizations: [],
      loadSeconds: 0.01,
      inputShape: FAKE_SHAPE,
      numClasses: FAKE_CLASSES,
    },
    batches: [],
    delayMs,
    disposed: false,
    failNext: false,
    failInstance: undefined,
    running: 0,
    maxRunning: 0,
    batchInstances: [],
    warmups: [],
    warmupMs: 0,
    releases: 0,
    async preprocess(image) {
      const s = Buffer.from(image).toString('latin1');
      if (s.length === 0) throw new AppError('EMPTY_IMAGE', 'the image is empty');
      if (s.startsWith('BAD')) throw new AppError('CORRUPT_IMAGE', 'corrupt image');
      const m = /^IMG:(\d)$/.exec(s);
      if (!m) throw new AppError('UNSUPPORTED_IMAGE', 'not an image');
      return new Float32Array(FAKE_SIZE).fill(Number(m[1]));
    },
    async forward(input, batch) {
      const instance = busy.indexOf(false);
      if (instance < 0) throw new Error(`more forwards at once than the ${instances} instance(s)`);
      busy[instance] = true;
      b.running++;
      b.maxRunning = Math.max(b.maxRunning, b.running);
      b.batches.push(batch);
      b.batchInstances.push(instance);
      const t0 = performance.now();
      try {
        if (b.delayMs > 0) await new Promise((r) => setTimeout(r, b.delayMs));
        if (b.failNext || b.failInstance === instance) {
          b.failNext = false;
          throw new Error('boom');
        }
        const out = new Float32Array(batch * FAKE_CLASSES);
        for (let i = 0; i < batch; i++) {
          const v = input[i * FAKE_SIZE]!;
          for (let j = 0; j < FAKE_CLASSES; j++) out[i * FAKE_CLASSES + j] = -((j - v) ** 2);
        }
        return { logits: out, instance, seconds: (performance.now() - t0) / 1000 };
      } finally {
        busy[instance] = false;
        b.running--;
      }
    },
    async warmup(sizes) {
      b.warmups.push([...sizes]);
      if (b.warmupMs > 0) await new Promise((r) => setTimeout(r, b.warmupMs));
      return b.warmupMs / 1000;
    },
    async releaseMemory() {
      b.releases++;
    },
    async dispose() {
      b.disposed = true;
    },
  };
  return b;
}
