/**
 * The request-level inference path shared by /predict and /v2: admission (bounded work),
 * preprocessing under a small semaphore (so decoding can't starve the inference thread or the
 * event loop), the batcher, and softmax/top-k.
 */
import { AppError } from '../errors.js';
import { Batcher } from '../batcher.js';
import type { Config } from '../config.js';
import type { InferenceBackend } from './backend.js';
import type { Metrics } from './metrics.js';

export interface Prediction {
  class_id: number;
  class_name: string;
  confidence: number;
}

/** Counting semaphore; waiters are served in arrival order. */
export class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiters.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next) next();
      else this.active--;
    }
  }
}

export function softmaxTopk(logits: Float32Array, k: number, labels: readonly string[]): Prediction[] {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp(logits[i]! - max);
  const idx = Array.from({ length: logits.length }, (_, i) => i);
  // Ties keep the lower class id first (stable, like torch.topk on CPU in practice).
  idx.sort((a, b) => probs[b]! - probs[a]! || a - b);
  return idx.slice(0, k).map((i) => ({
    class_id: i,
    class_name: labels[i] ?? `class_${i}`,
    confidence: Math.round((probs[i]! / sum) * 1e4) / 1e4,
  }));
}

export type ImageOutcome = { ok: true; tensor: Float32Array } | { ok: false; error: AppError };

export class InferenceService {
  readonly batcher: Batcher;
  private readonly preprocessSlots: Semaphore;
  private admitted = 0;
  /** Images being decoded right now: the batcher's "more are on the way" signal. */
  private decoding = 0;

  constructor(
    readonly backend: InferenceBackend,
    private readonly config: Config,
    private readonly metrics: Metrics,
    batchSizes?: readonly number[],
  ) {
    const [c, h, w] = backend.info.inputShape;
    this.preprocessSlots = new Semaphore(config.preprocessConcurrency);
    this.batcher = new Batcher({
      forward: (input, n) => backend.forward(input, n),
      maxBatch: config.maxBatch,
      windowMs: config.batchWindowMs,
      // admit() is the real limit (it also counts images still being decoded and the running
      // batch); the batcher's own cap is a safety net that admission keeps it from reaching.
      queueLimit: config.queueLimit + config.maxBatch,
      imageSize: c * h * w,
      numClasses: backend.info.numClasses,
      timeoutMs: config.requestTimeoutMs,
      ...(batchSizes ? { batchSizes } : {}),
      observer: metrics.batchObserver,
      incoming: () => this.decoding,
    });
  }

  /**
   * Reserve room for `images` images of work (preprocessing + queue); the returned release must
   * be called when the request is answered. Bounds memory even before the batcher's own queue.
   */
  admit(images: number): () => void {
    const cap = this.config.queueLimit + this.config.maxBatch;
    if (this.admitted + images > cap) {
      throw new AppError('QUEUE_FULL', 503, `server busy: ${this.admitted} images in progress (QUEUE_LIMIT ${this.config.queueLimit}); retry later`, {
        headers: { 'retry-after': String(this.batcher.retryAfterSeconds()) },
      });
    }
    this.admitted += images;
    this.metrics.inFlightRequests.inc();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.admitted -= images;
      this.metrics.inFlightRequests.dec();
    };
  }

  async preprocessOne(image: Uint8Array): Promise<Float32Array> {
    this.decoding++;
    try {
      return await this.preprocessSlots.run(async () => {
        const end = this.metrics.preprocess.startTimer();
        try {
          return await this.backend.preprocess(image);
        } finally {
          end();
        }
      });
    } finally {
      this.decoding--;
    }
  }

  /** Preprocess every image; failures are per image (the caller decides whether one fails all). */
  async preprocessAll(images: readonly Uint8Array[]): Promise<ImageOutcome[]> {
    return Promise.all(
      images.map((img) =>
        this.preprocessOne(img).then(
          (tensor): ImageOutcome => ({ ok: true, tensor }),
          (err: unknown): ImageOutcome => {
            if (err instanceof AppError && err.statusCode < 500) return { ok: false, error: err };
            throw err;
          },
        ),
      ),
    );
  }

  /** Logits for each tensor, in order; deadline = what is left of the request's timeout. */
  infer(tensors: readonly Float32Array[], startedAt: number): Promise<Float32Array[]> {
    const left = this.config.requestTimeoutMs - (performance.now() - startedAt);
    if (left <= 0) {
      return Promise.reject(
        new AppError('REQUEST_TIMEOUT', 503, `request did not reach inference within ${this.config.requestTimeoutMs} ms; retry later`, {
          headers: { 'retry-after': String(this.batcher.retryAfterSeconds()) },
        }),
      );
    }
    return this.batcher.submit(tensors, { timeoutMs: Math.ceil(left) });
  }
}
