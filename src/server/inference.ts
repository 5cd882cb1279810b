/**
 * The request-level inference path shared by /predict and /v2: admission (bounded work),
 * preprocessing under a semaphore whose size follows the model (PREPROCESS_CONCURRENCY while it
 * is idle, decodeSlotsDuringForward() while a forward runs, so decoding never stalls a CPU
 * forward) and the batcher.
 */
import { availableParallelism } from 'node:os';
import { AppError } from '../errors.js';
import { Batcher } from '../batcher.js';
import type { Config } from '../config.js';
import type { InferenceBackend } from './backend.js';
import type { Metrics } from './metrics.js';

/**
 * Counting semaphore with a limit that can change (work already running is never interrupted;
 * a lower limit only holds back new work). Waiters are served in arrival order.
 */
export class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private limit: number) {}
  get running(): number {
    return this.active;
  }
  get waiting(): number {
    return this.waiters.length;
  }
  setLimit(limit: number): void {
    this.limit = limit;
    this.pump();
  }
  private pump(): void {
    while (this.active < this.limit && this.waiters.length > 0) {
      this.active++;
      this.waiters.shift()!();
    }
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active < this.limit && this.waiters.length === 0) this.active++;
    else await new Promise<void>((r) => this.waiters.push(r));
    try {
      return await fn();
    } finally {
      this.active--;
      this.pump();
    }
  }
}

/**
 * How many images may be decoded while a CPU forward runs. A CPU forward keeps THREADS OpenMP
 * workers busy and they meet at a barrier after every layer, so a decode that takes one of their
 * cores stalls all of them: on a box where THREADS covers every core, decoding during a forward
 * costs the forward more than the decode is worth (measured: c=16 on 2 vCPUs, see README).
 * Decodes then run between forwards, all at once, while the next batch forms. Spare cores
 * (CPUs - THREADS) may decode during a forward; a CUDA forward leaves the CPU free.
 */
export function decodeSlotsDuringForward(
  config: Pick<Config, 'preprocessConcurrency' | 'preprocessDuringForward'>,
  model: { device: string; threads: number },
  cpus: number,
): number {
  if (config.preprocessDuringForward !== 'auto') return Math.min(config.preprocessDuringForward, config.preprocessConcurrency);
  if (model.device.startsWith('cuda')) return config.preprocessConcurrency;
  return Math.max(0, Math.min(config.preprocessConcurrency, cpus - model.threads));
}

export type ImageOutcome = { ok: true; tensor: Float32Array } | { ok: false; error: AppError };

export class InferenceService {
  readonly batcher: Batcher;
  private readonly preprocessSlots: Semaphore;
  /** Decodes allowed while a forward runs (see decodeSlotsDuringForward). */
  readonly decodeSlotsDuringForward: number;
  private admitted = 0;

  constructor(
    readonly backend: InferenceBackend,
    private readonly config: Config,
    private readonly metrics: Metrics,
    batchSizes?: readonly number[],
  ) {
    const [c, h, w] = backend.info.inputShape;
    const idleSlots = config.preprocessConcurrency;
    this.decodeSlotsDuringForward = decodeSlotsDuringForward(config, backend.info, availableParallelism());
    this.preprocessSlots = new Semaphore(idleSlots);
    const slots = this.preprocessSlots;
    const during = this.decodeSlotsDuringForward;
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
      observer: {
        ...metrics.batchObserver,
        inFlight: (n) => {
          metrics.batchObserver.inFlight?.(n);
          slots.setLimit(n > 0 ? during : idleSlots);
        },
      },
      // Images being decoded or waiting for a slot: the batcher's "more are on the way" signal.
      incoming: () => slots.running + slots.waiting,
      windowAfterForward: this.decodeSlotsDuringForward < config.preprocessConcurrency,
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
    const slots = this.preprocessSlots;
    const done = slots.run(async () => {
      this.metrics.preprocessWaiting.set(slots.waiting);
      const end = this.metrics.preprocess.startTimer();
      try {
        return await this.backend.preprocess(image);
      } finally {
        end();
      }
    });
    this.metrics.preprocessWaiting.set(slots.waiting);
    return done;
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
