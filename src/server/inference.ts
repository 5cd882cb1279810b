/**
 * The request-level inference path shared by /predict and /v2: admission (bounded work),
 * preprocessing under a semaphore whose size follows the model (PREPROCESS_CONCURRENCY while it
 * is idle, decodeSlotsDuringForward() while a forward runs, so decoding never stalls a CPU
 * forward) and the batcher.
 */
import { AppError } from '../errors.js';
import { Batcher, clientGone } from '../batcher.js';
import type { Config } from '../config.js';
import type { InferenceBackend } from './backend.js';
import type { Metrics } from './metrics.js';

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

/** How long the model must be idle before its freed memory is returned (see idleTimer). */
export const IDLE_RELEASE_MS = 1000;

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
  private trimTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly backend: InferenceBackend,
    private readonly config: Config,
    private readonly metrics: Metrics,
    /** Batch sizes that may run from the start (default: all up to MAX_BATCH, i.e. already warm). */
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
        metrics.instanceBatches.inc({ model_instance: String(r.instance) });
        metrics.instanceBusy.inc({ model_instance: String(r.instance) }, r.seconds);
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
          this.idleTimer(forwards === 0);
        },
      },
      // Images being decoded or waiting for a slot: the batcher's "more are on the way" signal.
      incoming: () => slots.running + slots.waiting,
      windowAfterForward: this.decodeSlotsDuringForward < config.preprocessConcurrency,
    });
  }

  /**
   * Once no forward has run for IDLE_RELEASE_MS, the memory the forwards freed goes back to the
   * system (the allocator keeps it for reuse otherwise: docs/design.md, "Memory"). A forward that
   * starts in the meantime cancels it, so a busy server keeps its memory warm.
   */
  private idleTimer(idle: boolean): void {
    clearTimeout(this.trimTimer);
    this.trimTimer = undefined;
    if (!idle) return;
    this.trimTimer = setTimeout(() => {
      this.trimTimer = undefined;
      this.backend.releaseMemory().catch(() => undefined); // only fails once the model is disposed
    }, IDLE_RELEASE_MS);
    this.trimTimer.unref();
  }

  /**
   * Warm-up: every instance runs a batch of 1 (and the preprocessing workers decode once); then
   * this resolves and the server may report ready. The other batch sizes warm up in `background`,
   * largest first, each one served from the moment every instance has run it, so no request ever
   * pays for a cold batch size and readiness does not wait for all of them.
   */
  async warmup(): Promise<{ seconds: number; background: Promise<void> }> {
    const t0 = performance.now();
    await this.backend.warmup([1]);
    this.batcher.serve(1);
    const seconds = (performance.now() - t0) / 1000;
    const max = this.config.maxBatch;
    const rest = [max, ...Array.from({ length: max - 1 }, (_, i) => i + 1)].filter((s) => !this.batcher.batchSizes.includes(s));
    const background = (async () => {
      for (const size of rest) {
        await this.backend.warmup([size]);
        this.batcher.serve(size);
      }
      this.idleTimer(this.batcher.forwardsRunning === 0);
    })();
    return { seconds, background };
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
