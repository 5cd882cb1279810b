/**
 * The request-level inference path shared by /predict and /v2: admission (bounded work),
 * preprocessing under a semaphore whose size follows the model (PREPROCESS_CONCURRENCY while it
 * is idle, decodeSlotsDuringForward() while a forward runs, so decoding never stalls a CPU
 * forward), the batcher, and softmax/top-k.
 */
import { AppError } from '../errors.js';
import { Batcher, clientGone } from '../batcher.js';
import type { Config } from '../config.js';
import type { InferenceBackend } from './backend.js';
import type { Metrics } from './metrics.js';

export interface Prediction {
  class_id: number;
  class_name: string;
  confidence: number;
}

/**
 * Counting semaphore with a limit that can change (work already running is never interrupted;
 * a lower limit only holds back new work). Waiters with the same `owner` (one request's images)
 * queue behind each other, and owners take turns: a request with 16 images does not make a
 * one-image request behind it wait for all 16. Without an owner, arrival order.
 */
export class Semaphore {
  private active = 0;
  private queued = 0;
  /** Owner -> its waiters, owners in turn order (a Map keeps insertion order). */
  private readonly waiters = new Map<unknown, (() => void)[]>();
  constructor(private limit: number) {}
  get running(): number {
    return this.active;
  }
  get waiting(): number {
    return this.queued;
  }
  setLimit(limit: number): void {
    this.limit = limit;
    this.pump();
  }
  private pump(): void {
    while (this.active < this.limit && this.queued > 0) {
      const [owner, list] = this.waiters.entries().next().value as [unknown, (() => void)[]];
      const wake = list.shift()!;
      this.waiters.delete(owner);
      if (list.length > 0) this.waiters.set(owner, list); // to the back of the turn order
      this.queued--;
      this.active++;
      wake();
    }
  }
  async run<T>(fn: () => Promise<T>, owner: unknown = Symbol()): Promise<T> {
    if (this.active < this.limit && this.queued === 0) this.active++;
    else {
      await new Promise<void>((r) => {
        const list = this.waiters.get(owner);
        if (list) list.push(r);
        else this.waiters.set(owner, [r]);
        this.queued++;
      });
    }
    try {
      return await fn();
    } finally {
      this.active--;
      this.pump();
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

/**
 * How many images may be decoded while `forwards` CPU forwards run. A CPU forward keeps THREADS
 * OpenMP workers busy and they meet at a barrier after every layer, so a decode that takes one of
 * their cores stalls all of them (docs/design.md, "No decode during a CPU forward"). So only the
 * cores no running forward uses may decode: CPUs - forwards x THREADS. With every instance busy
 * on a box they fill, decodes wait for the next free instance. A CUDA forward leaves the CPU free.
 * PREPROCESS_DURING_FORWARD=N overrides the count whenever any forward runs.
 */
export function decodeSlots(
  config: Pick<Config, 'preprocessConcurrency' | 'preprocessDuringForward'>,
  model: { device: string; threads: number },
  cpus: number,
  forwards: number,
): number {
  if (forwards === 0 || model.device.startsWith('cuda')) return config.preprocessConcurrency;
  if (config.preprocessDuringForward !== 'auto') return Math.min(config.preprocessDuringForward, config.preprocessConcurrency);
  return Math.max(0, Math.min(config.preprocessConcurrency, cpus - forwards * model.threads));
}

/** What a request's preprocessing is bound to: its start (for the deadline) and its client. */
export interface RequestWork {
  startedAt?: number;
  signal?: AbortSignal | null;
}

export type ImageOutcome = { ok: true; tensor: Float32Array } | { ok: false; error: AppError };

/** What each instance has done (GET / and /metrics). */
export interface InstanceStats {
  batches: number;
  images: number;
  busySeconds: number;
}

export class InferenceService {
  readonly batcher: Batcher;
  private readonly preprocessSlots: Semaphore;
  /** Decodes allowed while every instance runs a forward (see decodeSlots). */
  readonly decodeSlotsDuringForward: number;
  readonly instances: InstanceStats[];
  private admitted = 0;

  constructor(
    readonly backend: InferenceBackend,
    private readonly config: Config,
    private readonly metrics: Metrics,
    batchSizes?: readonly number[],
  ) {
    const [c, h, w] = backend.info.inputShape;
    const { instances } = backend.info;
    const cpus = config.cpus;
    this.decodeSlotsDuringForward = decodeSlots(config, backend.info, cpus, instances);
    this.preprocessSlots = new Semaphore(config.preprocessConcurrency);
    this.instances = Array.from({ length: instances }, () => ({ batches: 0, images: 0, busySeconds: 0 }));
    const slots = this.preprocessSlots;
    this.batcher = new Batcher({
      forward: async (input, n) => {
        const r = await backend.forward(input, n);
        const stats = this.instances[r.instance];
        if (stats) {
          stats.batches++;
          stats.images += n;
          stats.busySeconds += r.seconds;
        }
        metrics.instanceBatches.inc({ instance: String(r.instance) });
        metrics.instanceBusy.inc({ instance: String(r.instance) }, r.seconds);
        return r.logits;
      },
      concurrency: instances,
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
        inFlight: (images, forwards) => {
          metrics.batchObserver.inFlight?.(images, forwards);
          slots.setLimit(decodeSlots(config, backend.info, cpus, forwards));
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
    this.checkRoom(images);
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

  /** Throws QUEUE_FULL unless `images` more images could be admitted now (reserves nothing). */
  checkRoom(images: number): void {
    const cap = this.config.queueLimit + this.config.maxBatch;
    if (this.admitted + images > cap) {
      throw new AppError('QUEUE_FULL', `server busy: ${this.admitted} images in progress (QUEUE_LIMIT ${this.config.queueLimit}); retry later`, {
        retryAfter: this.batcher.retryAfterSeconds(),
      });
    }
  }

  private deadlinePassed(): AppError {
    return new AppError('REQUEST_TIMEOUT', `request did not reach inference within ${this.config.requestTimeoutMs} ms; retry later`, {
      retryAfter: this.batcher.retryAfterSeconds(),
    });
  }

  /**
   * Decode one image once a preprocessing slot is free. A request whose client has gone or whose
   * deadline has passed by then is not decoded at all. Pass the same `work` for all images of a
   * request: requests take turns at the slots.
   */
  async preprocessOne(image: Uint8Array, work: RequestWork = {}): Promise<Float32Array> {
    const slots = this.preprocessSlots;
    const done = slots.run(async () => {
      this.metrics.preprocessWaiting.set(slots.waiting);
      if (work.signal?.aborted) throw clientGone();
      if (work.startedAt !== undefined && performance.now() - work.startedAt >= this.config.requestTimeoutMs) throw this.deadlinePassed();
      const end = this.metrics.preprocess.startTimer();
      try {
        return await this.backend.preprocess(image);
      } finally {
        end();
      }
    }, work); // one request's images take turns with other requests' (Semaphore owner)
    this.metrics.preprocessWaiting.set(slots.waiting);
    return done;
  }

  /**
   * Preprocess every image; bad images fail alone (the caller decides whether one fails all).
   * The request's deadline, or its client going away, fails the whole request, at once.
   */
  async preprocessAll(images: readonly Uint8Array[], work: RequestWork = {}): Promise<ImageOutcome[]> {
    const all = Promise.all(
      images.map((img) =>
        this.preprocessOne(img, work).then(
          (tensor): ImageOutcome => ({ ok: true, tensor }),
          (err: unknown): ImageOutcome => {
            if (err instanceof AppError && err.statusCode < 500 && err.code !== 'CLIENT_GONE') return { ok: false, error: err };
            throw err;
          },
        ),
      ),
    );
    const signal = work.signal;
    if (!signal) return all;
    all.catch(() => {}); // settled later by decodes already running; the caller has moved on
    let onAbort = (): void => {};
    const gone = new Promise<never>((_, reject) => {
      onAbort = () => reject(clientGone());
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([all, gone]);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Logits for each tensor, in order; deadline = what is left of the request's timeout. When
   * `signal` aborts (the client went away), queued work is dropped.
   */
  infer(tensors: readonly Float32Array[], startedAt: number, signal?: AbortSignal): Promise<Float32Array[]> {
    const left = this.config.requestTimeoutMs - (performance.now() - startedAt);
    if (left <= 0) return Promise.reject(this.deadlinePassed());
    return this.batcher.submit(tensors, { timeoutMs: Math.ceil(left), ...(signal ? { signal } : {}) });
  }
}
